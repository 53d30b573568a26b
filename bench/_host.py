"""A benchmark host: one process serving many demo providers (and carriers).

Thousands of providers do not fit in thousands of Python processes on a
small machine, so one host process serves many, each on its own port with
its own :class:`onecert.sdk.Server`, exactly as a lone provider would::

    python -m bench._host SPEC.json READY.json

``SPEC.json`` says what to serve (see :func:`main`); once every server
listens, the ports go to ``READY.json`` (written atomically), and the
process serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench._procs import write_json
from onecert.adapters.demo import build_carrier, build_provider, make_provider_data
from onecert.adapters.demo._data import UserRecord
from onecert.sdk import BindingKind, Server, ServerTLS, configure_logging
from onecert.sdk.devkeys import read_hex_key

# Servers started at once: enough to overlap the awaits, few enough that a
# host of thousands does not queue thousands of binds in one go.
_START_BATCH = 100


def _users(spec: dict[str, Any], provider: dict[str, Any]) -> list[UserRecord]:
    msisdn: str = spec["citizen_msisdn"]
    # Filler rows never land on the citizen's number by chance: whether a
    # provider holds it is the scenario's choice alone.
    users = [
        u
        for u in make_provider_data(provider["id"], spec["seed"], provider.get("users", 20))
        if u.phone != msisdn
    ]
    if provider.get("hold"):
        held_from = datetime.fromisoformat(spec["citizen_held_from"])
        users.append(
            UserRecord(
                account_ref=f"{provider['id']}-citizen",
                display_name="bench_citizen",
                phone=msisdn,
                kind=BindingKind.LOGIN,
                bound_at=held_from + timedelta(days=30),
                last_used_at=held_from + timedelta(days=60),
            )
        )
    return users


def _servers(spec: dict[str, Any]) -> list[Server]:
    tls_spec = spec.get("tls")
    tls = (
        None
        if tls_spec is None
        else ServerTLS(tls_spec["cert"], tls_spec["key"], tls_spec.get("client_ca"))
    )
    common: dict[str, Any] = {
        "gateway_keys": spec["gateway_jwks"],
        "gateway_issuer": spec["gateway_issuer"],
        "listen": "127.0.0.1:0",
        "tls": tls,
        "insecure": tls is None,
        "grace": 0.5,
    }
    servers = []
    for carrier in spec.get("carriers", ()):
        carrier_adapter = build_carrier(
            carrier["id"], idn_key=read_hex_key(carrier["idn_key"]), seed=spec["seed"]
        )
        servers.append(Server(carrier_adapter, **common))
    for provider in spec.get("providers", ()):
        adapter = build_provider(
            provider["id"],
            seed=spec["seed"],
            delay_s=provider.get("delay_s", 0.0),
            users=_users(spec, provider),
        )
        servers.append(Server(adapter, **common))
    return servers


async def orphaned(stop: asyncio.Event) -> None:
    """Set ``stop`` once this process's parent is gone."""
    # A benchmark killed outright cannot end its hosts: they notice the
    # parent is gone and end themselves.
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
        await asyncio.sleep(1.0)


async def _serve(spec: dict[str, Any], ready: Path) -> None:
    servers = _servers(spec)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watch = asyncio.create_task(orphaned(stop))
    try:
        for first in range(0, len(servers), _START_BATCH):
            await asyncio.gather(*(s.start() for s in servers[first : first + _START_BATCH]))
        write_json(
            ready,
            {"pid": os.getpid(), "ports": {s.adapter.id: s.port for s in servers}},
        )
        await stop.wait()
    finally:
        watch.cancel()
        # A short grace: hanging providers must not hold the benchmark up.
        await asyncio.gather(*(s.shutdown(0.2) for s in servers), return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    """Serve what ``SPEC.json`` describes.

    The spec holds ``gateway_jwks`` and ``gateway_issuer`` (the warrants'
    key and issuer), ``seed``, ``citizen_msisdn`` and ``citizen_held_from``
    (the number holders bind an account to), ``tls`` (null, or ``cert``,
    ``key``, ``client_ca``), ``log_level``, ``carriers`` (``id``,
    ``idn_key``) and ``providers`` (``id``, ``users``, ``hold``, ``delay_s``).
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench._host SPEC.json READY.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    configure_logging(json=True, level=spec.get("log_level", "warning"))
    asyncio.run(_serve(spec, Path(args[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
