"""The notice_day scenario: a day of recycled-number events, compressed, at national scale.

A carrier reports ``rate`` events per second for ``seconds`` seconds
(``Gateway.ReportNumberEvent``) to a gateway on PostgreSQL with ``registered``
providers configured, every one with a fresh routing filter; about
``per_number`` of the ``holders`` providers hold each number, and only they run
a server of its own (routing keeps the others out of every notice; one shared
sink acknowledges what filters' false positives send them). Filters are written
to the store before the gateway starts, sealed as the gateway seals what
providers publish (publishing 20,000 filters over gRPC would measure that,
not notices). Measured from the store afterwards: events per second
sustained, delivery lag (the event recorded to its last acknowledgement; the
database's clock stamps both), deliveries and storage bytes per event.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
from sqlalchemy import func, insert, select, text, update

from bench._cluster import (
    CARRIER_ID,
    ProviderSpec,
    provider_ids,
    start_gateway,
    start_hosts,
    write_gateway_config,
)
from bench._notices import pg_schema
from bench._procs import Processes, cpu_seconds, settled_cpu
from bench._report import Row, ScenarioResult
from onecert.gateway._handles import load_handle_key
from onecert.gateway._principals import DEV_PRINCIPAL_HEADER
from onecert.gateway.routing import FilterSealer, derive_filter_key, derive_routing_key
from onecert.gateway.store import FilterKind, Store
from onecert.gateway.store._models import (
    deliveries,
    number_events,
    routing_filters,
    routing_head,
)
from onecert.sdk._channel import open_channel
from onecert.sdk.routing import build_filter
from onecert.v1 import gateway_pb2, gateway_pb2_grpc, provider_pb2, provider_pb2_grpc

if TYPE_CHECKING:
    from bench._scenarios import Context

# The notice log, the routed copies, the cursors; the audit log apart (its rows
# per notice are the audit's, not the delivery's).
_TABLES = ("number_events", "deliveries", "notice_cursors", "notice_head")
_DRAIN_TIMEOUT_S = 600.0
_IN_FLIGHT = 32
_ATTEMPTS = 5
# Filters sized for one false positive in a million: at 1% (the SDK's default)
# each notice would also reach 1% of every registered provider (200 of 20,000).
FP_RATE = 1e-6


async def run_notice_day(ctx: Context) -> ScenarioResult:
    """Report the events at the rate, wait until every delivery is acknowledged, measure."""
    sizes = ctx.sizes
    registered, holders = sizes.notice_day_registered, sizes.notice_day_holders
    rate, seconds = sizes.notice_day_rate, sizes.notice_day_seconds
    events = int(rate * seconds)
    result = ScenarioResult(
        "notice_day",
        f"{events} notices at {rate:g}/s to {registered} registered providers "
        f"({sizes.notice_day_per_number} of {holders} hold each number)",
        params={
            "registered": registered,
            "holders": holders,
            "per_number": sizes.notice_day_per_number,
            "rate_per_s": rate,
            "seconds": seconds,
        },
    )
    plan = _plan(events, holders, sizes.notice_day_per_number)
    ids = provider_ids("nd", registered)
    with Processes(ctx.directory / "notice_day") as procs:
        hosts = start_hosts(
            ctx.env,
            procs,
            "nd",
            [ProviderSpec(p, hold=False, users=5) for p in ids[:holders]],
            hosts=ctx.sizes.hosts,
            carrier=True,
        )
        sink = await _Sink.start()
        if ctx.pg_url:
            url, schema = ctx.pg_url, f"bench_{secrets.token_hex(4)}"
        else:
            result.notes.append("no --pg-url: ran on SQLite instead of PostgreSQL")
            url, schema = f"sqlite:///{procs.directory / 'notice-day.db'}", None
        async with pg_schema(url, schema):
            store = Store.open(url, schema=schema)
            try:
                await store.upgrade()
                await _write_filters(ctx, store, ids, holders, plan)
                before = await _sizes(store)
                config = write_gateway_config(
                    ctx.env,
                    procs.directory / "gateway-notice-day.toml",
                    carrier_address=hosts.addresses[CARRIER_ID],
                    providers=[(p, hosts.addresses.get(p, sink.address)) for p in ids],
                    store_url=url,
                    store_schema=schema,
                    carrier_prefixes=["+86"],
                )
                # Seeding 20,000 providers takes a while on a busy machine.
                gateway = start_gateway(procs, "gateway-notice-day", config, timeout=600.0)
                # Its start-up work over first (the Describe check of every provider).
                quiet_after = await settled_cpu(gateway.pid, timeout_s=300.0)
                cpu_before = cpu_seconds(gateway.pid)
                sent = await _report_all(gateway.address, plan, rate)
                drained = await _drain(store)
                cpu = cpu_seconds(gateway.pid) - cpu_before
                figures = await _figures(store, before, events, ids[:holders])
            finally:
                await store.close()
                await sink.stop()
    figures.update(
        sent,
        drained_s=round(drained, 1),
        gateway_cpu_s=round(cpu, 1),
        waited_for_quiet_s=round(quiet_after, 1),
    )
    _rows(result, figures, rate)
    result.details["figures"] = figures
    return result


class _Sink(provider_pb2_grpc.BindingProviderServicer):
    """Where every provider that holds no number listens: a filter's false positive
    routes a notice to one now and then, and it acknowledges, as a real provider
    would (20,000 servers would measure the machine, not the gateway)."""

    def __init__(self) -> None:
        self._server = grpc.aio.server()
        self.address = ""

    @classmethod
    async def start(cls) -> _Sink:
        sink = cls()
        provider_pb2_grpc.add_BindingProviderServicer_to_server(sink, sink._server)
        port = sink._server.add_insecure_port("127.0.0.1:0")
        await sink._server.start()
        sink.address = f"127.0.0.1:{port}"
        return sink

    async def stop(self) -> None:
        await self._server.stop(0)

    async def ReceiveEvents(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.ReceiveEventsRequest, context: Any
    ) -> provider_pb2.ReceiveEventsResponse:
        ack = provider_pb2.ReceiveEventResponse(acknowledged=True)
        results = [provider_pb2.EventResult(response=ack) for _ in request.sets]
        return provider_pb2.ReceiveEventsResponse(results=results)

    async def ReceiveEvent(  # noqa: N802 - the gRPC method name
        self, request: provider_pb2.ReceiveEventRequest, context: Any
    ) -> provider_pb2.ReceiveEventResponse:
        return provider_pb2.ReceiveEventResponse(acknowledged=True)


def _plan(events: int, holders: int, per_number: int) -> list[tuple[str, list[int]]]:
    """Each event's number and the holders (indexes) that hold it; the same every run."""
    rng = random.Random(17)
    return [(f"+86139{i:08d}", rng.sample(range(holders), per_number)) for i in range(events)]


