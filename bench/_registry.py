"""The registry scenario: how long a registry change takes to reach another replica.

Two gateway processes share one database (PostgreSQL with ``--pg-url``, and
SQLite) and a registry of N providers (seeded from the configuration; they
only poll for notices, so none is ever dialed). The benchmark suspends a
provider at replica A (``SuspendProvider``, as the dev admin) and times, from
A's answer, until replica B refuses that provider's own call
(``GetRoutingKey`` as the provider); then resumes it and times until B
accepts it again. That is a change applied everywhere: B's view, not the
database's. The promise is the figure: ``registry.poll_interval_s`` (2 s by
default) plus the time to apply a snapshot of N providers, at most 5 s.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import statistics
import time
from typing import TYPE_CHECKING, Any

import grpc

from bench._cluster import start_gateway
from bench._load import percentile
from bench._notices import pg_schema
from bench._procs import Processes
from bench._report import Row, ScenarioResult
from onecert.adapters.demo import GATEWAY_ID, IDENTITY_ISSUER
from onecert.gateway._config import RegistryConfig
from onecert.gateway._principals import DEV_PRINCIPAL_HEADER
from onecert.gateway.testing import gateway_toml
from onecert.sdk._channel import open_channel
from onecert.v1 import gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from bench._procs import Process
    from bench._scenarios import Context

_POLL_S = 0.02
_GIVE_UP_S = 30.0
# The replicas run with registry.poll_interval_s at its default.
_POLL_INTERVAL_S = RegistryConfig().poll_interval_s
# The promise of docs/registry.md: a registry change is applied by every replica within
# this (the enrollment scenario holds activations to it too).
PROMISE_S = 5.0


async def run_registry(ctx: Context) -> ScenarioResult:
    """Suspend and resume providers at one replica; time until the other applies it."""
    n, changes = ctx.sizes.registry_n, ctx.sizes.registry_changes
    result = ScenarioResult(
        "registry",
        f"A registry change at one replica applied by another, {n} providers",
        params={"providers": n, "changes": changes, "poll_interval_s": _POLL_INTERVAL_S},
    )
    result.notes += [
        "two gateway processes on one database; SuspendProvider / ResumeProvider at A, "
        "then B is asked (GetRoutingKey as the provider) every 20 ms until it refuses "
        "(then accepts) the provider: timed from A's answer; each change at a random "
        "moment of B's poll cycle",
        f"target: every change applied within {PROMISE_S:g} s (the documented promise); "
        "expected about poll_interval_s / 2 on average",
    ]
    backends: list[tuple[str, str, str | None]] = [("SQLite", "", None)]
    if ctx.pg_url:
        backends.append(("PostgreSQL", ctx.pg_url, f"bench_{secrets.token_hex(4)}"))
    else:
        result.notes.append("PostgreSQL skipped (no --pg-url)")
    with Processes(ctx.directory / "registry") as procs:
        for label, url, schema in backends:
            store_url = url or f"sqlite:///{procs.directory / 'registry.db'}"
            async with pg_schema(store_url, schema):
                figures = await _measure(ctx, procs, label, store_url, schema)
            result.details[label] = figures
            for metric, key in (("p50", "p50_s"), ("p99", "p99_s"), ("max", "max_s")):
                result.rows.append(
                    Row(
                        label,
                        f"applied at the other replica, {metric}",
                        "s",
                        figures[key],
                        target=f"<= {PROMISE_S:g}",
                        target_on="value",
                    ).judge()
                )
    return result


async def _measure(
    ctx: Context, procs: Processes, label: str, url: str, schema: str | None
) -> dict[str, Any]:
    ids = [f"rg-{i:04d}" for i in range(ctx.sizes.registry_n)]
    name = "registry-" + label.lower()
    config = procs.directory / f"{name}.toml"
    text = gateway_toml(
        ctx.env.keys,
        store_url=url,
        store_schema=schema,
        carriers=[{"id": "bluefinch", "address": "127.0.0.1:9"}],
        providers=[{"id": p, "delivery": "poll"} for p in ids],
        issuer=IDENTITY_ISSUER,
        gateway={"id": GATEWAY_ID, "log_json": True, "log_level": "warning"},
    )
    config.write_text(text, encoding="utf-8")
    first = start_gateway(procs, f"{name}-a", config)
    second = start_gateway(procs, f"{name}-b", config)
    seconds: list[float] = []
    try:
        async with (
            open_channel(first.address, tls=None) as a_channel,
            open_channel(second.address, tls=None) as b_channel,
        ):
            admin = gateway_pb2_grpc.GatewayStub(a_channel)
            other = gateway_pb2_grpc.GatewayStub(b_channel)
            rng = random.Random(7)
            picks = rng.sample(ids, min(len(ids), ctx.sizes.registry_changes))
            for provider_id in picks:
                # A change comes at any moment of B's poll cycle, not right after
                # B applied the last one (that would always wait a whole interval).
                await asyncio.sleep(rng.uniform(0, _POLL_INTERVAL_S))
                seconds.append(await _suspended(admin, other, provider_id))
                await asyncio.sleep(rng.uniform(0, _POLL_INTERVAL_S))
                seconds.append(await _resumed(admin, other, provider_id))
    finally:
        _stop(procs, first.process, second.process)
    return {
        "changes": len(seconds),
        "p50_s": percentile(seconds, 50),
        "p99_s": percentile(seconds, 99),
        "max_s": max(seconds),
        "mean_s": statistics.fmean(seconds),
    }


def _stop(procs: Processes, *processes: Process) -> None:
    for process in processes:
        procs.stop(process)


async def _suspended(
    admin: gateway_pb2_grpc.GatewayAsyncStub, other: gateway_pb2_grpc.GatewayAsyncStub, pid: str
) -> float:
    await admin.SuspendProvider(
        gateway_pb2.SuspendProviderRequest(provider_id=pid, reason="bench"),
        metadata=((DEV_PRINCIPAL_HEADER, "admin"),),
        timeout=30,
    )
    return await _until(other, pid, refused=True)


async def _resumed(
    admin: gateway_pb2_grpc.GatewayAsyncStub, other: gateway_pb2_grpc.GatewayAsyncStub, pid: str
) -> float:
    await admin.ResumeProvider(
        gateway_pb2.ResumeProviderRequest(provider_id=pid),
        metadata=((DEV_PRINCIPAL_HEADER, "admin"),),
        timeout=30,
    )
    return await _until(other, pid, refused=False)


async def _until(stub: gateway_pb2_grpc.GatewayAsyncStub, pid: str, *, refused: bool) -> float:
    """Seconds until ``stub``'s replica refuses (or accepts) ``pid``'s own call."""
    started = time.perf_counter()
    while True:
        try:
            await stub.GetRoutingKey(
                gateway_pb2.GetRoutingKeyRequest(),
                metadata=((DEV_PRINCIPAL_HEADER, f"provider:{pid}"),),
                timeout=10,
            )
            now_refused = False
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.PERMISSION_DENIED:
                raise
            now_refused = True
        elapsed = time.perf_counter() - started
        if now_refused is refused:
            return elapsed
        if elapsed > _GIVE_UP_S:
            raise TimeoutError(f"{pid}: the other replica did not follow in {_GIVE_UP_S:g} s")
        await asyncio.sleep(_POLL_S)
