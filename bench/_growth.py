"""The growth scenario: N providers registered, 10 hold the citizen's number.

For each N the gateway is measured twice: asking every provider (no filter
published; N up to ``growth_ask_all_max``, beyond which that would take N
provider servers and seconds of CPU per lookup), and routed (every provider
published its filter first), against the same gateway configured with the
holders only, all in one run.

Every filter is built before anything starts, under a routing key the
benchmark writes (``[routing] key_file``), so it knows which non-holders'
filters hold the number by chance (the false positives). By default each
provider builds its filter as the SDK does with no option given
(``build_filter`` without ``fp_rate``: the rate follows the provider's count,
and the format is the newest); a rate in ``growth_fp_rates`` forces one. Only the providers
the gateway may ask run: the holders, the non-holders of the asked-everyone
runs, and the false positives. Every other provider's address is a bound
port nobody listens on, so a call the gateway should not have made would end
FAILED (connection refused); each routed case checks that none did.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from bench import _cluster as cluster
from bench._load import FloorLoad, GatewayLoad, closed_loop, interleaved, percentile
from bench._procs import Processes, rss_bytes
from bench._report import Row, ScenarioResult
from bench._scenarios import _gateway, _hosts_for, _ms, _run_summary, _warm
from onecert.gateway.routing import RoutingIndex, RoutingKeyring
from onecert.sdk._filter import key_check, routing_digest
from onecert.sdk.client import ProviderGatewayClient
from onecert.sdk.routing import RoutingFilter, build_filter, default_fp_rate
from onecert.v1 import gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from bench._scenarios import Context

# Numbers in each non-holder's filter (holders' filters hold the citizen's too).
FILLER_NUMBERS = 100
# Numbers routed through an index of the largest N to time routing.
ROUTING_SAMPLES = 2000
# The filter a provider builds and publishes to time the provider's side.
LARGE_FILTER_NUMBERS = 1_000_000
# Rounds of a routed case, alternated with as many of the holders-only gateway.
_ROUNDS = 5


def mode_of(rate: float | None) -> str:
    """How a routed case is named: ``default`` (the SDK's choice) or the forced rate."""
    return "default" if rate is None else f"{rate:g}"


@dataclass
class _Filters:
    """Every provider's snapshot per mode (``mode_of``), built before anything starts.

    ``shapes``: per mode, each provider's ``(format, k, rate)``, to report the rate used.
    """

    key: bytes
    key_file: Path
    payloads: dict[str, dict[str, bytes]] = field(default_factory=dict)
    false_positives: dict[str, set[str]] = field(default_factory=dict)
    shapes: dict[str, dict[str, tuple[int, int, float]]] = field(default_factory=dict)

    def used(self, mode: str, providers: Sequence[str]) -> dict[str, Any]:
        """The formats, ``k`` and rates the filters of ``providers`` were built with."""
        shapes = self.shapes[mode]
        rates = Counter(shapes[p][2] for p in providers)
        return {
            "formats": sorted({shapes[p][0] for p in providers}),
            "k": sorted({shapes[p][1] for p in providers}),
            "providers_by_fp_rate": {f"{r:.2%}": count for r, count in sorted(rates.items())},
        }


async def _build_filters(
    directory: Path,
    providers: Sequence[str],
    holders: set[str],
    msisdn: str,
    rates: Sequence[float | None],
) -> _Filters:
    key = secrets.token_bytes(32)
    key_file = directory / "routing.keys"
    key_file.write_text(f"1 {key.hex()}\n", encoding="ascii")
    filters = _Filters(key, key_file)
    digest = routing_digest(key, msisdn)
    created = float(int(time.time()))
    for rate in rates:
        mode = mode_of(rate)
        payloads: dict[str, bytes] = {}
        positives: set[str] = set()
        shapes: dict[str, tuple[int, int, float]] = {}
        for provider_id in providers:
            rng = random.Random(f"growth:{provider_id}")
            numbers = [f"+86150{rng.randrange(10**8):08d}" for _ in range(FILLER_NUMBERS)]
            if provider_id in holders:
                numbers.append(msisdn)
            # What a provider's FilterPublisher does, with its count as the hint.
            built = await build_filter(
                _listed(numbers),
                key=key,
                key_version=1,
                fp_rate=rate,
                size_hint=len(numbers),
                clock=lambda: created,
            )
            snapshot = built.filter
            payloads[provider_id] = snapshot.to_bytes()
            chosen = default_fp_rate(len(numbers)) if rate is None else rate
            shapes[provider_id] = (snapshot.fmt, snapshot.k, chosen)
            if provider_id not in holders and snapshot.may_contain(digest):
                positives.add(provider_id)
        filters.payloads[mode] = payloads
        filters.false_positives[mode] = positives
        filters.shapes[mode] = shapes
    return filters


def _listed(numbers: list[str]) -> Callable[[], AsyncIterator[str]]:
    async def source() -> AsyncIterator[str]:
        for number in numbers:
            yield number

    return source


async def _publish(address: str, payloads: dict[str, bytes], providers: Sequence[str]) -> float:
    """Publish every provider's snapshot (dev principals); the seconds it took."""
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def publish(provider_id: str) -> None:
            request = gateway_pb2.PublishFilterRequest(
                snapshot=gateway_pb2.RoutingSnapshot(filter=payloads[provider_id])
            )
            request.snapshot.snapshot_interval.FromTimedelta(timedelta(hours=6))
            principal = (("x-onecert-dev-principal", f"provider:{provider_id}"),)
            await stub.PublishFilter(request, metadata=principal, timeout=120)

        for start in range(0, len(providers), 50):
            await asyncio.gather(*(publish(p) for p in providers[start : start + 50]))
    return time.perf_counter() - started


async def _check_lookup(ctx: Context, address: str) -> dict[str, int]:
    """One lookup read message by message: who was asked, routed out, failed."""
    env = ctx.env
    async with grpc.aio.insecure_channel(address) as channel:
        call = gateway_pb2_grpc.GatewayStub(channel).Lookup(
            gateway_pb2.LookupRequest(group_routed_out=True),
            metadata=(("authorization", f"Bearer {env.assertion()}"),),
            timeout=60,
        )
        routed_out = messages = 0
        total = gateway_pb2.Coverage()
        async for response in call:
            messages += 1
            if response.HasField("routed_out"):
                routed_out += response.routed_out.count
            elif response.HasField("summary"):
                total = response.summary.total
    return {
        "messages": messages,
        "asked": total.asked,
        "answered": total.answered,
        "failed": total.failed,
        "timed_out": total.timed_out,
        "routed_out": routed_out,
    }


async def _numbers(count: int) -> AsyncIterator[str]:
    rng = random.Random(11)
    for _ in range(count):
        yield f"+86137{rng.randrange(10**8):08d}"


async def _large_publish(address: str, provider_id: str) -> dict[str, float]:
    """A provider builds a filter of a million numbers with the SDK and publishes it."""
    async with ProviderGatewayClient(address, insecure=True, dev_provider_id=provider_id) as client:
        key = await client.get_routing_key()
        started = time.perf_counter()
        built = await build_filter(
            lambda: _numbers(LARGE_FILTER_NUMBERS),
            key=key.key,
            key_version=key.version,
            size_hint=LARGE_FILTER_NUMBERS,
        )
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        await client.publish_snapshot(built.filter, interval=timedelta(hours=6))
        publish_s = time.perf_counter() - started
    return {
        "build_s": round(build_s, 2),
        "publish_s": round(publish_s, 2),
        "filter_bytes": len(built.filter.bits),
    }


def _routing_time(filters: _Filters, mode: str, providers: Sequence[str]) -> dict[str, Any]:
    """Per number: the gateway's routing step (hash, index query, the set to ask), timed.

    The same calls as ``RoutingService.route``, on an index holding the same
    filters as the routed gateway, in this process.
    """
    index = RoutingIndex(key_checks={1: key_check(filters.key)})
    for provider_id in providers:
        index.register(provider_id, snapshot_interval=6 * 3600)
        index.put_snapshot(
            provider_id, RoutingFilter.from_bytes(filters.payloads[mode][provider_id])
        )
    ring = RoutingKeyring({1: filters.key}, active=1)
    rng = random.Random(5)
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(ROUTING_SAMPLES):
        msisdn = f"+86139{rng.randrange(10**8):08d}"
        wall, cpu = time.perf_counter(), time.process_time()
        index.query(ring.digests(msisdn)).asked()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return {
        "numbers": ROUTING_SAMPLES,
        "wall_p50_ms": _ms(percentile(walls, 50)),
        "wall_p99_ms": _ms(percentile(walls, 99)),
        "cpu_mean_ms": _ms(statistics.fmean(cpus)),
        "cpu_p99_ms": _ms(percentile(cpus, 99)),
        "layout": index.layout(),
        "index_bytes": index.memory_bytes(),
    }


@dataclass
class _Setup:
    """What the routed runs share: hosts, filters, the address nobody listens on, and
    the holders-only gateway each routed case alternates with (its baseline)."""

    hosts: cluster.Hosts
    filters: _Filters
    holders: list[str]
    dead: str
    baseline: GatewayLoad
    baseline_pid: int


async def _routed(
    ctx: Context, procs: Processes, setup: _Setup, chosen: list[str], mode: str
) -> dict[str, Any]:
    """The growth measurement at ``len(chosen)`` with every provider's filter published."""
    sizes, env = ctx.sizes, ctx.env
    n = len(chosen)
    name = f"gateway-n{n}-routed-{mode}"
    addresses = setup.hosts.addresses
    config = cluster.write_gateway_config(
        env,
        procs.directory / f"{name}.toml",
        carrier_address=addresses[cluster.CARRIER_ID],
        providers=[(p, addresses.get(p, setup.dead)) for p in chosen],
        fanout={"provider_deadline_s": 8},
        extra=f'\n[routing]\nkey_file = "{setup.filters.key_file}"\n',
    )
    # The registry seeds every configured provider into the store at start:
    # about 40 s for 20,000 on a quiet 2-core machine, minutes on a busy one.
    gateway = cluster.start_gateway(procs, name, config, timeout=max(120.0, n / 20))
    through = GatewayLoad(env, gateway.address)
    figures: dict[str, Any] = {"filters": setup.filters.used(mode, chosen)}
    try:
        rss_before = rss_bytes(gateway.pid)
        figures["publish_s"] = round(
            await _publish(gateway.address, setup.filters.payloads[mode], chosen), 2
        )
        figures["filters_rss_mib"] = round((rss_bytes(gateway.pid) - rss_before) / 2**20, 1)
        await _warm(through.lookup, times=2)
        # Alternate with the holders-only gateway, so the ratio compares the two under
        # the same machine load (a shared machine's load drifts over a long scenario).
        runs = await interleaved(
            {
                "routed": (through.lookup, {"gateway": [gateway.pid]}),
                "holders": (setup.baseline.lookup, {"gateway": [setup.baseline_pid]}),
            },
            rounds=_ROUNDS,
            concurrency=1,
            count=max(1, sizes.growth_routed_lookups // _ROUNDS),
        )
        run, base = runs["routed"], runs["holders"]
        figures["check"] = await _check_lookup(ctx, gateway.address)
        figures["rss_mib"] = round(rss_bytes(gateway.pid) / 2**20, 1)
        if n == max(sizes.growth_n) and mode == mode_of(sizes.growth_fp_rates[0]):
            figures["large_filter"] = await _large_publish(gateway.address, setup.holders[0])
    finally:
        await through.close()
        procs.stop(gateway.process)
    asked = figures["check"]["asked"] - figures["check"]["routed_out"]
    figures.update(
        cpu_ms=run.cpu_per_lookup_ms("gateway"),
        p50_ms=_ms(percentile(run.latencies(), 50)),
        baseline_cpu_ms=base.cpu_per_lookup_ms("gateway"),
        baseline_p50_ms=_ms(percentile(base.latencies(), 50)),
        non_holders_asked=asked - sizes.growth_holders,
        non_holders_share=(asked - sizes.growth_holders) / max(1, n - sizes.growth_holders),
        summary=_run_summary(run),
    )
    return figures


async def _asked_everyone(
    ctx: Context, procs: Processes, hosts: cluster.Hosts, chosen: list[str], *, lookups: int
) -> dict[str, Any]:
    """The same N without filters: every provider asked about the number, ``lookups`` times."""
    env = ctx.env
    gateway = _gateway(
        ctx, procs, f"gateway-n{len(chosen)}", hosts, chosen, fanout={"provider_deadline_s": 8}
    )
    through = GatewayLoad(env, gateway.address)
    try:
        await _warm(through.lookup, times=2)
        return await _measured(through, gateway.pid, hosts, lookups)
    finally:
        await through.close()
        procs.stop(gateway.process)


async def _measured(
    through: GatewayLoad, pid: int, hosts: cluster.Hosts, lookups: int
) -> dict[str, Any]:
    """``lookups`` lookups one at a time through a gateway already warm: CPU, latency, RSS."""
    run = await closed_loop(
        through.lookup,
        concurrency=1,
        count=lookups,
        pids={"gateway": [pid], "providers": hosts.pids},
    )
    rss = rss_bytes(pid)
    return {
        "cpu_ms": run.cpu_per_lookup_ms("gateway"),
        "provider_cpu_ms": run.cpu_per_lookup_ms("providers"),
        "p50_ms": _ms(percentile(run.latencies(), 50)),
        "summary": _run_summary(run),
        "rss_mib": round(rss / 2**20, 1),
    }


def _label(rate: float | None, used: dict[str, Any]) -> str:
    """``routed, filters at 1.00%``, or for the SDK's default the rates it chose."""
    if rate is not None:
        return f"routed, filters at {rate:.2%}"
    rates = " and ".join(used["providers_by_fp_rate"])
    return f"routed, SDK default filters ({rates})"


def _rows(ctx: Context, details: dict[str, Any]) -> list[Row]:
    sizes = ctx.sizes
    base = details["holders_only"]
    rows: list[Row] = []
    for n in sizes.growth_n:
        case = f"N={n}"
        asked = details.get(case)
        if asked is not None:
            rows += [
                Row(case, "gateway CPU per lookup", "ms", asked["cpu_ms"], base["cpu_ms"],
                    "holders only", target="<= 1.3").judge(),
                Row(case, "latency p50", "ms", asked["p50_ms"], base["p50_ms"],
                    "holders only").judge(),
            ]  # fmt: skip
        for rate in sizes.growth_fp_rates:
            routed = details[f"{case} routed {mode_of(rate)}"]
            label = _label(rate, routed["filters"])
            rows += [
                Row(case, f"gateway CPU per lookup, {label}", "ms", routed["cpu_ms"],
                    routed["baseline_cpu_ms"], "holders only, alternated",
                    target="<= 1.3").judge(),
                Row(case, f"latency p50, {label}", "ms", routed["p50_ms"],
                    routed["baseline_p50_ms"], "holders only, alternated").judge(),
                Row(case, f"non-holders asked, {label}", "%",
                    round(100 * routed["non_holders_share"], 2), target="<= 2",
                    target_on="value").judge(),
                # A call to a provider that is not running (routing should have left it
                # out) fails: there must be none.
                Row(case, f"calls failed or timed out, {label}", "calls",
                    routed["check"]["failed"] + routed["check"]["timed_out"], target="<= 0",
                    target_on="value").judge(),
            ]  # fmt: skip
    largest = f"N={max(sizes.growth_n)}"
    timing = details.get(f"{largest} routing time")
    if timing is not None:
        # The CPU time is what carries over to a quiet machine; the wall clock's
        # tail is the machine's load.
        rows += [
            Row(largest, "routing time per number, p99 CPU", "ms", timing["cpu_p99_ms"],
                target="<= 1", target_on="value").judge(),
            Row(largest, "routing time per number, p99 wall", "ms", timing["wall_p99_ms"]),
        ]  # fmt: skip
    large = details[f"{largest} routed {mode_of(sizes.growth_fp_rates[0])}"].get("large_filter")
    if large is not None:
        rows += [
            Row(largest, "provider: build a 1M-number filter", "s", large["build_s"]),
            Row(largest, "provider: publish it", "s", large["publish_s"]),
        ]
    return rows


async def run_growth(ctx: Context) -> ScenarioResult:
    """N registered providers, 10 hold the number: CPU and latency of one lookup."""
    sizes, env = ctx.sizes, ctx.env
    holders = cluster.provider_ids("gr-h", sizes.growth_holders)
    others = cluster.provider_ids("gr-x", max(sizes.growth_n) - sizes.growth_holders)
    everyone = [*holders, *others]
    result = ScenarioResult(
        "growth",
        f"N providers registered, {sizes.growth_holders} hold the number",
        params={
            "n": list(sizes.growth_n),
            "holders": sizes.growth_holders,
            "lookups_asked_everyone": sizes.growth_lookups,
            "lookups_routed_and_baseline": sizes.growth_routed_lookups,
            "provider_deadline_s": 8,
            "fp_rates": [mode_of(rate) for rate in sizes.growth_fp_rates],
            "asked_everyone_up_to": sizes.growth_ask_all_max,
        },
    )
    result.notes += [
        "CPU = the gateway process's user+system time (/proc/PID/stat) over sequential "
        "lookups, per lookup; baseline = the same gateway configured with the holders only, "
        f"running throughout: each routed case alternates {_ROUNDS} rounds with it and is "
        "compared with those rounds, the asked-everyone cases with its first run",
        "asked everyone: no filter published, every provider asked (N up to "
        f"{sizes.growth_ask_all_max}); routed: every provider published its filter "
        f"(holders' hold the number, the others' {FILLER_NUMBERS} other numbers), built "
        "by the SDK's build_filter with its default rate (by the provider's count; "
        "details give the formats and rates used per N) unless a rate is stated; the "
        "client asks for routed-out providers in one message per number "
        "(group_routed_out) and for the results ready together in one message "
        "(batch_results), as the SDK's client (and so the portal) does",
        "only providers the gateway may ask run (holders, false positives, and those of the "
        "asked-everyone runs); the others' address refuses connections, and each routed case "
        "checks that no call failed",
        "routing time per number: the gateway's routing step (HMAC, index query, set "
        "difference) timed in the benchmark process on an index of the same filters",
    ]
    directory = ctx.directory / "growth"
    directory.mkdir(parents=True, exist_ok=True)
    filters = await _build_filters(
        directory, everyone, set(holders), env.msisdn, sizes.growth_fp_rates
    )
    ask_all = [n for n in sizes.growth_n if n <= sizes.growth_ask_all_max]
    running = set(everyone[: max(ask_all, default=sizes.growth_holders)])
    for positives in filters.false_positives.values():
        running |= positives
    specs = [cluster.ProviderSpec(p, hold=p in set(holders)) for p in everyone if p in running]
    details: dict[str, Any] = {"running_providers": len(specs)}
    dead = socket.socket()  # bound, never listening: a call to it is refused
    dead.bind(("127.0.0.1", 0))
    try:
        with Processes(directory) as procs:
            hosts = cluster.start_hosts(
                env, procs, "gr", specs, hosts=_hosts_for(len(specs), sizes.hosts), carrier=True
            )
            # The holders-only gateway runs throughout: the asked-everyone rows compare
            # with its first measurement, each routed case alternates with it.
            base = _gateway(
                ctx, procs, "gateway-holders", hosts, holders, fanout={"provider_deadline_s": 8}
            )
            baseline = GatewayLoad(env, base.address)
            try:
                await _warm(baseline.lookup, times=2)
                details["holders_only"] = await _measured(
                    baseline, base.pid, hosts, sizes.growth_routed_lookups
                )
                dead_address = f"127.0.0.1:{dead.getsockname()[1]}"
                setup = _Setup(hosts, filters, holders, dead_address, baseline, base.pid)
                for n in sizes.growth_n:
                    chosen = everyone[:n]
                    if n in ask_all:
                        details[f"N={n}"] = await _asked_everyone(
                            ctx, procs, hosts, chosen, lookups=sizes.growth_lookups
                        )
                    for rate in sizes.growth_fp_rates:
                        details[f"N={n} routed {mode_of(rate)}"] = await _routed(
                            ctx, procs, setup, chosen, mode_of(rate)
                        )
            finally:
                await baseline.close()
                procs.stop(base.process)
            floor = FloorLoad(env, {p: hosts.addresses[p] for p in holders})
            try:
                await _warm(floor.lookup)
                floor_run = await closed_loop(
                    floor.lookup, concurrency=1, count=max(10, sizes.growth_lookups)
                )
            finally:
                await floor.close()
    finally:
        dead.close()
    largest = max(sizes.growth_n)
    details[f"N={largest} routing time"] = _routing_time(
        filters, mode_of(sizes.growth_fp_rates[0]), everyone[:largest]
    )
    details["floor_holders"] = {
        "client_cpu_ms": floor_run.cpu_per_lookup_ms("client"),
        "p50_ms": _ms(percentile(floor_run.latencies(), 50)),
        "summary": _run_summary(floor_run),
    }
    result.rows += _rows(ctx, details)
    result.details = details
    return result
