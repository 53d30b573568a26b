"""``python -m bench [--quick] [--only NAME,...]``: run the benchmarks, print the table."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench._cluster import BenchSetup
from bench._report import ScenarioResult, document, table, write
from bench._scenarios import FULL, QUICK, SCENARIOS, Context, run_scenario

RESULTS = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the onecert gateway against the bare gRPC floor.",
    )
    parser.add_argument("--quick", action="store_true", help="every scenario, small (< 1 min)")
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated scenarios to run (of {', '.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="where latest.json and its copy go"
    )
    parser.add_argument(
        "--workdir", type=Path, help="keys, configs and logs (default: a temporary directory)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (kept anyway on failure)"
    )
    parser.add_argument(
        "--pg-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        help="PostgreSQL for the notices and registry scenarios ('' to skip it)",
    )
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every scenario's processes are ended.
    raise KeyboardInterrupt


async def _run(names: list[str], ctx: Context) -> list[ScenarioResult]:
    results = []
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        result = await run_scenario(name, ctx)
        status = f"failed: {result.error}" if result.error else "done"
        print(f"[bench] {name} {status} in {result.elapsed_s:.1f} s", file=sys.stderr, flush=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = list(SCENARIOS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="onecert-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    mode = "quick" if args.quick else "full"
    ctx = Context(
        env=BenchSetup(workdir),
        sizes=QUICK if args.quick else FULL,
        directory=workdir,
        pg_url=args.pg_url or None,
    )
    results = asyncio.run(_run(names, ctx))
    notes = [
        "gateway in development mode (dev_plaintext = true): plaintext client and providers "
        "unless a row says mTLS; JSON logs at info level, as in production",
        "providers: demo adapters on the SDK, many per host process (bench/_host.py), "
        "in processes of their own; gateway: `onecert gateway serve`; load: this process",
        "the machine is shared: compare ratios from the same run, not absolute figures",
        f"run took {time.perf_counter() - clock:.0f} s",
    ]
    doc = document(results, mode=mode, notes=notes, started=started)
    paths = write(doc, args.out, started)
    print(table(doc))
    print(f"\nwritten: {', '.join(str(p) for p in paths)}")
    failed = [r.name for r in results if r.error]
    if failed or args.keep or args.workdir:
        print(f"work directory (keys, configs, logs): {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
