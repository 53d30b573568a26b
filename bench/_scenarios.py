"""The scenarios: each measures the gateway and its baseline in the same run.

Every scenario starts its own processes inside a :class:`Processes` block,
so they end whatever happens, and returns a :class:`ScenarioResult`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._cluster import (
    CARRIER_ID,
    BenchSetup,
    GatewayProcess,
    Hosts,
    ProviderSpec,
    provider_ids,
    start_gateway,
    start_hosts,
    write_gateway_config,
)
from bench._load import FloorLoad, GatewayLoad, Run, closed_loop, interleaved, percentile
from bench._procs import Processes, cpu_seconds, rss_bytes, wait_json_file
from bench._report import Row, ScenarioResult

# Providers one host process serves at most (one event loop, one core at a time).
PROVIDERS_PER_HOST = 500


@dataclass(frozen=True)
class Sizes:
    """How big each scenario runs (``full`` and ``quick`` below)."""

    hosts: int
    concurrency: int
    overhead_n: tuple[int, ...]
    overhead_rounds: int
    overhead_seconds: float
    overhead_latency_lookups: int
    tail_n: int
    tail_deadline_s: float
    # Lookups through the gateway (and as many through the floor): a p99 of
    # fewer than about 100 is their slowest one.
    tail_lookups: int
    growth_n: tuple[int, ...]
    growth_holders: int
    growth_lookups: int
    # Lookups per routed case and for the holders-only baseline: CPU time is
    # read in 10 ms clock ticks, so a 10 ms lookup needs many to be measured.
    growth_routed_lookups: int
    # Filters' false-positive rates in the routed runs; None: the SDK's default
    # (onecert.sdk.routing.default_fp_rate of each provider's count).
    growth_fp_rates: tuple[float | None, ...]
    # The largest N also measured with every provider asked (N servers running).
    growth_ask_all_max: int
    notices_n: int
    # Reports timed per backend (the median is the figure, as the floor's).
    notices_runs: int
    notice_day_registered: int
    notice_day_holders: int
    notice_day_per_number: int
    notice_day_rate: float
    notice_day_seconds: float
    memory_n: int
    processes_n: int
    processes_seconds: float
    processes_channels: int
    portal_lookups: int = 30
    # Lookups in flight at once in the tail scenario, their starts spread
    # over the provider deadline; rounds alternated with the floor.
    tail_concurrency: int = 4
    tail_rounds: int = 4
    registry_n: int = 1000
    registry_changes: int = 20
    # Providers that join at once, and the processes serving them.
    enrollment_n: int = 1000
    enrollment_hosts: int = 4


FULL = Sizes(
    hosts=2,
    concurrency=4,
    overhead_n=(10, 50, 200),
    overhead_rounds=3,
    overhead_seconds=3.0,
    overhead_latency_lookups=50,
    tail_n=50,
    tail_deadline_s=1.0,
    tail_lookups=200,
    growth_n=(50, 500, 2000, 20000),
    growth_holders=10,
    growth_lookups=8,
    growth_routed_lookups=200,
    growth_fp_rates=(None,),
    growth_ask_all_max=2000,
    notices_n=1000,
    notices_runs=5,
    notice_day_registered=20_000,
    notice_day_holders=100,
    notice_day_per_number=10,
    notice_day_rate=50.0,
    notice_day_seconds=120.0,
    memory_n=1000,
    processes_n=50,
    processes_seconds=4.0,
    processes_channels=8,
)

QUICK = Sizes(
    hosts=1,
    concurrency=2,
    overhead_n=(10,),
    overhead_rounds=1,
    overhead_seconds=1.0,
    overhead_latency_lookups=10,
    tail_n=20,
    tail_deadline_s=0.5,
    tail_lookups=4,
    tail_concurrency=2,
    tail_rounds=2,
    growth_n=(40,),
    growth_holders=10,
    growth_lookups=3,
    growth_routed_lookups=5,
    growth_fp_rates=(None,),
    growth_ask_all_max=40,
    notices_n=50,
    notices_runs=1,
    notice_day_registered=2_000,
    notice_day_holders=40,
    notice_day_per_number=10,
    notice_day_rate=20.0,
    notice_day_seconds=10.0,
    memory_n=50,
    processes_n=10,
    processes_seconds=1.0,
    processes_channels=4,
    portal_lookups=5,
    registry_n=100,
    registry_changes=4,
    enrollment_n=50,
    enrollment_hosts=2,
)


@dataclass(frozen=True)
class Context:
    """What a scenario gets: keys and citizen, sizes, a directory, options."""

    env: BenchSetup
    sizes: Sizes
    directory: Path
    pg_url: str | None = None


Scenario = Callable[[Context], Awaitable[ScenarioResult]]


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def _hosts_for(count: int, minimum: int) -> int:
    return max(minimum, math.ceil(count / PROVIDERS_PER_HOST))


def _run_summary(run: Run) -> dict[str, Any]:
    latencies = run.latencies()
    firsts = [s.first for s in run.samples if s.first is not None]
    return {
        "lookups": run.count,
        "wall_s": round(run.wall_s, 3),
        "lookups_per_s": round(run.throughput, 2),
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "first_result_p50_ms": _ms(percentile(firsts, 50)),
        "cpu_ms_per_lookup": {
            label: round(cpu / run.count * 1000, 2) if run.count else None
            for label, cpu in run.cpu_s.items()
        },
        "incomplete_lookups": run.incomplete(),
        "errors": run.errors[:5],
        "error_count": len(run.errors),
    }


async def _warm(*fns: Callable[[], Awaitable[Any]], times: int = 3) -> None:
    # First calls open connections and fill caches; they are not measured.
    for fn in fns:
        for _ in range(times):
            await fn()


def _gateway(
    ctx: Context,
    procs: Processes,
    name: str,
    hosts: Hosts,
    provider_list: list[str],
    **options: Any,
) -> GatewayProcess:
    config = write_gateway_config(
        ctx.env,
        procs.directory / f"{name}.toml",
        carrier_address=hosts.addresses[CARRIER_ID],
        providers=[(p, hosts.addresses[p]) for p in provider_list],
        **options,
    )
    return start_gateway(procs, name, config)


# ------------------------------------------------------------- overhead


async def overhead(ctx: Context) -> ScenarioResult:
    """A lookup through the gateway against the bare concurrent calls, N providers."""
    sizes, env = ctx.sizes, ctx.env
    result = ScenarioResult(
        "overhead",
        "One citizen, one number, N providers answering at once: gateway vs bare grpc.aio",
        params={
            "n": list(sizes.overhead_n),
            "concurrency": sizes.concurrency,
            "rounds": sizes.overhead_rounds,
            "seconds_per_round": sizes.overhead_seconds,
            "latency_lookups_per_round": sizes.overhead_latency_lookups,
            "provider_hosts": sizes.hosts,
        },
    )
    result.notes += [
        f"throughput: closed loop, {sizes.concurrency} lookups in flight; latency: one at a "
        "time; gateway and floors alternate in rounds on the same providers",
        "floor = bare grpc.aio client, one channel per provider, a warrant minted per call "
        "(as the gateway does); the pre-minted floor is in the details",
        "the gateway's lookup also verifies the assertion, records its jti and an audit row, "
        "and calls one carrier first; the floor does none of these",
        "CPU per lookup: the gateway process alone vs the floor's client process",
        "the gateway's client asks as the SDK's client does: routed-out providers in one "
        "message per number, the results ready together in one message (batch_results)",
    ]
    ids = provider_ids("ov", max(sizes.overhead_n))
    with Processes(ctx.directory / "overhead") as procs:
        hosts = start_hosts(
            env, procs, "ov", [ProviderSpec(p) for p in ids], hosts=sizes.hosts, carrier=True
        )
        for n in sizes.overhead_n:
            chosen = ids[:n]
            gateway = _gateway(ctx, procs, f"gateway-n{n}", hosts, chosen)
            addresses = {p: hosts.addresses[p] for p in chosen}
            through = GatewayLoad(env, gateway.address)
            floor = FloorLoad(env, addresses)
            preminted = FloorLoad(env, addresses, premint=True)
            try:
                await _warm(through.lookup, floor.lookup, preminted.lookup)
                providers = {"providers": hosts.pids}
                modes = {
                    "gateway": (through.lookup, {"gateway": [gateway.pid], **providers}),
                    "floor": (floor.lookup, providers),
                    "floor_preminted": (preminted.lookup, providers),
                }
                load = await interleaved(
                    modes,
                    rounds=sizes.overhead_rounds,
                    concurrency=sizes.concurrency,
                    duration=sizes.overhead_seconds,
                )
                single = await interleaved(
                    modes,
                    rounds=sizes.overhead_rounds,
                    concurrency=1,
                    count=sizes.overhead_latency_lookups,
                )
            finally:
                await asyncio.gather(through.close(), floor.close(), preminted.close())
                procs.stop(gateway.process)
            _overhead_rows(result, n, load, single)
    return result


def _overhead_rows(
    result: ScenarioResult, n: int, load: dict[str, Run], single: dict[str, Run]
) -> None:
    case = f"N={n}"
    gw, fl, pre = load["gateway"], load["floor"], load["floor_preminted"]
    result.rows += [
        Row(
            case,
            "throughput",
            "lookups/s",
            gw.throughput,
            fl.throughput,
            "floor",
            target=">= 0.75",
        ).judge(),
        Row(
            case,
            "latency p50",
            "ms",
            _ms(percentile(single["gateway"].latencies(), 50)),
            _ms(percentile(single["floor"].latencies(), 50)),
            "floor",
        ).judge(),
        Row(
            case,
            "latency p99",
            "ms",
            _ms(percentile(single["gateway"].latencies(), 99)),
            _ms(percentile(single["floor"].latencies(), 99)),
            "floor",
            target="<= 1.3",
        ).judge(),
        Row(
            case,
            "CPU per lookup",
            "ms",
            gw.cpu_per_lookup_ms("gateway"),
            fl.cpu_per_lookup_ms("client"),
            "floor client",
        ).judge(),
    ]
    result.details[case] = {
        "under_load": {name: _run_summary(run) for name, run in load.items()},
        "one_at_a_time": {name: _run_summary(run) for name, run in single.items()},
        "throughput_vs_preminted_floor": (
            gw.throughput / pre.throughput if pre.throughput else None
        ),
    }


# ----------------------------------------------------------------- tail


async def tail(ctx: Context) -> ScenarioResult:
    """10% of providers hang: the lookup ends at the deadline, the rest arrive at once."""
    sizes, env = ctx.sizes, ctx.env
    n = sizes.tail_n
    hanging = max(1, n // 10)
    deadline = sizes.tail_deadline_s
    result = ScenarioResult(
        "tail",
        f"{hanging} of {n} providers hang; provider deadline {deadline:g} s",
        params={
            "n": n,
            "hanging": hanging,
            "provider_deadline_s": deadline,
            "lookups": sizes.tail_lookups,
            "concurrency": sizes.tail_concurrency,
            "rounds_alternated_with_floor": sizes.tail_rounds,
        },
    )
    result.notes += [
        "hanging providers sleep for an hour; the breaker threshold is raised so every "
        "lookup asks them (with the default breaker they are skipped after 5 timeouts)",
        "floor = bare concurrent calls to the healthy providers only",
        "the lookups in flight start a provider deadline / concurrency apart (citizens "
        "arrive one by one), not all at once; p99 is nearest rank, the slowest lookup "
        "is in the details",
        "'healthy results at their own latency' is read as: the last healthy result's p99 "
        "within 1.3x of the floor's (the overhead target)",
    ]
    healthy_ids = provider_ids("tl", n - hanging)
    hang_ids = provider_ids("tl-hang", hanging)
    specs = [ProviderSpec(p) for p in healthy_ids] + [
        ProviderSpec(p, delay_s=3600.0) for p in hang_ids
    ]
    with Processes(ctx.directory / "tail") as procs:
        hosts = start_hosts(env, procs, "tl", specs, hosts=sizes.hosts, carrier=True)
        gateway = _gateway(
            ctx,
            procs,
            "gateway",
            hosts,
            healthy_ids + hang_ids,
            fanout={"provider_deadline_s": deadline, "breaker_failure_threshold": 1_000_000},
        )
        through = GatewayLoad(env, gateway.address)
        floor = FloorLoad(env, {p: hosts.addresses[p] for p in healthy_ids})
        try:
            await _warm(through.lookup, floor.lookup, times=1)
            runs = {"gateway": Run(), "floor": Run()}
            per_round = max(1, sizes.tail_lookups // sizes.tail_rounds)
            for _ in range(sizes.tail_rounds):
                for name, fn in (("gateway", through.lookup), ("floor", floor.lookup)):
                    runs[name].add(
                        await _staggered(
                            fn,
                            concurrency=sizes.tail_concurrency,
                            count=per_round,
                            spacing=deadline / sizes.tail_concurrency,
                        )
                    )
        finally:
            await asyncio.gather(through.close(), floor.close())
    _tail_figures(result, runs["gateway"], runs["floor"], deadline=deadline)
    result.details["healthy"] = n - hanging
    return result


def _tail_figures(result: ScenarioResult, gw: Run, fl: Run, *, deadline: float) -> None:
    """The tail's rows (lookup end, first and last healthy result) and details."""
    firsts = [s.first for s in gw.samples if s.first is not None]
    lasts = [s.last_answered for s in gw.samples if s.last_answered is not None]
    floor_firsts = [s.first for s in fl.samples if s.first is not None]
    floor_lasts = [s.last_answered for s in fl.samples if s.last_answered is not None]
    end_p99 = _ms(percentile(gw.latencies(), 99))
    result.rows += [
        Row(
            "lookup end",
            "latency p99",
            "ms",
            end_p99,
            deadline * 1000,
            "provider deadline",
            target=f"<= {deadline * 1000 + 50:g}",
            target_on="value",
        ).judge(),
        *(
            Row(
                "first result",
                f"time p{q}",
                "ms",
                _ms(percentile(firsts, q)),
                _ms(percentile(floor_firsts, q)),
                "floor first answer",
            ).judge()
            for q in (50, 99)
        ),
        Row(
            "last healthy result",
            "time p99",
            "ms",
            _ms(percentile(lasts, 99)),
            _ms(percentile(floor_lasts, 99)),
            "floor, healthy only",
            target="<= 1.3",
        ).judge(),
    ]
    answered = [s.answered for s in gw.samples]
    latencies = gw.latencies()
    result.details = {
        "lookup_end_max_ms": _ms(max(latencies, default=None)),
        "lookups_past_deadline_plus_50ms": sum(x > deadline + 0.05 for x in latencies),
        "gateway": _run_summary(gw),
        "floor": _run_summary(fl),
        "answered_per_lookup": {"min": min(answered, default=0), "max": max(answered, default=0)},
    }


