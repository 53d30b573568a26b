"""False-positive rates of small routing filters, by format, against the theory.

``python -m bench.routing_fp [--filters 100] [--queries 200000] [--json FILE]``
builds filters of a few sizes with the SDK's builder (format 1: double hashing
``mod m``; format 2: the same values mixed before ``mod m``), asks each about
random elements and prints the share said "maybe" next to the rate the sizing
promises, ``(1 - e^(-k n / m))^k``. Also measured: enhanced double hashing
(Dillinger and Manolios, 2004), the alternative format 2 did not take. Needs
numpy. One process, no gateway; a few seconds per case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from onecert.sdk._filter import ELEMENT_BYTES, element_positions
from onecert.sdk.routing import FilterBuilder, bits_for, expected_fp_rate, routing_digest

KEY = bytes(range(32))
# (numbers, k): the SDK's small-set rate (0.01%, k = 14) at the growth
# benchmark's size and ten times it, and its large-set rate (1%, k = 7).
CASES = ((101, 14), (1_000, 14), (101, 7))


def _enhanced(elements: bytes, m: int, k: int) -> npt.NDArray[np.int64]:
    """Enhanced double hashing: ``h1 + i h2 + (i^3 - i) / 6``, mod ``m``."""
    words = np.frombuffer(elements, dtype="<u8").reshape(-1, 2).astype(np.uint64)
    steps = np.arange(k, dtype=np.uint64)[np.newaxis, :]
    cubes = np.array([(i**3 - i) // 6 for i in range(k)], dtype=np.uint64)[np.newaxis, :]
    values = words[:, 0:1] + steps * (words[:, 1:2] | np.uint64(1)) + cubes
    return (values & np.uint64(m - 1)).reshape(-1).astype(np.int64)


def _rate(scheme: str, *, numbers: int, k: int, filters: int, queries: int) -> float:
    rng = np.random.default_rng(7)
    m = bits_for(numbers, k)
    hits = 0
    for f in range(filters):
        members = [f"+86150{f:03d}{i:05d}" for i in range(numbers)]
        if scheme == "enhanced":
            elements = b"".join(routing_digest(KEY, n)[:ELEMENT_BYTES] for n in members)
            column = np.zeros(m, dtype=bool)
            column[_enhanced(elements, m, k)] = True
        else:
            builder = FilterBuilder(KEY, key_version=1, m=m, k=k, fmt=int(scheme))
            builder.add_many(members)
            raw = np.frombuffer(builder.snapshot(created_at=0).bits, dtype=np.uint8)
            column = np.unpackbits(raw, bitorder="little").astype(bool)
        probes = rng.integers(0, 256, size=16 * queries, dtype=np.uint8).tobytes()
        if scheme == "enhanced":
            positions = _enhanced(probes, m, k)
        else:
            positions = element_positions(probes, m, k, int(scheme))
        hits += int(column[positions.reshape(queries, k)].all(axis=1).sum())
    return hits / (filters * queries)


def measure(filters: int, queries: int) -> list[dict[str, Any]]:
    """Each case's theoretical rate and the rate measured per scheme."""
    out = []
    for numbers, k in CASES:
        m = bits_for(numbers, k)
        row: dict[str, Any] = {
            "numbers": numbers,
            "k": k,
            "m": m,
            "theory": expected_fp_rate(m, k, numbers),
        }
        for scheme in ("1", "2", "enhanced"):
            name = {"1": "format_1", "2": "format_2", "enhanced": "enhanced_double_hashing"}
            row[name[scheme]] = _rate(
                scheme, numbers=numbers, k=k, filters=filters, queries=queries
            )
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_fp", description=__doc__)
    parser.add_argument("--filters", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200_000, help="per filter")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = measure(args.filters, args.queries)
    for row in rows:
        print(
            f"{row['numbers']:>6} numbers, k = {row['k']:>2}, m = {row['m']:>6}: "
            f"theory {row['theory']:.2e}, format 1 {row['format_1']:.2e}, "
            f"format 2 {row['format_2']:.2e}, enhanced {row['enhanced_double_hashing']:.2e}"
        )
    print(f"{args.filters} filters x {args.queries} queries per case, "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    if args.json:
        report = {"filters": args.filters, "queries_per_filter": args.queries, "cases": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
