"""Two or more gateway builds on the same providers, interleaved: an A/B in one load.

``python -m bench.ab --build base=DIR --build new=. [--n 10] [--hang 0]``
starts provider hosts and a carrier as the benchmark does, then one
``onecert gateway serve`` per build: ``DIR`` is a source tree (a checkout or
``git archive`` of another commit) whose packages come first on the
gateway's ``PYTHONPATH``. Lookups run through each build in turn, round after
round (and through the floor with ``--floor``), so a shared machine's load
falls on all of them alike. Printed per build: lookups/s, latency p50/p90/p99,
lookups that ended past the provider deadline + 50 ms (with ``--hang``), CPU
per lookup of the gateway, the client and the providers, stream messages per
lookup, and the gateway's own split of a lookup from its JSON log lines
(identity; carriers and the replay write; the fan-out to the summary; the
audit row and the stream's end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._cluster import (
    CARRIER_ID,
    BenchSetup,
    ProviderSpec,
    provider_ids,
    start_hosts,
    write_gateway_config,
)
from bench._load import FloorLoad, GatewayLoad, LookupFn, Run, closed_loop, percentile
from bench._procs import Process, Processes, wait_gateway_port

_ROOT = Path(__file__).resolve().parent.parent
_PACKAGES = ("gateway", "sdk", "cli", "adapters", "portal", "proto")
_PHASES = (
    ("identity", "rpc", "lookup.identified"),
    ("carriers + replay write", "lookup.identified", "lookup.started"),
    ("fan-out to summary", "lookup.started", "lookup.finished"),
    ("audit row + stream end", "lookup.finished", "rpc.finished"),
)


def _start(procs: Processes, name: str, source: Path, config: Path) -> Process:
    path = os.pathsep.join([*(str(source / p) for p in _PACKAGES), str(_ROOT)])
    argv = ["env", f"PYTHONPATH={path}", sys.executable, "-m", "onecert.cli"]
    return procs.spawn(name, [*argv, "gateway", "serve", "--config", str(config)])


def phases(log: Path, skip: int = 5) -> dict[str, list[float]]:
    """Per phase of a lookup (:data:`_PHASES`), its milliseconds in each lookup of ``log``."""
    events: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            if row.get("query_id"):
                events[row["query_id"]].setdefault(row["event"], row)
    out: dict[str, list[float]] = {name: [] for name, _, _ in _PHASES}
    for seen in list(events.values())[skip:]:
        if not all(e in seen for _, _, e in _PHASES):
            continue
        end = seen["rpc.finished"]
        times = {e: _ms(seen[e]["timestamp"]) for _, _, e in _PHASES}
        times["rpc"] = _ms(end["timestamp"]) - end["elapsed_ms"]
        for name, start, stop in _PHASES:
            out[name].append(times[stop] - times[start])
    return out


def _ms(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp() * 1000


def _report(name: str, runs: Sequence[Run], deadline: float | None) -> str:
    lat = [s.latency for r in runs for s in r.samples]
    count = len(lat) or 1
    wall = sum(r.wall_s for r in runs) or 1.0
    cpu = {k: sum(r.cpu_s.get(k, 0.0) for r in runs) / count * 1000 for k in runs[0].cpu_s}

    def q(p: float) -> str:
        value = percentile(lat, p)
        return "-" if value is None else f"{value * 1000:.1f}"

    messages = sum(s.messages for r in runs for s in r.samples) / count
    late = (
        "" if deadline is None else f" past deadline+50ms {sum(x > deadline + 0.05 for x in lat)}"
    )
    cpus = " ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items()))
    return (
        f"{name}: {len(lat)} lookups, {len(lat) / wall:.2f}/s, ms p50 {q(50)} p90 {q(90)} "
        f"p99 {q(99)}{late}; CPU ms per lookup: {cpus}; stream messages per lookup "
        f"{messages:.1f}"
    )


async def _main(args: argparse.Namespace) -> None:
    directory = args.workdir or Path(tempfile.mkdtemp(prefix="onecert-ab-"))
    env = BenchSetup(directory)
    healthy = provider_ids("ab", args.n - args.hang)
    hung = provider_ids("ab-hang", args.hang)
    specs = [ProviderSpec(p) for p in healthy] + [ProviderSpec(p, delay_s=3600.0) for p in hung]
    fanout: dict[str, float | int] = {"breaker_failure_threshold": 1_000_000}
    if args.deadline:
        fanout["provider_deadline_s"] = args.deadline
    with Processes(directory / "procs") as procs:
        hosts = start_hosts(env, procs, "ab", specs, hosts=2, carrier=True)
        modes: dict[str, tuple[LookupFn, dict[str, list[int]]]] = {}
        loads: list[GatewayLoad | FloorLoad] = []
        for build in args.build:
            name, _, source = build.partition("=")
            config = write_gateway_config(
                env,
                procs.directory / f"gateway-{name}.toml",
                carrier_address=hosts.addresses[CARRIER_ID],
                providers=[(p, hosts.addresses[p]) for p in healthy + hung],
                fanout=fanout,
            )
            process = _start(procs, f"gateway-{name}", _ROOT / source, config)
            load = GatewayLoad(env, f"127.0.0.1:{wait_gateway_port(process, 120)}")
            loads.append(load)
            modes[name] = (load.lookup, {"gateway": [process.pid], "providers": hosts.pids})
        if args.floor:
            floor = FloorLoad(env, {p: hosts.addresses[p] for p in healthy})
            loads.append(floor)
            modes["floor"] = (floor.lookup, {"providers": hosts.pids})
        try:
            for fn, _ in modes.values():
                for _ in range(3):
                    await fn()
            runs: dict[str, list[Run]] = {name: [] for name in modes}
            for _ in range(args.rounds):
                for name, (fn, pids) in modes.items():
                    run = await closed_loop(
                        fn,
                        concurrency=args.concurrency,
                        count=None if args.seconds else args.lookups,
                        duration=args.seconds or None,
                        pids=pids,
                    )
                    runs[name].append(run)
        finally:
            await asyncio.gather(*(load.close() for load in loads))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, pooled in runs.items():
        print(_report(name, pooled, args.deadline if args.hang else None))
        log = directory / "procs" / f"gateway-{name}.log"
        if log.exists():
            for phase, values in phases(log).items():
                spread = " ".join(f"p{p} {_q(values, p)}" for p in (50, 90, 99))
                print(f"    {phase}: ms {spread}")


def _q(values: list[float], p: float) -> str:
    value = percentile(values, p)
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--build", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--n", type=int, default=10, help="providers per lookup")
    parser.add_argument("--hang", type=int, default=0, help="of which hang (tail)")
    parser.add_argument("--deadline", type=float, default=0.0, help="provider deadline, s")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--lookups", type=int, default=50, help="per build and round")
    parser.add_argument("--seconds", type=float, default=0.0, help="per round instead")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--floor", action="store_true", help="the bare floor too")
    parser.add_argument("--workdir", type=Path)
    asyncio.run(_main(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
