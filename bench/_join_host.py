"""A host of providers that join by invitation, for the enrollment scenario.

One process serves many SDK providers, each on its own port with its own
key and certificate, exactly as a lone site would (``serve_for_join``):
thousands of providers do not fit in thousands of Python processes on a
small machine, and one process for all of them would measure that process,
not the gateway::

    python -m bench._join_host SPEC.json READY.json GO.json OUT.json

``SPEC.json`` holds ``keys`` (a dev keys directory: the bootstrap server
certificate, the CA, the gateway's JWKS), ``work`` (one credentials
directory per provider goes under it) and ``ids``. Once every server
listens, the ports go to ``READY.json``. The process then waits for
``GO.json`` (``gateway``: the join listener's address, ``tokens``: each
provider's enrollment token), and every provider joins at once (a key pair
of its own, a CSR, the token), then asks for activation (the gateway's
gate runs the conformance kit against it). What happened to each, in
``time.monotonic()`` seconds (one clock for every process of the machine),
goes to ``OUT.json``; then it serves until SIGTERM, so the gateways keep
reaching the providers they activated.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench._host import orphaned
from bench._procs import read_json, write_json
from onecert.gateway.enrollment.testing import serve_for_join
from onecert.sdk import Server, configure_logging, join
from onecert.sdk.client import (
    GatewayError,
    ProviderGatewayClient,
    ProviderStatus,
    RateLimitedError,
)
from onecert.sdk.devkeys import DevKeys
from onecert.sdk.testing import empty_provider

# A provider asks again after a failed gate this many times at most (a check
# of deadlines can miss on a starved machine; the scenario reports it).
_GATE_ATTEMPTS = 3
# UNAVAILABLE answers (the store busy on a starved machine) a provider rides out.
_UNAVAILABLE_RETRIES = 5
# gRPC deadlines of the joining calls: the gate waits for a slot in the call.
_JOIN_TIMEOUT_S = 300.0
_ACTIVATION_TIMEOUT_S = 600.0
_POLL_S = 0.02
# Back-off between join attempts refused for lack of a slot: from, to (seconds).
_JOIN_PAUSE_S = 1.0
_JOIN_PAUSE_MAX_S = 30.0
# Servers started at once.
_START_BATCH = 100


async def _go(path: Path) -> dict[str, Any]:
    # Another process writes the file: nothing to wait on but the file itself.
    while True:
        data = await asyncio.to_thread(read_json, path)
        if data is not None:
            return data
        await asyncio.sleep(_POLL_S)


async def _unavailable(exc: GatewayError, times: dict[str, Any]) -> None:
    """Wait before asking again after UNAVAILABLE (the gateway's database was busy: the
    call changed nothing), as a provider would; anything else, or too many, is raised."""
    times["unavailable"] += 1
    if exc.code is not grpc.StatusCode.UNAVAILABLE or times["unavailable"] > _UNAVAILABLE_RETRIES:
        raise exc
    await asyncio.sleep(random.uniform(0.5, 2.0))


async def _activate(client: ProviderGatewayClient, times: dict[str, Any]) -> None:
    while True:
        try:
            result = await client.request_activation(timeout=_ACTIVATION_TIMEOUT_S)
        except RateLimitedError as exc:
            times["refused"] += 1
            await asyncio.sleep(exc.retry_after or 0.5)
            continue
        except GatewayError as exc:
            await _unavailable(exc, times)
            continue
        if result.status is ProviderStatus.ACTIVE:
            times["active"] = time.monotonic()
            return
        failures = [] if result.gate is None else list(result.gate.failures)
        times["failed_checks"] += [f.split(":")[0] for f in failures] or [result.summary]
        if len(times["failed_checks"]) > _GATE_ATTEMPTS:
            raise RuntimeError(f"not activated: {result.summary}: {failures}")


async def _one(
    provider_id: str, server: Server, go: dict[str, Any], keys: DevKeys, work: Path
) -> dict[str, Any]:
    times: dict[str, Any] = {"refused": 0, "join_refused": 0, "unavailable": 0, "failed_checks": []}
    directory = work / provider_id
    pause = _JOIN_PAUSE_S
    while True:
        try:
            joined = await join(
                gateway=go["gateway"],
                gateway_ca=keys.ca_cert,
                provider_id=provider_id,
                token=go["tokens"][provider_id],
                address=server.address,
                directory=directory,
                timeout=_JOIN_TIMEOUT_S,
            )
        except RateLimitedError as exc:
            # The listener serves so many joins at once (gRPC refuses the rest,
            # without a hint); the token is not spent. Back off, with jitter, as
            # a polite client does: a crowd retrying every second costs the
            # gateway a TLS handshake per attempt.
            times["join_refused"] += 1
            await asyncio.sleep(exc.retry_after or random.uniform(pause / 2, pause))
            pause = min(2 * pause, _JOIN_PAUSE_MAX_S)
            continue
        except GatewayError as exc:
            await _unavailable(exc, times)
            continue
        break
    times["joined"] = time.monotonic()
    credentials = joined.credentials
    async with ProviderGatewayClient(
        credentials.state().gateway_address, tls=credentials.gateway_tls()
    ) as client:
        await _activate(client, times)
    return times


async def _serve(spec: dict[str, Any], ready: Path, go_path: Path, out: Path) -> None:
    keys = DevKeys.at(spec["keys"])
    work = Path(spec["work"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    servers: dict[str, Server] = {}
    watch = asyncio.create_task(orphaned(stop))
    try:
        ids: list[str] = spec["ids"]
        for first in range(0, len(ids), _START_BATCH):
            batch = ids[first : first + _START_BATCH]
            started = await asyncio.gather(
                *(
                    serve_for_join(empty_provider(i, category="forum"), keys, work / i)
                    for i in batch
                )
            )
            servers.update(zip(batch, started, strict=True))
        write_json(ready, {"pid": os.getpid(), "ports": {i: s.port for i, s in servers.items()}})
        go_task = asyncio.ensure_future(_go(go_path))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({go_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not go_task.done():
            go_task.cancel()
            return
        go = go_task.result()
        done = await asyncio.gather(
            *(_one(i, s, go, keys, work) for i, s in servers.items()), return_exceptions=True
        )
        errors = [f"{type(e).__name__}: {e}" for e in done if isinstance(e, BaseException)]
        times = {i: t for i, t in zip(servers, done, strict=True) if isinstance(t, dict)}
        write_json(out, {"times": times, "errors": errors[:5], "error_count": len(errors)})
        await stop.wait()
    finally:
        watch.cancel()
        await asyncio.gather(*(s.shutdown(0.2) for s in servers.values()), return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    """Serve, join and activate the providers ``SPEC.json`` names (see the module)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        print(
            "usage: python -m bench._join_host SPEC.json READY.json GO.json OUT.json",
            file=sys.stderr,
        )
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    configure_logging(json=True, level="warning")
    paths = [Path(a) for a in args[1:]]
    asyncio.run(_serve(spec, *paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
