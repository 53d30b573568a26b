"""The enrollment scenario: many providers join at once (token, CSR, gate).

Two gateway replicas share one store (PostgreSQL with ``--pg-url``, in a
schema of its own; else a SQLite file). They run in the benchmark's process
(``GatewayServer``, mutual TLS with the dev CA as the federation CA), so
replica B's view of the registry is read where it changes: B tells when it
applied each provider as active. Replica A serves the join listener and the
gate, at its default concurrency (``enrollment.max_concurrent_gates``).

The providers are real SDK servers, each on its own port with its own key
pair and certificate, spread over host processes (``bench/_join_host.py``).
All at once the regulator invites every provider (``store.registry.invite``),
each joins with its token and a CSR, serves the certificate it got and asks
for activation; the gate runs the conformance kit against it. Reported:

* the time from the moment every provider holds its token (the regulator
  invited them all just before) until every provider is active;
* per provider, from its join to its activation (the gate, queueing included);
* registry-change propagation: from the moment replica A answered "active"
  to the moment replica B applied that provider as active (bounded by
  ``registry.poll_interval_s``, 2 s by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging as logging_module
import os
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from bench._load import percentile
from bench._procs import (
    Process,
    Processes,
    cpu_seconds,
    read_json,
    wait_json_file,
    write_json,
)
from bench._registry import PROMISE_S
from bench._report import Row, ScenarioResult
from onecert.gateway import GatewayServer
from onecert.gateway._config import DeliveryConfig, EnrollmentConfig, NoticesConfig
from onecert.gateway._registry import RegistryChange
from onecert.gateway.store import Store
from onecert.gateway.store.testing import Database
from onecert.gateway.testing import Federation, FederationKeys, enrollment_config

if TYPE_CHECKING:
    from bench._scenarios import Context

_READY_S = 300.0
_SQLITE_BUSY_MS = 30_000
# Invitations in flight at once (a regulator's console, not a burst: the store's pool).
_INVITES_AT_ONCE = 4
# How long B may take to apply the last activations once every provider is active.
_FOLLOW_S = 30.0


async def run_enrollment(ctx: Context) -> ScenarioResult:
    """Every provider joins and is activated at once; the figures."""
    n, hosts = ctx.sizes.enrollment_n, ctx.sizes.enrollment_hosts
    store = "PostgreSQL" if ctx.pg_url else "SQLite"
    result = ScenarioResult(
        "enrollment",
        f"{n} providers join at once (token, CSR, gate), two replicas on {store}",
        params={"providers": n, "provider_hosts": hosts, "store": store.lower()},
    )
    result.notes += [
        "each provider: its own key pair, CSR, certificate and SDK server over mutual TLS; "
        f"served by {hosts} host processes; both gateway replicas in the benchmark's process",
        "the gate: the conformance kit (about 90 calls over one channel) against each "
        "provider, at the default gate concurrency; a request finding every slot busy waits",
        "the join listener's rate limit is raised for the burst (joins_per_s, join_burst); "
        "it serves its default 16 joins at once, a provider told RESOURCE_EXHAUSTED joins "
        "again after the hint; "
        "the clock starts once every provider holds its token (inviting them all first "
        "takes invite_all_s, in the details)",
        "the replicas log at warning level (they share this process with the benchmark)",
        f"propagation: replica A answers 'active' -> replica B applies it; target: within "
        f"{PROMISE_S:g} s (the documented promise)",
    ]
    if not ctx.pg_url:
        result.notes.append(
            "PostgreSQL skipped (no --pg-url): SQLite, both replicas on one file "
            "(busy_timeout 30 s)"
        )
    logging = structlog.get_config()
    # The replicas run in this process: their info lines would flood the terminal.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging_module.WARNING))
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(structlog.configure, **logging)
        database = (
            await stack.enter_async_context(Database.postgres(ctx.pg_url))
            if ctx.pg_url
            else Database.sqlite(ctx.directory / "enrollment" / "store.db")
        )
        with Processes(ctx.directory / "enrollment") as procs:
            figures = await _measure(ctx, procs, database, n, hosts)
    result.details = figures
    case = f"N={n} {store}"
    result.rows += [
        Row(case, "all active", "s", figures["all_active_s"]),
        Row(case, "join to active p50", "s", figures["join_to_active_p50_s"]),
        Row(case, "join to active p99", "s", figures["join_to_active_p99_s"]),
        Row(
            case,
            "propagation to the other replica p99",
            "s",
            figures["propagation_p99_s"],
            target=f"<= {PROMISE_S:g}",
            target_on="value",
        ).judge(),
    ]
    return result


class _Follow:
    """When replica B first applied each provider as active (``time.monotonic()``)."""

    def __init__(self, ids: list[str]) -> None:
        self.seen: dict[str, float] = {}
        self._ids = set(ids)
        self.all_seen = asyncio.Event()

    def __call__(self, change: RegistryChange) -> None:
        now = time.monotonic()
        for provider in change.providers:
            if provider.id in self._ids:
                self.seen.setdefault(provider.id, now)
        if len(self.seen) == len(self._ids):
            self.all_seen.set()


async def _replicas(
    fed: Federation, database: Database, n: int
) -> tuple[GatewayServer, GatewayServer, Store]:
    # The listener's rate limit lets the whole burst in; it still serves its
    # default number of joins at once (more wait, told RESOURCE_EXHAUSTED), and
    # the gate keeps its defaults.
    enrollment = enrollment_config(
        fed.keys,
        joins_per_s=10_000.0,
        join_burst=max(40, n),
        # The gate's defaults, not the test helper's short deadlines.
        gate_timeout_s=EnrollmentConfig.gate_timeout_s,
        gate_call_timeout_s=EnrollmentConfig.gate_call_timeout_s,
    )
    # SQLite: two replicas share one file's write lock; on a loaded machine a
    # writer may wait longer than the default 5 s for it (PostgreSQL is what
    # replicas are meant to share).
    busy_ms = _SQLITE_BUSY_MS if database.dialect == "sqlite" else 5000
    store = database.open(busy_timeout_ms=busy_ms)
    await store.upgrade()
    # Production defaults for the background workers (the harness makes them poll fast).
    config = fed.config(
        store=None, enrollment=enrollment, delivery=DeliveryConfig(), notices=NoticesConfig()
    )
    a = await fed.gateway(config, server_options={"store": store})
    # Replica B: its own connections to the same database, no join listener.
    b = await fed.gateway(
        replace(config, enrollment=None),
        server_options={"store": database.open(busy_timeout_ms=busy_ms)},
    )
    return a, b, store


def _start_hosts(
    procs: Processes, keys: FederationKeys, ids: list[str], hosts: int
) -> list[tuple[Process, Path, Path]]:
    """Host processes serving ``ids``; (process, go file, out file) each, once all listen."""
    started = []
    for h in range(hosts):
        name = f"join-host-{h}"
        spec, ready, go, out = (
            procs.directory / f"{name}.{k}.json" for k in ("spec", "ready", "go", "out")
        )
        for path in (ready, go, out):
            path.unlink(missing_ok=True)
        body: dict[str, Any] = {
            "keys": str(keys.dev.directory),
            "work": str(procs.directory / name),
            "ids": ids[h::hosts],
        }
        spec.write_text(json.dumps(body), encoding="utf-8")
        args = [str(f) for f in (spec, ready, go, out)]
        started.append((procs.python(name, "-m", "bench._join_host", *args), ready, go, out))
    for process, ready, _, _ in started:
        wait_json_file(process, ready, _READY_S)
    return [(process, go, out) for process, _, go, out in started]


async def _measure(
    ctx: Context, procs: Processes, database: Database, n: int, hosts: int
) -> dict[str, Any]:
    keys = FederationKeys.load(ctx.env.keys)
    ids = [f"join-{i:04d}" for i in range(n)]
    follow = _Follow(ids)
    async with Federation(keys, procs.directory / "federation", tls=True) as fed:
        await fed.carrier()
        a, b, store = await _replicas(fed, database, n)
        assert a.enrollment is not None
        assert b.registry is not None
        b.registry.subscribe(follow)
        host_list = await asyncio.to_thread(_start_hosts, procs, keys, ids, hosts)
        invited = time.monotonic()
        tokens = await _invite(store, ids)
        cpu = {"gateways": cpu_seconds(os.getpid()), "hosts": _hosts_cpu(host_list)}
        started = time.monotonic()
        go = {"gateway": f"127.0.0.1:{a.enrollment.port}"}
        for h, (_, go_file, _) in enumerate(host_list):
            write_json(go_file, {**go, "tokens": {i: tokens[i] for i in ids[h::hosts]}})
        outs = [await _wait_out(p, out) for p, _, out in host_list]
        cpu = {
            "gateways": cpu_seconds(os.getpid()) - cpu["gateways"],
            "hosts": _hosts_cpu(host_list) - cpu["hosts"],
        }
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follow.all_seen.wait(), _FOLLOW_S)
        await store.close()
    figures = _figures(n, started, outs, follow, cpu)
    figures["invite_all_s"] = _s(started - invited)
    return figures


def _hosts_cpu(host_list: list[tuple[Process, Path, Path]]) -> float:
    return sum(cpu_seconds(p.pid) for p, _, _ in host_list)


async def _invite(store: Store, ids: list[str]) -> dict[str, str]:
    """The regulator invites every provider, a few at a time; each one's token."""
    slots = asyncio.Semaphore(_INVITES_AT_ONCE)

    async def one(provider_id: str) -> str:
        async with slots:
            invitation = await store.registry.invite(
                provider_id,
                name=provider_id,
                category="forum",
                ttl=timedelta(hours=1),
                actor="admin:regulator",
            )
        return invitation.token

    tokens = await asyncio.gather(*(one(i) for i in ids))
    return dict(zip(ids, tokens, strict=True))