async def _staggered(
    fn: Callable[[], Awaitable[Any]], *, concurrency: int, count: int, spacing: float
) -> Run:
    """``count`` lookups from ``concurrency`` workers whose first lookups start
    ``spacing`` seconds apart (then each starts its next when its last ends).

    Started together, lookups that each last a deadline stay in step, and
    every lookup's fan-out would queue behind the others' on two cores: an
    artefact of the load generator, not a tail. CPU is this process's.
    """
    shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]

    async def worker(index: int, share: int) -> Run:
        await asyncio.sleep(index * spacing)
        return await closed_loop(fn, concurrency=1, count=share)

    cpu_before = cpu_seconds(os.getpid())
    started = time.perf_counter()
    run = Run()
    for part in await asyncio.gather(*(worker(i, n) for i, n in enumerate(shares) if n)):
        run.samples += part.samples
        run.errors += part.errors
    run.wall_s = time.perf_counter() - started
    run.cpu_s = {"client": cpu_seconds(os.getpid()) - cpu_before}
    return run


# --------------------------------------------------------------- growth


async def growth(ctx: Context) -> ScenarioResult:
    """N registered providers, 10 hold the number: CPU and latency of one lookup."""
    from bench._growth import run_growth  # noqa: PLC0415 - builds on this module's helpers

    return await run_growth(ctx)


