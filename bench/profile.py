"""Where a lookup's CPU goes: py-spy on a gateway process under sequential lookups.

``python -m bench.profile [--n 50] [--seconds 15]`` starts provider hosts, a
carrier and ``onecert gateway serve`` as the benchmark does, samples the
gateway with ``py-spy record`` while lookups run one at a time, and prints
the gateway's CPU per lookup split into parts of the lookup path. With
``--floor`` it samples the floor's bare client instead (this process, making
every provider's call at once, as ``make bench`` measures it), so the two
can be set side by side. Needs
``py-spy`` (``.venv/bin/pip install py-spy``) and permission to ptrace the
gateway (same user; no container restriction).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._cluster import (
    CARRIER_ID,
    BenchSetup,
    ProviderSpec,
    provider_ids,
    start_gateway,
    start_hosts,
    write_gateway_config,
)
from bench._load import FloorLoad, GatewayLoad, closed_loop
from bench._procs import Processes

# First matching rule wins; a stack is matched frame by frame from the leaf.
# (bucket, pattern on a frame name)
_RULES: tuple[tuple[str, str], ...] = (
    # Before durable state: the workers' polls run SQLAlchemy too, but by the
    # clock, not per lookup.
    (
        "background workers (tickets, notices, registry)",
        r"DeliveryWorkers|NoticePusher|Delivery\w*\._|Follower\._run",
    ),
    ("durable state (SQLite thread, SQLAlchemy)", r"aiosqlite|sqlalchemy|Store\.|StoreReplayCache"),
    ("audit log", r"Auditor\."),
    ("warrant signing (JWT, Ed25519)", r"WarrantIssuer\.issue"),
    ("gRPC client call (start, metadata)", r"UnaryUnaryMultiCallable|UnaryUnaryCall\.__init__"),
    ("gRPC client call (completion)", r"UnaryUnaryCall\._invoke"),
    ("stub creation per call", r"Stub\.__init__"),
    ("attribution, handles, result protos", r"ResultMerger\.|_shown_binding"),
    ("identity assertion check", r"AssertionVerifier|_identify"),
    ("carrier call", r"_ask_carrier|list_numbers"),
    (
        "fan-out supervision (deadline, slot, breaker)",
        r"FanOut\.|ProviderAnswers\.|_Expiry\.|as_completed",
    ),
    ("floor client: tasks and as_completed", r"FloorLoad\."),
    ("logging (structlog)", r"structlog"),
    (
        "lookup streaming (server handler, generators)",
        r"LookupService\.|_stream_with_context|_GatewayServicer|CallBoundary",
    ),
    ("event loop wait/dispatch (epoll)", r"EpollSelector\.select"),
    ("gRPC poller thread (C core)", r"^Thread\.run"),
    ("gRPC callbacks on the loop (Cython)", r"^Handle\._run"),
)


def buckets(collapsed: Path) -> tuple[int, dict[str, int]]:
    """Samples in each bucket of a py-spy ``--format raw`` file."""
    total = 0
    out: collections.Counter[str] = collections.Counter()
    compiled = [(name, re.compile(pattern)) for name, pattern in _RULES]
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        out[_classify(frames, compiled)] += samples
    return total, dict(out)


def _classify(frames: list[str], rules: list[tuple[str, re.Pattern[str]]]) -> str:
    for name, pattern in rules:
        if any(pattern.search(f) for f in frames):
            # The two catch-alls apply only where the frame is the leaf.
            if pattern.pattern.startswith("^") and not pattern.search(frames[-1]):
                continue
            return name
    return "other"


async def _spy(pid: int, seconds: float, out: Path, *, gil: bool) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *[
            shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(round(seconds)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            *(["--gil"] if gil else []),
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _profile(
    n: int, seconds: float, directory: Path, *, gil: bool = False, floor: bool = False
) -> None:
    env = BenchSetup(directory)
    ids = provider_ids("pf", n)
    with Processes(directory / "procs") as procs:
        hosts = start_hosts(env, procs, "pf", [ProviderSpec(p) for p in ids], hosts=2, carrier=True)
        load: GatewayLoad | FloorLoad
        if floor:
            # The floor's client is this process: it is what py-spy samples.
            load = FloorLoad(env, {p: hosts.addresses[p] for p in ids})
            pid, label, who = os.getpid(), "client", "floor client"
        else:
            config = write_gateway_config(
                env,
                directory / "gateway.toml",
                carrier_address=hosts.addresses[CARRIER_ID],
                providers=[(p, hosts.addresses[p]) for p in ids],
            )
            gateway = start_gateway(procs, "gateway", config)
            load = GatewayLoad(env, gateway.address)
            pid, label, who = gateway.pid, "gateway", "gateway"
        out = directory / f"{label}.collapsed"
        try:
            for _ in range(5):
                await load.lookup()
            spy = await _spy(pid, seconds, out, gil=gil)
            run = await closed_loop(
                load.lookup, concurrency=1, duration=seconds, pids={label: [pid]}
            )
            await spy.wait()
        finally:
            await load.close()
    cpu = run.cpu_per_lookup_ms(label) or 0.0
    total, parts = buckets(out)
    print(f"N={n}: {run.count} lookups, {who} CPU {cpu:.2f} ms per lookup ({total} samples)")
    for name, samples in sorted(parts.items(), key=lambda kv: -kv[1]):
        share = samples / total if total else 0.0
        print(f"  {share * 100:5.1f}%  {share * cpu:6.2f} ms  {name}")
    print(f"raw stacks: {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--n", type=int, default=50, help="providers per lookup")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL (Python CPU; leaves out threads "
        "waiting in SQLite or the gRPC core)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="profile the floor's bare client (this process) instead of the gateway",
    )
    args = parser.parse_args(argv)
    directory = args.workdir or Path(tempfile.mkdtemp(prefix="onecert-profile-"))
    asyncio.run(_profile(args.n, args.seconds, directory, gil=args.gil, floor=args.floor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