async def _wait_out(process: Process, out: Path) -> dict[str, Any]:
    # The gateways serve on this loop: wait without blocking it.
    while (data := await asyncio.to_thread(read_json, out)) is None:
        if not process.alive():
            raise process.failure("exited before it reported")
        await asyncio.sleep(0.1)
    return data


def _s(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _figures(
    n: int, started: float, outs: list[dict[str, Any]], follow: _Follow, cpu: dict[str, float]
) -> dict[str, Any]:
    times: dict[str, dict[str, Any]] = {}
    for out in outs:
        times.update(out["times"])
    errors = [e for out in outs for e in out["errors"]]
    error_count = sum(out["error_count"] for out in outs)
    if error_count or len(times) != n:
        raise RuntimeError(f"{error_count} of {n} providers did not become active: {errors}")
    actives = [t["active"] for t in times.values()]
    join_to_active = [t["active"] - t["joined"] for t in times.values()]
    propagation = [
        max(0.0, follow.seen[i] - t["active"]) for i, t in times.items() if i in follow.seen
    ]
    return {
        "providers": n,
        "all_active_s": _s(max(actives) - started),
        "join_to_active_p50_s": _s(percentile(join_to_active, 50)),
        "join_to_active_p99_s": _s(percentile(join_to_active, 99)),
        "first_join_s": _s(min(t["joined"] for t in times.values()) - started),
        "last_join_s": _s(max(t["joined"] for t in times.values()) - started),
        "propagation_p50_s": _s(percentile(propagation, 50)),
        "propagation_p99_s": _s(percentile(propagation, 99)),
        "propagation_max_s": _s(max(propagation, default=None)),
        "not_seen_by_b": n - len(propagation),
        "activation_refused": sum(t["refused"] for t in times.values()),
        "join_refused": sum(t["join_refused"] for t in times.values()),
        "unavailable_then_retried": sum(t["unavailable"] for t in times.values()),
        "gates_failed_then_passed": sum(1 for t in times.values() if t["failed_checks"]),
        "checks_failed_on_the_way": sorted({c for t in times.values() for c in t["failed_checks"]}),
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "cpu_ms_per_provider": {k: round(1000 * v / n, 1) for k, v in cpu.items()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
