"""``python -m bench.enrollment``: many providers join at once (token, CSR, gate).

Two gateway replicas share one store (PostgreSQL with ``--pg-url``, else a
SQLite file); replica A serves the join listener and the gate. ``--providers``
SDK providers (served in this process, each on its own port over mutual TLS
with the certificate it gets) are invited, join with their token and a CSR,
and ask for activation (a provider told RESOURCE_EXHAUSTED because too many
gates run comes back after the hint), all at once. Reported:

* the time from the first invitation until every provider is active;
* per provider: join latency, activation latency (the gate, queueing included);
* registry-change propagation: from the moment replica A answered "active" to
  the moment replica B applied that provider as active (p50, p99), which is
  bounded by ``registry.poll_interval_s``.

Every figure depends on the machine: print ``uptime`` beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from onecert.gateway import GatewayServer
from onecert.gateway._registry import RegistryChange
from onecert.gateway.enrollment.testing import invite_and_join, serve_for_join
from onecert.gateway.store import Store
from onecert.gateway.store.testing import Database
from onecert.gateway.testing import Federation, FederationKeys, enrollment_config
from onecert.sdk import Server
from onecert.sdk.client import ProviderGatewayClient, ProviderStatus, RateLimitedError
from onecert.sdk.testing import empty_provider

# A provider asks again after a failed gate, this many times at most.
_GATE_ATTEMPTS = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.enrollment", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--providers", type=int, default=1000, help="how many join (1000)")
    parser.add_argument("--gates", type=int, default=16, help="gate runs at once (16)")
    parser.add_argument("--pg-url", default="", help="PostgreSQL for both replicas (else SQLite)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here too")
    return parser


@dataclass
class _Times:
    """What happened to one provider, in ``time.perf_counter()`` seconds."""

    joined: float = 0.0
    active: float = 0.0
    seen_by_b: float = 0.0
    gate_s: float = 0.0
    retries: int = 0
    # Checks that failed in gates run again (a check of deadlines can miss on a loaded machine).
    failed_checks: list[str] = field(default_factory=list)


@dataclass
class _Run:
    times: dict[str, _Times] = field(default_factory=dict)
    all_seen: asyncio.Event = field(default_factory=asyncio.Event)

    def follow(self, change: RegistryChange) -> None:
        """Replica B applied a registry version: note who it sees active, first time."""
        now = time.perf_counter()
        for provider in change.providers:
            entry = self.times.get(provider.id)
            if entry is not None and not entry.seen_by_b:
                entry.seen_by_b = now
        if all(t.seen_by_b for t in self.times.values()):
            self.all_seen.set()


async def _activate(client: ProviderGatewayClient, times: _Times) -> None:
    started = time.perf_counter()
    while True:
        try:
            result = await client.request_activation(timeout=300)
        except RateLimitedError as exc:
            times.retries += 1
            await asyncio.sleep(exc.retry_after or 0.5)
            continue
        if result.status is not ProviderStatus.ACTIVE:
            failures = [] if result.gate is None else list(result.gate.failures)
            times.failed_checks += [f.split(":")[0] for f in failures] or [result.summary]
            if len(times.failed_checks) > _GATE_ATTEMPTS:
                raise RuntimeError(f"not activated: {result.summary}: {failures}")
            continue
        times.active = time.perf_counter()
        times.gate_s = times.active - started
        return


async def _one(
    provider_id: str, gateway: GatewayServer, store: Store, keys: FederationKeys, work: Path
) -> tuple[Server, _Times]:
    times = _Times()
    server = await serve_for_join(
        empty_provider(provider_id, category="forum"), keys.dev, work / provider_id
    )
    joined = await invite_and_join(
        gateway,
        store,
        keys.dev,
        provider_id=provider_id,
        directory=work / provider_id,
        address=server.address,
        timeout=300.0,
    )
    times.joined = time.perf_counter()
    credentials = joined.credentials
    async with ProviderGatewayClient(
        credentials.state().gateway_address, tls=credentials.gateway_tls()
    ) as client:
        await _activate(client, times)
    return server, times


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def _replicas(
    fed: Federation, database: Database, gates: int, providers: int
) -> tuple[GatewayServer, GatewayServer, Store]:
    enrollment = enrollment_config(
        fed.keys,
        max_concurrent_gates=gates,
        max_concurrent_joins=max(16, providers),
        joins_per_s=10_000.0,
        join_burst=max(40, providers),
        gate_timeout_s=300.0,
    )
    store = await database.open_upgraded()
    config = fed.config(store=None, enrollment=enrollment)
    a = await fed.gateway(config, server_options={"store": store})
    # Replica B: its own connections to the same database, no join listener.
    b_store = database.open()
    b = await fed.gateway(replace(config, enrollment=None), server_options={"store": b_store})
    return a, b, store


async def _measure(
    fed: Federation, work: Path, database: Database, providers: int, gates: int
) -> tuple[float, list[_Times]]:
    """Every provider joins and is activated at once; the time that took, and each one's."""
    a, b, store = await _replicas(fed, database, gates, providers)
    runs = _Run({f"site-{i:04d}": _Times() for i in range(providers)})
    assert b.registry is not None
    b.registry.subscribe(runs.follow)
    started = time.perf_counter()
    done = await asyncio.gather(*(_one(i, a, store, fed.keys, work) for i in runs.times))
    all_active = time.perf_counter() - started
    for provider_id, (_, measured) in zip(runs.times, done, strict=True):
        measured.seen_by_b = runs.times[provider_id].seen_by_b
        runs.times[provider_id] = measured
    if not all(t.seen_by_b for t in runs.times.values()):
        runs.all_seen.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runs.all_seen.wait(), 30)
    for server, _ in done:
        await server.shutdown(0)
    await store.close()
    return all_active, list(runs.times.values())


async def run(providers: int, gates: int, pg_url: str) -> dict[str, Any]:
    """Run the scenario; the figures."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory(prefix="onecert-bench-enroll-") as tmp:
        work = Path(tmp)
        keys = FederationKeys.create(work / "keys")
        async with contextlib.AsyncExitStack() as stack:
            # PostgreSQL: a schema of its own, dropped at the end.
            database = (
                await stack.enter_async_context(Database.postgres(pg_url))
                if pg_url
                else Database.sqlite(work / "store.db")
            )
            fed = await stack.enter_async_context(Federation(keys, work, tls=True))
            await fed.carrier()
            all_active, times = await _measure(fed, work, database, providers, gates)
    propagation = [max(0.0, t.seen_by_b - t.active) for t in times if t.seen_by_b]
    activation = [t.gate_s for t in times]
    return {
        "providers": providers,
        "store": "postgresql" if pg_url else "sqlite",
        "max_concurrent_gates": gates,
        "all_active_s": round(all_active, 2),
        "join_to_active_p50_ms": _ms(activation, 0.5),
        "join_to_active_p99_ms": _ms(activation, 0.99),
        "gate_retries": sum(t.retries for t in times),
        "gates_failed_then_passed": sum(1 for t in times if t.failed_checks),
        "checks_failed_on_the_way": sorted({c for t in times for c in t.failed_checks}),
        "propagation_p50_ms": _ms(propagation, 0.5) if propagation else None,
        "propagation_p99_ms": _ms(propagation, 0.99) if propagation else None,
        "propagation_max_ms": round(1000 * max(propagation), 1) if propagation else None,
        "not_seen_by_b": sum(1 for t in times if not t.seen_by_b),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    figures = asyncio.run(run(args.providers, args.gates, args.pg_url))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
