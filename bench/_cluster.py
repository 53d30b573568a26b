"""What every scenario shares: keys, the citizen, provider hosts, gateway processes.

The citizen is a member of the demo population with exactly one number, at
the carrier ``bluefinch``. Providers that "hold" the number have one account
bound to it (so each answer carries a binding the gateway attributes and
seals a handle for); the others answer with an empty list.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._procs import Process, Processes, wait_gateway_port, wait_json_file
from onecert.adapters.demo import DEFAULT_SEED, GATEWAY_ID, IDENTITY_ISSUER, population
from onecert.gateway._identity import AssertionIssuer
from onecert.sdk._idn import compute_idn
from onecert.sdk._keys import SigningKey
from onecert.sdk._warrant import WarrantIssuer
from onecert.sdk.devkeys import DevKeys, init_dev_keys, read_hex_key

CARRIER_ID = "bluefinch"
STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ProviderSpec:
    """A provider a host serves: ``hold`` binds an account to the citizen's number."""

    id: str
    hold: bool = True
    delay_s: float = 0.0
    users: int = 20


class Env:
    """Keys and the citizen of one benchmark run (under ``directory``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.keys: DevKeys = init_dev_keys(directory / "keys", force=True)
        citizen = next(s for s in population(DEFAULT_SEED) if s.carrier_id == CARRIER_ID)
        self.msisdn = citizen.msisdn
        self.held_from = citizen.held_from
        self.idn = compute_idn(read_hex_key(self.keys.idn_key), citizen.document_number)
        self.sub = "bench-citizen"
        self._assertions = AssertionIssuer(
            key=SigningKey.load(self.keys.identity_key), issuer=IDENTITY_ISSUER
        )
        # The gateway's own warrant key: the floor signs exactly what the gateway signs.
        self.warrants = WarrantIssuer(key=SigningKey.load(self.keys.warrant_key), issuer=GATEWAY_ID)

    def assertion(self) -> str:
        """A fresh identity assertion for the citizen (each is good for one lookup)."""
        return self._assertions.mint(sub=self.sub, idn=self.idn, audience=GATEWAY_ID)

    def warrant(self, provider_id: str, query_id: str) -> str:
        """A lookup warrant for the citizen's number, as the gateway mints one."""
        return self.warrants.issue(
            audience=provider_id, target=self.msisdn, purpose="lookup", query_id=query_id
        )


@dataclass
class Hosts:
    """Provider (and carrier) host processes and where each adapter listens."""

    processes: list[Process] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]


def start_hosts(
    env: Env,
    procs: Processes,
    name: str,
    providers: Sequence[ProviderSpec],
    *,
    hosts: int,
    tls: bool = False,
    carrier: bool = False,
) -> Hosts:
    """Serve ``providers`` spread over ``hosts`` processes (plus a carrier host).

    Returns once every adapter listens.
    """
    groups: list[list[ProviderSpec]] = [[] for _ in range(max(1, hosts))]
    for i, provider in enumerate(providers):
        groups[i % len(groups)].append(provider)
    specs: list[tuple[str, dict[str, Any]]] = []
    if carrier:
        specs.append((f"{name}-carrier", _spec(env, tls=tls, carrier=True, providers=[])))
    specs += [
        (f"{name}-{i}", _spec(env, tls=tls, carrier=False, providers=group))
        for i, group in enumerate(groups)
        if group
    ]
    out = Hosts()
    started: list[tuple[Process, Path]] = []
    for host_name, spec in specs:
        spec_path = procs.directory / f"{host_name}.spec.json"
        ready = procs.directory / f"{host_name}.ready.json"
        ready.unlink(missing_ok=True)
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        process = procs.python(host_name, "-m", "bench._host", str(spec_path), str(ready))
        started.append((process, ready))
        out.processes.append(process)
    for process, ready in started:
        data = wait_json_file(process, ready, STARTUP_TIMEOUT_S)
        for adapter_id, port in data["ports"].items():
            out.addresses[adapter_id] = f"127.0.0.1:{port}"
    return out


