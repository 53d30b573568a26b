"""``python -m bench.routing_index``: the routing index at 20,000 providers and 100 million numbers.

Builds a :class:`~onecert.gateway.routing.RoutingIndex` of ``--providers``
providers whose sizes follow a Zipf law (rank ``r`` holds ``C / r**s``
numbers) totalling ``--total``, then routes ``--queries`` numbers, each really
held by ``--holders`` providers chosen at random, and reports:

* routing time per number (p50, p99), hashing under every live key included;
* the index's memory against the 300 MB budget, and what other layouts would take;
* the share of non-holders asked, against the filters' expected rate;
* that no holder was missed;
* the time to build a filter of ``--build`` numbers at the provider (pure Python).

The filters are synthesised, not hashed from 100 million numbers: each
provider's bits are ``k * n`` uniformly random positions of its ``m`` bits
(what a Bloom filter of ``n`` elements is, with ideal hashes). The numbers the
benchmark routes are then added to their holders through ``RoutingIndex.add``
with their real keyed elements, so routing itself runs on real digests.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from onecert.gateway.routing import RoutingIndex, RoutingKeyring
from onecert.gateway.routing._index import DEFAULT_PLAIN_FROM_BITS
from onecert.sdk._filter import HAVE_NUMPY, element_of
from onecert.sdk.routing import (
    DEFAULT_FP_RATE,
    SMALL_SET_BELOW,
    SMALL_SET_FP_RATE,
    FilterAdditions,
    RoutingFilter,
    bits_for,
    build_filter,
    expected_fp_rate,
    hashes_for,
)

BUDGET_BYTES = 300 * 10**6
INTERVAL_S = 86_400.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.routing_index", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--providers", type=int, default=20_000)
    parser.add_argument("--total", type=int, default=100_000_000, help="numbers over all")
    parser.add_argument("--zipf", type=float, default=1.2, help="exponent s of the size law")
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--holders", type=int, default=10, help="providers holding each number")
    parser.add_argument("--build", type=int, default=1_000_000, help="numbers in the built filter")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--plain-from", type=int, default=DEFAULT_PLAIN_FROM_BITS, help="bits from which plain"
    )
    parser.add_argument(
        "--small-fp",
        type=float,
        default=SMALL_SET_FP_RATE,
        help="false-positive rate of providers below --small-below numbers (default: the "
        "SDK's, 0.0001; 0.01 for the same as the others); false-positive calls count "
        "providers, memory counts numbers",
    )
    parser.add_argument(
        "--small-below",
        type=int,
        default=SMALL_SET_BELOW,
        help="what a small provider is (numbers; default: the SDK's, 100000)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser


def zipf_sizes(providers: int, total: int, s: float) -> list[int]:
    """Provider sizes ``C / r**s`` for ranks 1..providers, scaled to ``total``, at least 1."""
    weights = [r**-s for r in range(1, providers + 1)]
    scale = total / sum(weights)
    return [max(1, round(w * scale)) for w in weights]


def synthetic_filter(
    rng: np.random.Generator, n: int, k: int, version: int, check: bytes
) -> RoutingFilter:
    """A filter of ``n`` random elements: ``k * n`` random bit positions set."""
    m = bits_for(n, k)
    scratch = np.zeros(m, dtype=np.bool_)
    remaining = k * n
    while remaining:
        chunk = min(remaining, 1 << 24)
        scratch[rng.integers(0, m, size=chunk, dtype=np.int64)] = True
        remaining -= chunk
    bits = np.packbits(scratch, bitorder="little").tobytes()
    return RoutingFilter(
        key_version=version,
        key_check=check,
        m=m,
        k=k,
        count=n,
        created_at=int(time.time()),
        bits=bits,
    )


def layout_alternatives(sizes: list[int], ks: list[int], plain_from: int) -> dict[str, float]:
    """Bytes other layouts would take for the same filters (``ks``: each one's hashes)."""
    exact = sum(math.ceil(n * k / math.log(2)) for n, k in zip(sizes, ks, strict=True)) / 8
    pow2 = sum(bits_for(n, k) for n, k in zip(sizes, ks, strict=True)) / 8
    by_m: dict[int, int] = {}
    for n, k in zip(sizes, ks, strict=True):
        m = bits_for(n, k)
        by_m[m] = by_m.get(m, 0) + 1
    # A matrix of m rows takes a byte per row for every 8 columns or part of 8.
    all_sliced = sum(m * math.ceil(c / 8) for m, c in by_m.items())
    one_matrix = max(by_m) * math.ceil(len(sizes) / 8)
    chosen = sum((m * math.ceil(c / 8) if m < plain_from else m * c // 8) for m, c in by_m.items())
    return {
        "exact_m_bytes": exact,
        "pow2_m_bytes": pow2,
        "chosen_layout_bytes": chosen,
        "every_class_sliced_bytes": all_sliced,
        "one_matrix_at_largest_m_bytes": one_matrix,
    }


async def _numbers(count: int) -> AsyncIterator[str]:
    for i in range(count):
        yield f"+86139{i:08d}"


def _build_time(count: int, key: bytes) -> dict[str, float]:
    figures: dict[str, float] = {}
    runs = (
        ("one_pass_hint", count, HAVE_NUMPY),
        ("two_pass_no_hint", None, HAVE_NUMPY),
        ("one_pass_hint_pure_python", count, False),
    )
    for label, hint, fast in runs:
        started = time.perf_counter()
        cpu = time.process_time()
        result = asyncio.run(
            build_filter(
                lambda: _numbers(count), key=key, key_version=1, size_hint=hint, use_numpy=fast
            )
        )
        figures[f"{label}_s"] = time.perf_counter() - started
        figures[f"{label}_cpu_s"] = time.process_time() - cpu
        figures[f"{label}_passes"] = result.passes
        figures["bytes"] = len(result.filter.to_bytes())
    return figures


def python_loop_ms(rng: np.random.Generator, keyring: RoutingKeyring, providers: int) -> float:
    """Per number, a Python loop checking ``providers`` filters one by one (the rejected design).

    Measured over 2,000 filters of 10,000 numbers and scaled linearly.
    """
    sample = min(2000, providers)
    k = hashes_for(DEFAULT_FP_RATE)
    check = keyring.key_checks()[1]
    filters = [bytearray(synthetic_filter(rng, 10_000, k, 1, check).bits) for _ in range(sample)]
    m = len(filters[0]) * 8
    numbers = [f"+86188{i:08d}" for i in range(200)]
    started = time.perf_counter()
    for number in numbers:
        h1, h2 = element_of(keyring.digests(number)[1])
        for bits in filters:
            for i in range(k):
                p = (h1 + i * h2) & (m - 1)
                if not bits[p >> 3] >> (p & 7) & 1:
                    break
    elapsed = time.perf_counter() - started
    return elapsed / len(numbers) * 1e3 * providers / sample


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build, route, measure; returns the figures."""
    rng = np.random.default_rng(args.seed)
    pick = random.Random(args.seed)
    keyring = RoutingKeyring({1: bytes(range(32))}, active=1)
    check = keyring.key_checks()[1]
    k = hashes_for(DEFAULT_FP_RATE)
    sizes = zipf_sizes(args.providers, args.total, args.zipf)
    ks = [hashes_for(args.small_fp) if n < args.small_below else k for n in sizes]
    index = RoutingIndex(key_checks=keyring.key_checks(), plain_from_bits=args.plain_from)
    gc.collect()
    rss_before = _rss_bytes()

    started = time.perf_counter()
    ids = [f"p{r:05d}" for r in range(len(sizes))]
    for provider_id, n, n_k in zip(ids, sizes, ks, strict=True):
        index.register(provider_id, snapshot_interval=INTERVAL_S)
        index.put_snapshot(provider_id, synthetic_filter(rng, n, n_k, 1, check))
    build_s = time.perf_counter() - started
    gc.collect()
    rss_after = _rss_bytes()

    numbers = [f"+8617{pick.randrange(10**9):09d}" for _ in range(args.queries)]
    holders = [pick.sample(ids, args.holders) for _ in numbers]
    by_holder: dict[str, list[str]] = {}
    for number, chosen in zip(numbers, holders, strict=True):
        for provider_id in chosen:
            by_holder.setdefault(provider_id, []).append(number)
    for provider_id, held in by_holder.items():
        index.add(provider_id, FilterAdditions.of(keyring.key(1), 1, held))

    times: list[float] = []
    cpu: list[float] = []
    missed = 0
    non_holders_asked = 0
    for number, chosen in zip(numbers, holders, strict=True):
        t0 = time.perf_counter()
        c0 = time.thread_time()
        route = index.query(keyring.digests(number))
        cpu.append(time.thread_time() - c0)
        times.append(time.perf_counter() - t0)
        asked = route.asked()
        missed += sum(1 for p in chosen if p not in asked)
        non_holders_asked += len(asked) - sum(1 for p in chosen if p in asked)
    times.sort()
    cpu.sort()
    expected_fp = statistics.fmean(
        expected_fp_rate(bits_for(n, n_k), n_k, n) for n, n_k in zip(sizes, ks, strict=True)
    )
    layout = index.layout()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_1_5_15": os.getloadavg(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "params": {
            "providers": args.providers,
            "total_numbers": sum(sizes),
            "zipf": args.zipf,
            "largest": sizes[0],
            "smallest": sizes[-1],
            "queries": args.queries,
            "holders": args.holders,
            "k": k,
            "fp_rate": DEFAULT_FP_RATE,
            "small_fp_rate": args.small_fp,
            "small_below": args.small_below,
            "small_providers": sum(n < args.small_below for n in sizes),
        },
        "route_ms": {
            "p50": times[len(times) // 2] * 1e3,
            "p99": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3,
            "max": times[-1] * 1e3,
            "cpu_p50": cpu[len(cpu) // 2] * 1e3,
            "cpu_p99": cpu[min(len(cpu) - 1, int(len(cpu) * 0.99))] * 1e3,
            "mean": statistics.fmean(times) * 1e3,
        },
        "missed_holders": missed,
        "non_holder_share_asked": non_holders_asked / (len(numbers) * (len(ids) - args.holders)),
        "non_holders_asked_per_number": non_holders_asked / len(numbers),
        "expected_fp_rate_mean": expected_fp,
        "memory": {
            "index_bytes": index.memory_bytes(),
            "budget_bytes": BUDGET_BYTES,
            "rss_growth_bytes": rss_after - rss_before,
            "layout": layout,
            "alternatives": layout_alternatives(sizes, ks, args.plain_from),
        },
        "index_build_s": build_s,
        "python_loop_ms_per_number": python_loop_ms(rng, keyring, args.providers),
        "provider_build": _build_time(args.build, keyring.key(1)),
    }


def _print(figures: dict[str, Any]) -> None:
    mem = figures["memory"]
    mb = 1e-6
    route = figures["route_ms"]
    params = figures["params"]
    build = figures["provider_build"]
    lines = [
        f"routing index: {params['providers']} providers, {params['total_numbers']:,} numbers "
        f"(Zipf s={params['zipf']}: {params['largest']:,} .. {params['smallest']:,}), "
        f"k={params['k']}, p={params['fp_rate']} ({params['small_providers']} providers below "
        f"{params['small_below']:,} numbers at p={params['small_fp_rate']})",
        f"load (1/5/15 min): {', '.join(f'{x:.2f}' for x in figures['machine']['load_1_5_15'])} "
        f"on {figures['machine']['cores']} cores",
        f"route per number: p50 {route['p50']:.3f} ms, p99 {route['p99']:.3f} ms, "
        f"max {route['max']:.3f} ms, mean {route['mean']:.3f} ms (target <= 1 ms); "
        f"CPU p50 {route['cpu_p50']:.3f} ms, p99 {route['cpu_p99']:.3f} ms",
        f"holders missed: {figures['missed_holders']} (target 0)",
        f"non-holders asked: {figures['non_holder_share_asked']:.4%}, "
        f"{figures['non_holders_asked_per_number']:.1f} per number "
        f"(filters' expected {figures['expected_fp_rate_mean']:.4%}; target <= 2%)",
        f"index memory: {mem['index_bytes'] * mb:.1f} MB of {mem['budget_bytes'] * mb:.0f} MB "
        f"(RSS grew {mem['rss_growth_bytes'] * mb:.1f} MB); "
        f"{mem['layout']['matrices']} matrices with {mem['layout']['sliced']} columns "
        f"({mem['layout']['matrix_bytes'] * mb:.1f} MB), {mem['layout']['plain']} plain "
        f"({mem['layout']['plain_bytes'] * mb:.1f} MB)",
        "other layouts: "
        + ", ".join(f"{name} {value * mb:.1f} MB" for name, value in mem["alternatives"].items()),
        f"index built in {figures['index_build_s']:.1f} s; a Python loop over the "
        f"{params['providers']} filters would take {figures['python_loop_ms_per_number']:.1f} ms "
        "per number",
        f"provider builds {build['bytes']:,}-byte filter of {figures['provider_build_n']:,} "
        f"numbers: {build['one_pass_hint_s']:.2f} s ({build['one_pass_hint_cpu_s']:.2f} s CPU) "
        f"with a size hint (1 pass), {build['two_pass_no_hint_s']:.2f} s "
        f"({build['two_pass_no_hint_cpu_s']:.2f} s CPU) without (2 passes); numpy fast path "
        f"{'on' if HAVE_NUMPY else 'off'}; pure Python, 1 pass: "
        f"{build['one_pass_hint_pure_python_s']:.2f} s "
        f"({build['one_pass_hint_pure_python_cpu_s']:.2f} s CPU)",
    ]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Run and print; ``--json`` also writes the figures."""
    args = _parser().parse_args(argv)
    figures = run(args)
    figures["provider_build_n"] = args.build
    _print(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
