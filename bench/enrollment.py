"""``python -m bench.enrollment``: the enrollment scenario of ``make bench``, at any size.

``python -m bench --only enrollment`` runs it at 1,000 providers (``--quick``:
50); this entry point takes ``--providers`` and ``--hosts`` (provider host
processes) and prints the figures as JSON (``--json FILE`` keeps them). See
:mod:`bench._enrollment` for what is measured.

Every figure depends on the machine: print ``uptime`` beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from bench._cluster import BenchSetup
from bench._enrollment import run_enrollment
from bench._scenarios import FULL, Context


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.enrollment", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--providers", type=int, default=FULL.enrollment_n, help="how many join")
    parser.add_argument(
        "--hosts", type=int, default=FULL.enrollment_hosts, help="provider host processes"
    )
    parser.add_argument("--pg-url", default="", help="PostgreSQL for both replicas (else SQLite)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here too")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="onecert-bench-enroll-"))
    try:
        ctx = Context(
            env=BenchSetup(workdir),
            sizes=replace(FULL, enrollment_n=args.providers, enrollment_hosts=args.hosts),
            directory=workdir,
            pg_url=args.pg_url or None,
        )
        result = asyncio.run(run_enrollment(ctx))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(asdict(result), indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