# --------------------------------------------------------------- memory


async def memory(ctx: Context) -> ScenarioResult:
    """The gateway's RSS with many provider channels, plaintext and mutual TLS."""
    sizes, env = ctx.sizes, ctx.env
    n = sizes.memory_n
    small = 10
    result = ScenarioResult(
        "memory",
        f"Gateway RSS with {n} provider channels (after one lookup touching all)",
        params={"channels": n, "small_gateway_channels": small},
    )
    result.notes += [
        f"per channel = (RSS of a gateway with {n} providers - RSS of one with {small}), "
        f"each after one lookup touching all its providers, / {n - small}; the gateway "
        "opens every channel at start anyway (its Describe check)",
        "baseline = a bare grpc.aio process: (RSS after one call on each of the same "
        f"{n} channels - RSS before) / {n}",
        "the gateway itself listens in plaintext (development mode) in both cases",
    ]
    ids = provider_ids("mm", n)
    specs = [ProviderSpec(p, hold=i < small) for i, p in enumerate(ids)]
    for tls in (False, True):
        label = "mTLS" if tls else "plaintext"
        with Processes(ctx.directory / f"memory-{label}") as procs:
            hosts = start_hosts(
                env, procs, "mm", specs, hosts=_hosts_for(n, sizes.hosts), tls=tls, carrier=True
            )
            # The floor's process runs while the gateways do: memory, not
            # time, is measured here.
            floor_run = asyncio.ensure_future(_floor_memory(ctx, procs, hosts, ids, tls=tls))
            try:
                base = await _gateway_rss(ctx, procs, hosts, ids[:small], tls=tls, name="small")
                full = await _gateway_rss(ctx, procs, hosts, ids, tls=tls, name="full")
                floor = await floor_run
            finally:
                floor_run.cancel()
                await asyncio.gather(floor_run, return_exceptions=True)
        per_channel = (full["after_one"] - base["after_one"]) / (n - small)
        floor_per_channel = (floor["after"] - floor["ready"]) / n
        result.rows.append(
            Row(
                label,
                "RSS per channel",
                "KiB",
                per_channel / 1024,
                floor_per_channel / 1024,
                "bare grpc.aio",
            ).judge()
        )
        # Totals are not compared: the floor process imports far less than the gateway.
        result.rows.append(Row(label, "gateway RSS total", "MiB", full["after_one"] / 2**20))
        result.details[label] = {
            "gateway_mib": {k: round(v / 2**20, 1) for k, v in full.items() if k != "answered"},
            "small_gateway_mib": {
                k: round(v / 2**20, 1) for k, v in base.items() if k != "answered"
            },
            "first_lookup_answered": full["answered"],
            "floor_ready_mib": round(floor["ready"] / 2**20, 1),
            "floor_after_mib": round(floor["after"] / 2**20, 1),
            "floor_answered": floor["answered"],
        }
    return result


