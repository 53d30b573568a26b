"""The notices scenario: one recycled-number notice pushed to N providers.

A carrier reports the number RECYCLED with ``Gateway.ReportNumberEvent``;
the gateway records one delivery per provider and its push workers call
each provider's ``ReceiveEvent`` until every delivery is acknowledged. The
benchmark watches the deliveries in the store (a read-only query from its
own process) and stops the clock when the last one is acknowledged. The
floor is N bare ``ReceiveEvent`` calls with SETs signed by the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench._cluster import (
    CARRIER_ID,
    BenchSetup,
    Hosts,
    ProviderSpec,
    provider_ids,
    start_gateway,
    start_hosts,
    write_gateway_config,
)
from bench._load import GatewayLoad, floor_channels
from bench._procs import Processes, cpu_seconds, settled_cpu
from bench._report import Row, ScenarioResult
from onecert.adapters.demo import GATEWAY_ID
from onecert.gateway.store import DeliveryState, Store
from onecert.gateway.store._models import deliveries, number_events
from onecert.sdk._channel import open_channel
from onecert.sdk._keys import SigningKey
from onecert.sdk._set import SetIssuer
from onecert.v1 import gateway_pb2, gateway_pb2_grpc, provider_pb2, provider_pb2_grpc

if TYPE_CHECKING:
    from bench._scenarios import Context

_POLL_S = 0.05
_TIMEOUT_S = 300.0
_DEV_PRINCIPAL = "x-onecert-dev-principal"


async def run_notices(ctx: Context) -> ScenarioResult:
    """Push one notice to every provider, on SQLite and on PostgreSQL, against the floor."""
    sizes, env = ctx.sizes, ctx.env
    n, runs = sizes.notices_n, sizes.notices_runs
    result = ScenarioResult(
        "notices",
        f"One recycled-number notice pushed to {n} providers until all acknowledged",
        params={
            "providers": n,
            "workers": 2,
            "batch": 100,
            "in_flight": 1000,
            "runs": runs,
            "postgresql": bool(ctx.pg_url),
        },
    )
    result.notes += [
        "gateway: ReportNumberEvent from the carrier; the replica that records it leases "
        "the copies it made due in the same transaction and pushes them at once (default "
        "[notices]: up to `in_flight` = 1000 pushes at once, one ReceiveEvents call per "
        "provider; the 2 workers claim the rest, `batch` providers at a time); finished "
        "pushes settled in group commits; timed from the report to the last "
        "acknowledgement the store recorded, once the gateway is quiet after its start "
        "(its Describe check of every provider over)",
        f"{runs} reports per backend, each to the same gateway once it is quiet again, "
        "a floor measured after each: the figures are the medians (every run in details)",
        "floor = N bare ReceiveEvent calls at once, a SET signed per call",
    ]
    ids = provider_ids("nt", n)
    with Processes(ctx.directory / "notices") as procs:
        hosts = start_hosts(
            env,
            procs,
            "nt",
            [ProviderSpec(p, hold=False) for p in ids],
            hosts=sizes.hosts,
            carrier=True,
        )
        floors: list[float] = []
        floor_cpu: list[float] = []

        async def floor() -> None:
            seconds, cpu = await _floor(env, hosts, ids)
            floors.append(seconds)
            floor_cpu.append(round(cpu, 2))

        await floor()

        # (label, store URL, PostgreSQL schema)
        backends: list[tuple[str, str, str | None]] = [
            ("SQLite", f"sqlite:///{procs.directory / 'notices.db'}", None)
        ]
        if ctx.pg_url:
            backends.append(("PostgreSQL", ctx.pg_url, f"bench_{secrets.token_hex(4)}"))
        else:
            result.notes.append("PostgreSQL skipped (no --pg-url)")
        for label, url, schema in backends:
            async with pg_schema(url, schema):
                figures = await _push_all(
                    ctx, procs, hosts, ids, label=label, url=url, schema=schema, after=floor
                )
            result.rows.append(
                Row(
                    label,
                    "all acknowledged",
                    "s",
                    figures["seconds"],
                    statistics.median(floors),
                    "bare ReceiveEvent",
                    target="<= 1.5",
                ).judge()
            )
            result.details[label] = figures
    result.details["floor_seconds"] = floors
    # The floor client's CPU for the same N calls (this process), beside gateway_cpu_s.
    result.details["floor_cpu_s"] = floor_cpu
    return result


@contextlib.asynccontextmanager
async def pg_schema(url: str, schema: str | None) -> AsyncIterator[None]:
    """A fresh PostgreSQL schema for the run, dropped afterwards (nothing for SQLite)."""
    if schema is None:
        yield
        return
    from sqlalchemy import text  # noqa: PLC0415 - only when PostgreSQL is used
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415 - same

    engine = create_async_engine(
        make_url(url).set(drivername="postgresql+asyncpg"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield
        finally:
            async with engine.connect() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


async def _push_all(
    ctx: Context,
    procs: Processes,
    hosts: Hosts,
    ids: list[str],
    *,
    label: str,
    url: str,
    schema: str | None,
    after: Callable[[], Awaitable[None]],
) -> dict[str, Any]:
    """``notices_runs`` reports to one gateway on this backend (``after`` each: a
    floor); the median run, and every run."""
    env = ctx.env
    name = "gateway-" + "".join(c if c.isalnum() else "-" for c in label.lower())
    config = write_gateway_config(
        env,
        procs.directory / f"{name}.toml",
        carrier_address=hosts.addresses[CARRIER_ID],
        providers=[(p, hosts.addresses[p]) for p in ids],
        store_url=url,
        store_schema=schema,
        carrier_prefixes=["+86"],
    )
    gateway = start_gateway(procs, name, config)
    store = Store.open(url, schema=schema)
    runs: list[dict[str, Any]] = []
    try:
        # One lookup first: it opens the gateway's channel to every provider,
        # as a running gateway has them (the floor's channels are warm too).
        warm = GatewayLoad(env, gateway.address)
        try:
            await warm.lookup()
        finally:
            await warm.close()
        async with open_channel(gateway.address, tls=None) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            for _ in range(ctx.sizes.notices_runs):
                # Its start-up work (the Describe check of every provider), or
                # the previous run's, over.
                quiet_after = await settled_cpu(gateway.pid)
                figures = await _one_report(env, stub, store, gateway.pid, len(ids))
                runs.append({"waited_for_quiet_s": round(quiet_after, 1), **figures})
                await after()
    finally:
        await store.close()
        procs.stop(gateway.process)
    median = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
    return {**median, "runs": runs}


async def _one_report(
    env: BenchSetup,
    stub: gateway_pb2_grpc.GatewayAsyncStub,
    store: Store,
    pid: int,
    expected: int,
) -> dict[str, Any]:
    """Report one event and wait for all its copies; when each step happened."""
    request = gateway_pb2.ReportNumberEventRequest(
        event_id=f"bench-{secrets.token_hex(6)}",
        msisdn=env.msisdn,
        type=gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED,
    )
    request.effective_at.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    cpu_before = cpu_seconds(pid)
    started_at = time.time()  # the store's timestamps are on this clock
    started = time.perf_counter()
    answer = await stub.ReportNumberEvent(
        request,
        timeout=30,
        metadata=((_DEV_PRINCIPAL, f"carrier:{CARRIER_ID}"),),
    )
    reported = time.perf_counter() - started
    acknowledged, failed = await _wait_acknowledged(store, answer.notice_id, expected)
    seen = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu_before
    marks = await _timeline(store, answer.notice_id)
    at = {k: None if v is None else round(v.timestamp() - started_at, 4) for k, v in marks.items()}
    # The clock stops at the last acknowledgement the store recorded (the bench
    # sees it up to a poll interval later: ``seen_s``).
    seconds = at["last_acknowledged_s"] if failed == 0 and at["last_acknowledged_s"] else seen
    return {
        "seconds": seconds,
        "seen_s": round(seen, 4),
        "report_call_ms": round(reported * 1000, 1),
        **at,
        "acknowledged": acknowledged,
        "failed": failed,
        "gateway_cpu_s": round(cpu, 2),
        "gateway_cpu_ms_per_delivery": round(cpu / expected * 1000, 2),
        "deliveries_per_s": round(acknowledged / seconds, 1) if seconds else None,
    }


async def _timeline(store: Store, notice_id: str) -> dict[str, datetime | None]:
    """When the store recorded the notice, and its first and last acknowledgements."""
    d, n = deliveries.c, number_events.c
    async with store.engine.connect() as conn:
        recorded = await conn.scalar(select(n.recorded_at).where(n.notice_id == notice_id))
        first, last = (
            await conn.execute(
                select(func.min(d.acknowledged_at), func.max(d.acknowledged_at)).where(
                    d.notice_id == notice_id
                )
            )
        ).one()
    return {
        "recorded_s": _aware(recorded),
        "first_acknowledged_s": _aware(first),
        "last_acknowledged_s": _aware(last),
    }


def _aware(value: Any) -> datetime | None:
    """A timestamp column's value as an aware datetime (UTC when the driver drops it)."""
    if value is None:
        return None
    if isinstance(value, str):  # in case an aggregate bypassed the column's type
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _wait_acknowledged(store: Store, notice_id: str, expected: int) -> tuple[int, int]:
    """Poll the notice's copies by state (one small query: the watching costs the
    database little) until all are settled."""
    d = deliveries.c
    stmt = (
        select(d.state, func.count())
        .where(d.notice_id == notice_id, d.state != DeliveryState.PENDING.value)
        .group_by(d.state)
    )
    deadline = time.perf_counter() + _TIMEOUT_S
    while True:
        async with store.engine.connect() as conn:
            counts = {state: int(n) for state, n in (await conn.execute(stmt)).all()}
        acknowledged = counts.get(DeliveryState.ACKNOWLEDGED.value, 0)
        failed = counts.get(DeliveryState.FAILED.value, 0)
        if acknowledged + failed >= expected:
            return acknowledged, failed
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{acknowledged} of {expected} acknowledged after {_TIMEOUT_S:g} s")
        await asyncio.sleep(_POLL_S)


