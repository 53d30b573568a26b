"""Overload: more lookups than the gateway's cap are refused at once with
RESOURCE_EXHAUSTED, and the lookups it admits still complete in their usual time.

A gateway process with ``max_concurrent_lookups = CAP`` in front of a carrier and
one provider that takes ``LATENCY`` seconds to list a number's accounts, so the
gateway can finish about ``CAP / LATENCY`` lookups a second. A load generator
task first drives exactly ``CAP`` lookups at a time (the baseline), then offers
``OVERLOAD_FACTOR`` times the capacity as an open stream of arrivals, each a
fresh citizen's assertion. Latencies (to the summary, or to the refusal) are
reported, not asserted: the assertions are the behaviour.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from onecert.gateway.store.testing import Database
from onecert.sdk.client import CallOutcome, GatewayClient, GatewayError, Result, Summary
from onecert.sdk.devkeys import DevKeys
from stress.stress_support import (
    Catalogue,
    Citizen,
    Identity,
    Upstreams,
    env_float,
    percentile,
    record_result,
    seeded,
)

CAP = 4
LATENCY = 0.4
OVERLOAD_FACTOR = 5.0
BASELINE_S = env_float("ONECERT_OVERLOAD_BASELINE_SECONDS", 8.0)
OVERLOAD_S = env_float("ONECERT_OVERLOAD_SECONDS", 20.0)
# Arrivals still waiting for an answer at once, at most (a bound on the
# generator's own memory, far above what the gateway admits).
MAX_OUTSTANDING = 400


@dataclass(frozen=True)
class Outcome:
    """How one lookup ended, seen by the caller."""

    phase: str
    status: str
    seconds: float
    answered: bool


class LoadGenerator:
    """Lookups through ``GatewayClient``, each with a fresh assertion."""

    def __init__(self, target: str, identity: Identity, citizens: list[Citizen]) -> None:
        self._client = GatewayClient(target, insecure=True)
        self._identity = identity
        self._citizens = citizens
        self._rng = seeded(7)
        self.outcomes: list[Outcome] = []

    async def lookup(self, phase: str) -> None:
        citizen = self._rng.choice(self._citizens)
        assertion = self._identity.assertion(citizen)
        started = time.monotonic()
        results: list[Result] = []
        summary: Summary | None = None
        try:
            async for update in self._client.lookup(assertion, timeout=15.0):
                if isinstance(update, Result):
                    results.append(update)
                elif isinstance(update, Summary):
                    summary = update
        except GatewayError as exc:
            self.outcomes.append(Outcome(phase, exc.code.name, time.monotonic() - started, False))
            return
        answered = (
            summary is not None
            and bool(results)
            and all(r.outcome is CallOutcome.ANSWERED for r in results)
        )
        self.outcomes.append(Outcome(phase, "OK", time.monotonic() - started, answered))

    async def closed_loop(self, phase: str, workers: int, seconds: float) -> None:
        """``workers`` lookups at a time, each starting when the last ended."""
        until = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < until:
                await self.lookup(phase)

        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())

    async def open_loop(self, phase: str, rate: float, seconds: float) -> None:
        """Arrivals at ``rate`` a second, whether earlier ones have ended or not."""
        started = time.monotonic()
        outstanding: set[asyncio.Task[None]] = set()
        sent = 0
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due and len(outstanding) < MAX_OUTSTANDING:
                task = asyncio.ensure_future(self.lookup(phase))
                outstanding.add(task)
                task.add_done_callback(outstanding.discard)
                sent += 1
            await asyncio.sleep(max(0.0, (sent / rate) - (time.monotonic() - started)))
        if outstanding:
            await asyncio.gather(*outstanding)

    async def close(self) -> None:
        await self._client.close()


def _ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 1)


@pytest.mark.timeout(int(BASELINE_S + OVERLOAD_S) + 240)
async def test_overload_is_refused_at_once_and_admitted_lookups_complete(
    sqlite_database: Database, dev_keys: DevKeys, tmp_path: Path
) -> None:
    """Beyond max_concurrent_lookups, lookups are refused with RESOURCE_EXHAUSTED and
    nothing else; the admitted ones never exceed the cap at the provider and all
    complete with the provider's answer."""
    citizens = [Citizen.numbered(n) for n in range(50)]
    federation = Upstreams(dev_keys, citizens)
    slow = Catalogue(latency=LATENCY, jitter=0.02)
    await federation.start({"slow": slow})
    gateway, port = federation.gateway_process(
        sqlite_database,
        tmp_path,
        gateway={"max_concurrent_lookups": CAP, "lookup_deadline_s": 10, "log_level": "info"},
        sections={"fanout": {"provider_deadline_s": 3.0, "carrier_deadline_s": 3.0}},
    )
    load = LoadGenerator(f"127.0.0.1:{port}", Identity(dev_keys), citizens)
    try:
        await gateway.spawn()
        await gateway.wait_ready()
        await load.closed_loop("warmup", CAP, 2.0)
        await load.closed_loop("baseline", CAP, BASELINE_S)
        capacity = CAP / LATENCY
        await load.open_loop("overload", capacity * OVERLOAD_FACTOR, OVERLOAD_S)
    finally:
        await load.close()
        await gateway.terminate()
        await federation.close()

    by_phase: dict[str, list[Outcome]] = collections.defaultdict(list)
    for outcome in load.outcomes:
        by_phase[outcome.phase].append(outcome)
    baseline = by_phase["baseline"]
    overload = by_phase["overload"]
    admitted = [o.seconds for o in overload if o.status == "OK"]
    refused = [o.seconds for o in overload if o.status == "RESOURCE_EXHAUSTED"]
    figures = {
        "cap": CAP,
        "provider_latency_ms": LATENCY * 1000,
        "offered_per_s": round(capacity * OVERLOAD_FACTOR, 1),
        "capacity_per_s": round(capacity, 1),
        "baseline_lookups": len(baseline),
        "baseline_p50_ms": _ms([o.seconds for o in baseline], 50),
        "baseline_p99_ms": _ms([o.seconds for o in baseline], 99),
        "overload_seconds": OVERLOAD_S,
        "overload_attempts": len(overload),
        "admitted": len(admitted),
        "admitted_p50_ms": _ms(admitted, 50),
        "admitted_p99_ms": _ms(admitted, 99),
        "admitted_max_ms": _ms(admitted, 100),
        "refused_resource_exhausted": len(refused),
        "refused_p50_ms": _ms(refused, 50),
        "refused_p99_ms": _ms(refused, 99),
        "statuses": dict(collections.Counter(o.status for o in overload)),
        "provider_max_concurrent_calls": slow.max_active,
    }
    record_result("overload", figures)

    assert baseline, "no baseline lookups"
    assert all(o.status == "OK" and o.answered for o in baseline), figures
    # Every overload call is either admitted and answered, or refused as overload.
    assert {o.status for o in overload} <= {"OK", grpc.StatusCode.RESOURCE_EXHAUSTED.name}, figures
    assert all(o.answered for o in overload if o.status == "OK"), figures
    assert refused, figures
    assert admitted, figures
    # The cap holds where it matters: at most CAP lookups reach the provider at once.
    assert slow.max_active <= CAP, figures