def _spec(
    env: Env, *, tls: bool, carrier: bool, providers: Sequence[ProviderSpec]
) -> dict[str, Any]:
    keys = env.keys
    return {
        "gateway_jwks": str(keys.gateway_jwks),
        "gateway_issuer": GATEWAY_ID,
        "seed": DEFAULT_SEED,
        "citizen_msisdn": env.msisdn,
        "citizen_held_from": env.held_from.isoformat(),
        "tls": (
            {
                "cert": str(keys.server_cert),
                "key": str(keys.server_key),
                "client_ca": str(keys.ca_cert),
            }
            if tls
            else None
        ),
        "log_level": "warning",
        "carriers": [{"id": CARRIER_ID, "idn_key": str(keys.idn_key)}] if carrier else [],
        "providers": [
            {"id": p.id, "hold": p.hold, "delay_s": p.delay_s, "users": p.users} for p in providers
        ],
    }


def provider_ids(prefix: str, count: int) -> list[str]:
    """``count`` provider ids ``PREFIX-0000``, ``PREFIX-0001``, ..."""
    return [f"{prefix}-{i:04d}" for i in range(count)]


@dataclass(frozen=True)
class GatewayProcess:
    """A running ``onecert gateway serve``."""

    process: Process
    port: int
    config: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def write_gateway_config(
    env: Env,
    path: Path,
    *,
    carrier_address: str,
    providers: Sequence[tuple[str, str]],
    upstream_tls: bool = False,
    listen_port: int = 0,
    fanout: dict[str, float | int] | None = None,
    store_url: str | None = None,
    store_schema: str | None = None,
    carrier_prefixes: Sequence[str] = (),
    extra: str = "",
    reuse_port: bool = False,
) -> Path:
    """A development-mode gateway config (plaintext to the client; providers
    plaintext unless ``upstream_tls``), logging JSON at info as in production.
    ``reuse_port`` lets two gateways share ``listen_port`` (both must set it).

    The store is a SQLite file named after the config unless ``store_url``
    says otherwise (gateways that pass the same URL share it).
    """
    keys = env.keys
    plaintext = "false" if upstream_tls else "true"
    lines = [
        "[gateway]",
        f'id = "{GATEWAY_ID}"',
        f'listen = "127.0.0.1:{listen_port}"',
        "dev_plaintext = true",
        f"reuse_port = {'true' if reuse_port else 'false'}",
        "grace_period_s = 1",
        "log_json = true",
        'log_level = "info"',
        "",
        "[keys]",
        f'warrant_key = "{keys.warrant_key}"',
        f'handle_key = "{keys.handle_key}"',
        "",
        "[identity]",
        f'audience = "{GATEWAY_ID}"',
        "",
        "[[identity.issuers]]",
        f'issuer = "{IDENTITY_ISSUER}"',
        f'jwks = "{keys.identity_jwks}"',
        "",
    ]
    if upstream_tls:
        lines += [
            "[upstream_tls]",
            f'ca = "{keys.ca_cert}"',
            f'cert = "{keys.client_cert("gateway")}"',
            f'key = "{keys.client_key("gateway")}"',
            "",
        ]
    lines += [
        "[store]",
        f'url = "{store_url or "sqlite:///" + str(path.with_suffix(".db"))}"',
        "auto_migrate = true",
    ]
    if store_schema is not None:
        lines.append(f'schema = "{store_schema}"')
    lines.append("")
    # A generous carrier deadline: the carrier is not what is measured, and a
    # starved machine must not fail a lookup on it.
    fanout = {"carrier_deadline_s": 10, **(fanout or {})}
    lines.append("[fanout]")
    lines += [f"{key} = {json.dumps(value)}" for key, value in fanout.items()]
    lines.append("")
    lines += [
        "[[carriers]]",
        f'id = "{CARRIER_ID}"',
        f'address = "{carrier_address}"',
        f"plaintext = {plaintext}",
        f"prefixes = {json.dumps(list(carrier_prefixes))}",
        "",
    ]
    for provider_id, address in providers:
        lines += [
            "[[providers]]",
            f'id = "{provider_id}"',
            f'address = "{address}"',
            f"plaintext = {plaintext}",
            "",
        ]
    path.write_text("\n".join(lines) + extra, encoding="utf-8")
    return path


def start_gateway(procs: Processes, name: str, config: Path) -> GatewayProcess:
    """``onecert gateway serve --config CONFIG``; returns once it listens."""
    process = procs.python(name, "-m", "onecert.cli", "gateway", "serve", "--config", str(config))
    port = wait_gateway_port(process, STARTUP_TIMEOUT_S)
    return GatewayProcess(process, port, config)


def new_query_id() -> str:
    return secrets.token_hex(8)