async def _gateway_rss(
    ctx: Context, procs: Processes, hosts: Hosts, ids: list[str], *, tls: bool, name: str
) -> dict[str, int]:
    """RSS of a gateway asking ``ids``: when ready, after one lookup, after four."""
    gateway = await asyncio.to_thread(
        _gateway,
        ctx,
        procs,
        f"gateway-{name}",
        hosts,
        ids,
        upstream_tls=tls,
        # The first lookup may find every channel still connecting.
        fanout={"provider_deadline_s": 10},
    )
    through = GatewayLoad(ctx.env, gateway.address)
    try:
        ready = rss_bytes(gateway.pid)
        first = await through.lookup()
        await asyncio.sleep(0.2)
        after_one = rss_bytes(gateway.pid)
        for _ in range(3):
            await through.lookup()
        await asyncio.sleep(0.2)
        after_four = rss_bytes(gateway.pid)
    finally:
        await through.close()
        procs.stop(gateway.process)
    return {
        "ready": ready,
        "after_one": after_one,
        "after_four": after_four,
        "answered": first.answered,
    }


async def _floor_memory(
    ctx: Context, procs: Processes, hosts: Hosts, ids: list[str], *, tls: bool
) -> dict[str, Any]:
    keys = ctx.env.keys
    spec = {
        "addresses": {p: hosts.addresses[p] for p in ids},
        "msisdn": ctx.env.msisdn,
        "warrant_key": str(keys.warrant_key),
        "tls": (
            {
                "ca_file": str(keys.ca_cert),
                "cert_file": str(keys.client_cert("gateway")),
                "key_file": str(keys.client_key("gateway")),
            }
            if tls
            else None
        ),
    }
    spec_path = procs.directory / "floormem.spec.json"
    out = procs.directory / "floormem.out.json"
    out.unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    process = procs.python("floormem", "-m", "bench._floormem", str(spec_path), str(out))
    return await asyncio.to_thread(wait_json_file, process, out, 120.0)