async def _write_filters(
    ctx: Context, store: Store, ids: list[str], holders: int, plan: list[tuple[str, list[int]]]
) -> None:
    """A fresh snapshot for every registered provider, sealed as the gateway seals them."""
    handle_key = load_handle_key(ctx.env.keys.handle_key)
    key, sealer = derive_routing_key(handle_key, 1), FilterSealer(derive_filter_key(handle_key))
    created = int(time.time())
    held: list[list[str]] = [[] for _ in range(holders)]
    for number, who in plan:
        for h in who:
            held[h].append(number)

    async def built(numbers: list[str]) -> bytes:
        async def source() -> Any:
            for number in numbers:
                yield number

        result = await build_filter(
            source, key=key, key_version=1, fp_rate=FP_RATE, clock=lambda: float(created)
        )
        return result.filter.to_bytes()

    rows = []
    for seq, provider_id in enumerate(ids, 1):
        # Every other provider holds 20 numbers no event names.
        elsewhere = [f"+86135{seq:05d}{i:03d}" for i in range(20)]
        data = await built(held[seq - 1] if seq <= holders else elsewhere)
        sealed = sealer.seal(
            data,
            provider_id=provider_id,
            kind=FilterKind.SNAPSHOT,
            key_version=1,
            created_at=created,
        )
        rows.append(
            {
                "seq": seq,
                "provider_id": provider_id,
                "kind": FilterKind.SNAPSHOT.value,
                "key_version": 1,
                "created_at": created,
                "received_at": datetime.now(UTC),
                "interval_s": 7 * 24 * 3600,
                "sealed": sealed,
            }
        )
    async with store.engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            await conn.execute(insert(routing_filters), rows[start : start + 1000])
        await conn.execute(update(routing_head).values(seq=len(rows)))


async def _report_all(
    address: str, plan: list[tuple[str, list[int]]], rate: float
) -> dict[str, Any]:
    """Report every event, paced at ``rate`` per second (at most ``_IN_FLIGHT`` at once)."""
    gate = asyncio.Semaphore(_IN_FLIGHT)
    latencies: list[float] = []
    retries: list[int] = []
    effective = datetime.now(UTC) - timedelta(minutes=1)
    run = secrets.token_hex(4)
    async with open_channel(address, tls=None) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def report(i: int, number: str) -> None:
            request = gateway_pb2.ReportNumberEventRequest(
                event_id=f"day-{run}-{i}",
                msisdn=number,
                type=gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED,
            )
            request.effective_at.FromDatetime(effective)
            async with gate:
                began = time.perf_counter()
                for attempt in range(_ATTEMPTS):
                    try:
                        await stub.ReportNumberEvent(
                            request,
                            timeout=60,
                            metadata=((DEV_PRINCIPAL_HEADER, f"carrier:{CARRIER_ID}"),),
                        )
                        break
                    except grpc.aio.AioRpcError as exc:
                        # As a carrier would: UNAVAILABLE (the store busy) is tried again.
                        if (
                            exc.code() is not grpc.StatusCode.UNAVAILABLE
                            or attempt + 1 == _ATTEMPTS
                        ):
                            raise
                        retries.append(i)
                        await asyncio.sleep(1.0)
                latencies.append(time.perf_counter() - began)

        started = time.perf_counter()
        tasks = []
        for i, (number, _) in enumerate(plan):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(report(i, number)))
        await asyncio.gather(*tasks)
        took = time.perf_counter() - started
    latencies.sort()
    return {
        "report_seconds": round(took, 1),
        "events_per_s": round(len(plan) / took, 1),
        "report_call_ms_p50": round(1000 * statistics.median(latencies), 1),
        "report_call_ms_p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
        "report_retries": len(retries),
    }