async def _floor(env: BenchSetup, hosts: Hosts, ids: list[str]) -> tuple[float, float]:
    """Seconds for one bare ``ReceiveEvent`` per provider, all at once (channels warm),
    and the CPU seconds this process spent on them."""
    sets = SetIssuer(key=SigningKey.load(env.keys.warrant_key), issuer=GATEWAY_ID)
    builder = floor_channels(None)
    channels = [builder.open(hosts.addresses[p], plaintext=True) for p in ids]
    stubs = [provider_pb2_grpc.BindingProviderStub(c) for c in channels]
    recycled_at = datetime.now(UTC) - timedelta(minutes=1)
    try:
        # Connect first, as the gateway's channels are after its first lookup.
        await asyncio.gather(*(c.channel_ready() for c in channels))

        async def push(provider_id: str, stub: provider_pb2_grpc.BindingProviderAsyncStub) -> bool:
            token = sets.issue(audience=provider_id, msisdn=env.msisdn, recycled_at=recycled_at)
            answer = await stub.ReceiveEvent(
                provider_pb2.ReceiveEventRequest(set=token), timeout=30
            )
            return bool(answer.acknowledged)

        cpu_before = time.process_time()
        started = time.perf_counter()
        acknowledged = await asyncio.gather(*(push(p, s) for p, s in zip(ids, stubs, strict=True)))
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    if not all(acknowledged):
        raise RuntimeError("a provider did not acknowledge a bare ReceiveEvent")
    return seconds, cpu