# ------------------------------------------------------------ processes


async def processes(ctx: Context) -> ScenarioResult:
    """Lookups per second with one and with two gateway processes on one port."""
    sizes, env = ctx.sizes, ctx.env
    n = sizes.processes_n
    concurrency = sizes.concurrency * 2
    result = ScenarioResult(
        "processes",
        f"Lookups/s with 1 and 2 gateway processes, N={n} providers",
        params={
            "n": n,
            "concurrency": concurrency,
            "client_connections": sizes.processes_channels,
            "seconds": sizes.processes_seconds,
        },
    )
    result.notes += [
        "the second gateway listens on the same port (both set gateway.reuse_port, "
        "so SO_REUSEPORT); the kernel spreads the client's connections over both",
        "order: 1 process, 2 processes, 1 process again (pooled); both processes share "
        "one SQLite store",
    ]
    ids = provider_ids("pr", n)
    with Processes(ctx.directory / "processes") as procs:
        hosts = start_hosts(
            env, procs, "pr", [ProviderSpec(p) for p in ids], hosts=sizes.hosts, carrier=True
        )
        # Replicas share their database, as in a deployment.
        shared = f"sqlite:///{procs.directory / 'shared.db'}"
        first = _gateway(ctx, procs, "gateway-a", hosts, ids, store_url=shared, reuse_port=True)
        providers = {"providers": hosts.pids}

        async def measure(gateways: list[GatewayProcess]) -> Run:
            load = GatewayLoad(env, first.address, channels=sizes.processes_channels)
            try:
                await _warm(load.lookup, times=sizes.processes_channels)
                pids = {g.process.name: [g.pid] for g in gateways}
                return await closed_loop(
                    load.lookup,
                    concurrency=concurrency,
                    duration=sizes.processes_seconds,
                    pids={**pids, **providers},
                )
            finally:
                await load.close()

        one = await measure([first])
        second = _gateway(
            ctx,
            procs,
            "gateway-b",
            hosts,
            ids,
            listen_port=first.port,
            store_url=shared,
            reuse_port=True,
        )
        two = await measure([first, second])
        procs.stop(second.process)
        one.add(await measure([first]))
    result.rows.append(
        Row(
            "2 processes",
            "throughput",
            "lookups/s",
            two.throughput,
            one.throughput,
            "1 process",
        ).judge()
    )
    share_b = two.cpu_s.get("gateway-b", 0.0)
    share_a = two.cpu_s.get("gateway-a", 0.0)
    result.details = {
        "one_process": _run_summary(one),
        "two_processes": _run_summary(two),
        "two_processes_cpu_share_b": round(share_b / (share_a + share_b), 2)
        if share_a + share_b
        else None,
    }
    return result