async def _drain(store: Store) -> float:
    """Seconds until every delivery of the run is settled (after the last report)."""
    started = time.perf_counter()
    d = deliveries.c
    while True:
        async with store.engine.connect() as conn:
            pending = await conn.scalar(
                select(func.count()).select_from(deliveries).where(d.state == "PENDING")
            )
        if not pending:
            return time.perf_counter() - started
        if time.perf_counter() - started > _DRAIN_TIMEOUT_S:
            raise TimeoutError(f"{pending} deliveries still pending after {_DRAIN_TIMEOUT_S} s")
        await asyncio.sleep(0.5)


async def _sizes(store: Store) -> dict[str, int]:
    """Bytes of each notice table (rows, indexes, TOAST) and of the audit log; on SQLite,
    of the whole database file (``"file"``)."""
    async with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = await conn.exec_driver_sql("PRAGMA page_count")
            size = await conn.exec_driver_sql("PRAGMA page_size")
            return {"file": int(pages.scalar_one()) * int(size.scalar_one())}
        return {
            table: int(await conn.scalar(text(f"SELECT pg_total_relation_size('{table}')")))
            for table in (*_TABLES, "audit_log")
        }


async def _figures(
    store: Store, before: dict[str, int], events: int, serving: list[str]
) -> dict[str, Any]:
    """Lag per notice (recorded to last acknowledgement), deliveries and bytes per event."""
    n, d = number_events.c, deliveries.c
    stmt = (
        select(
            n.recorded_at,
            func.max(d.acknowledged_at).label("last"),
            func.count().label("routed"),
            func.count(d.acknowledged_at).label("acked"),
        )
        .join(deliveries, d.notice_id == n.notice_id)
        .group_by(n.notice_id, n.recorded_at)
    )
    async with store.engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
        false_positives = await conn.scalar(
            select(func.count()).select_from(deliveries).where(d.provider_id.not_in(serving))
        )
    # func.max loses the column type on SQLite: read the instant back as the store writes it.
    last = [r.last if isinstance(r.last, datetime) else _instant(r.last) for r in rows]
    lags = sorted(
        (done - r.recorded_at).total_seconds()
        for r, done in zip(rows, last, strict=True)
        if done is not None
    )
    # (A notice also routed to a false positive has its lag measured to the
    # last acknowledgement of the providers that answer.)
    routed = sum(int(r.routed) for r in rows)
    after = await _sizes(store)
    grown = {t: (after[t] - before[t]) / max(1, events) for t in after}
    compacted = await _compacted(store)
    return {
        "storage_bytes_per_event_compacted": None
        if compacted is None
        else round(sum(compacted[t] - before[t] for t in _TABLES) / max(1, events)),
        "notices": len(rows),
        "deliveries_per_event": round(routed / max(1, events), 2),
        "unacknowledged": routed - sum(int(r.acked) for r in rows),
        "routed_to_non_holders": int(false_positives or 0),
        "lag_s_p50": round(statistics.median(lags), 2) if lags else None,
        "lag_s_p99": round(lags[int(0.99 * (len(lags) - 1))], 2) if lags else None,
        "lag_s_max": round(lags[-1], 2) if lags else None,
        "storage_bytes_per_event": round(sum(b for t, b in grown.items() if t != "audit_log")),
        "storage_bytes_per_event_by_table": {t: round(b) for t, b in grown.items()},
    }


async def _compacted(store: Store) -> dict[str, int] | None:
    """The sizes after ``VACUUM FULL`` (PostgreSQL): without the row versions updates
    leave behind until autovacuum reclaims them."""
    if store.dialect != "postgresql":
        return None
    async with store.engine.connect() as opened:
        conn = await opened.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM FULL " + ", ".join(_TABLES)))
    return await _sizes(store)


def _instant(value: object) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def _rows(result: ScenarioResult, f: dict[str, Any], rate: float) -> None:
    result.rows += [
        Row("events", "sustained", "events/s", f["events_per_s"], rate, "offered").judge(),
        Row(
            "delivery lag p99",
            "recorded to last ack",
            "s",
            f["lag_s_p99"],
            target="<= 60",
            target_on="value",
        ).judge(),
        Row("deliveries", "per event", "n", f["deliveries_per_event"]).judge(),
        Row("storage", "per event", "bytes", f["storage_bytes_per_event"]).judge(),
    ]
