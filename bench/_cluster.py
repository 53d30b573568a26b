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
from onecert.gateway.testing import FederationKeys, gateway_toml
from onecert.sdk._idn import compute_idn
from onecert.sdk._warrant import WarrantIssuer
from onecert.sdk.devkeys import DevKeys, read_hex_key

CARRIER_ID = "bluefinch"
STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ProviderSpec:
    """A provider a host serves: ``hold`` binds an account to the citizen's number."""

    id: str
    hold: bool = True
    delay_s: float = 0.0
    users: int = 20


class BenchSetup:
    """Keys (:class:`onecert.gateway.testing.FederationKeys`) and the citizen of one
    benchmark run (under ``directory``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        federation_keys = FederationKeys.create(directory / "keys", force=True)
        self.keys: DevKeys = federation_keys.dev
        citizen = next(s for s in population(DEFAULT_SEED) if s.carrier_id == CARRIER_ID)
        self.msisdn = citizen.msisdn
        self.held_from = citizen.held_from
        self.idn = compute_idn(read_hex_key(self.keys.idn_key), citizen.document_number)
        self.sub = "bench-citizen"
        self._assertions = AssertionIssuer(key=federation_keys.identity, issuer=IDENTITY_ISSUER)
        # The gateway's own warrant key: the floor signs exactly what the gateway signs.
        self.warrants = WarrantIssuer(key=federation_keys.warrant, issuer=GATEWAY_ID)

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
    env: BenchSetup,
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
    env: BenchSetup, *, tls: bool, carrier: bool, providers: Sequence[ProviderSpec]
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
    env: BenchSetup,
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
    text = gateway_toml(
        env.keys,
        store_url=store_url or f"sqlite:///{path.with_suffix('.db')}",
        store_schema=store_schema,
        listen_port=listen_port,
        carriers=[
            {"id": CARRIER_ID, "address": carrier_address, "prefixes": list(carrier_prefixes)}
        ],
        providers=[{"id": p, "address": address} for p, address in providers],
        issuer=IDENTITY_ISSUER,
        upstream_tls=upstream_tls,
        gateway={
            "id": GATEWAY_ID,
            "reuse_port": reuse_port,
            "log_json": True,
            "log_level": "info",
        },
        # A generous carrier deadline: the carrier is not what is measured, and a
        # starved machine must not fail a lookup on it.
        sections={"fanout": {"carrier_deadline_s": 10, **(fanout or {})}},
    )
    path.write_text(text + extra, encoding="utf-8")
    return path


def start_gateway(
    procs: Processes, name: str, config: Path, *, timeout: float = STARTUP_TIMEOUT_S
) -> GatewayProcess:
    """``onecert gateway serve --config CONFIG``; returns once it listens (``timeout`` s)."""
    process = procs.python(name, "-m", "onecert.cli", "gateway", "serve", "--config", str(config))
    port = wait_gateway_port(process, timeout)
    return GatewayProcess(process, port, config)


def new_query_id() -> str:
    return secrets.token_hex(8)