# -------------------------------------------------------------- notices


async def notices(ctx: Context) -> ScenarioResult:
    """One recycled-number notice pushed to N providers, until all acknowledged."""
    from bench._notices import run_notices  # noqa: PLC0415 - depends on the store layer

    return await run_notices(ctx)


# -------------------------------------------------------------- registry


async def registry(ctx: Context) -> ScenarioResult:
    """A registry change at one replica, until another replica applies it."""
    from bench._registry import run_registry  # noqa: PLC0415 - depends on the store layer

    return await run_registry(ctx)


async def enrollment(ctx: Context) -> ScenarioResult:
    """1,000 providers join at once (token, CSR, gate): until all are active, two replicas."""
    from bench._enrollment import run_enrollment  # noqa: PLC0415 - depends on the store layer

    return await run_enrollment(ctx)


async def notice_day(ctx: Context) -> ScenarioResult:
    """A day of recycled-number events, compressed, routed to 20,000 registered providers."""
    from bench._notice_day import run_notice_day  # noqa: PLC0415 - depends on the store layer

    return await run_notice_day(ctx)


# -------------------------------------------------------------- portal


async def portal(ctx: Context) -> ScenarioResult:
    """What the citizen's portal adds to a lookup, measured from headless Chromium."""
    from bench._portal import run_portal  # noqa: PLC0415 - needs onecert[portal] and a browser

    return await run_portal(ctx)


SCENARIOS: dict[str, Scenario] = {
    "overhead": overhead,
    "tail": tail,
    "growth": growth,
    "notices": notices,
    "notice_day": notice_day,
    "memory": memory,
    "processes": processes,
    "portal": portal,
    "registry": registry,
    "enrollment": enrollment,
}


async def run_scenario(name: str, ctx: Context) -> ScenarioResult:
    """Run one scenario; a failure becomes the result's ``error``, not an exception."""
    started = time.perf_counter()
    try:
        result = await SCENARIOS[name](ctx)
    except Exception as exc:  # noqa: BLE001 - one broken scenario must not sink the run
        result = ScenarioResult(name, name, error=f"{type(exc).__name__}: {exc}")
    result.elapsed_s = round(time.perf_counter() - started, 1)
    return result
