"""Soak: minutes of steady lookups, unbinds and notices against a gateway process,
whose resident memory and open file descriptors are sampled from /proc.

``ONECERT_SOAK_SECONDS`` sets the length (short by default: a smoke run; ``make
stress`` runs several minutes). The rule for "no growth" is robust to noise:
after a warm-up, the median of the last third of the samples is compared with
the median of the first third; file descriptors may differ by a handful,
memory may grow by a fifth at most.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from onecert.gateway.store.testing import Database
from onecert.sdk.client import (
    CarrierGatewayClient,
    GatewayClient,
    GatewayError,
    Result,
    Summary,
)
from onecert.sdk.devkeys import DevKeys
from stress.stress_support import (
    Catalogue,
    Citizen,
    Identity,
    ProcessSample,
    Upstreams,
    env_float,
    percentile,
    record_result,
    sample_process,
    seeded,
    series_summary,
)

SOAK_SECONDS = env_float("ONECERT_SOAK_SECONDS", 30.0)
SAMPLE_EVERY_S = min(5.0, max(1.0, SOAK_SECONDS / 60))
WARMUP_S = max(10.0, SOAK_SECONDS * 0.15)
LOOKUPS_PER_S = 4.0
NOTICES_PER_S = 0.5
# Share of lookups followed by an unbind of one of the accounts shown.
UNBIND_SHARE = 0.7
# The "no growth" rule.
FD_SLACK = 5
RSS_GROWTH = 0.20


class SteadyLoad:
    """A portal and a carrier at a steady pace; counts every call's status."""

    def __init__(self, target: str, identity: Identity, federation: Upstreams) -> None:
        self._portal = GatewayClient(target, insecure=True)
        self._carrier = CarrierGatewayClient(target, insecure=True, dev_carrier_id="cm")
        self._identity = identity
        self._federation = federation
        self._rng = seeded(11)
        self.statuses: collections.Counter[str] = collections.Counter()
        self.lookup_seconds: list[float] = []
        self.tickets: list[tuple[Citizen, str]] = []
        self._events = 0

    def _count(self, rpc: str, status: str) -> None:
        self.statuses[f"{rpc} {status}"] += 1

    async def citizen_session(self) -> None:
        """A lookup, then perhaps an unbind of one account, then perhaps a receipt."""
        citizen = self._rng.choice(self._federation.citizens)
        started = time.monotonic()
        handles: list[str] = []
        try:
            async for update in self._portal.lookup(self._identity.assertion(citizen)):
                if isinstance(update, Result):
                    handles.extend(a.handle for a in update.accounts if a.handle)
                elif isinstance(update, Summary):
                    self.lookup_seconds.append(time.monotonic() - started)
        except GatewayError as exc:
            self._count("Lookup", exc.code.name)
            return
        self._count("Lookup", "OK")
        if handles and self._rng.random() < UNBIND_SHARE:
            try:
                ticket = await self._portal.unbind(
                    self._identity.assertion(citizen), self._rng.choice(handles)
                )
            except GatewayError as exc:
                self._count("Unbind", exc.code.name)
                return
            self._count("Unbind", "OK")
            self.tickets.append((citizen, ticket.ticket_id))
        if self.tickets and self._rng.random() < 0.2:
            owner, ticket_id = self._rng.choice(self.tickets)
            try:
                await self._portal.get_unbind(self._identity.assertion(owner), ticket_id)
            except GatewayError as exc:
                self._count("GetUnbind", exc.code.name)
                return
            self._count("GetUnbind", "OK")

    async def report_event(self) -> None:
        self._events += 1
        citizen = self._rng.choice(self._federation.citizens)
        try:
            await self._carrier.report_number_event(
                event_id=f"soak-{self._events}",
                msisdn=self._federation.number_of(citizen),
                event_type="cancelled",
                effective_at=datetime.now(UTC) - timedelta(seconds=1),
            )
        except GatewayError as exc:
            self._count("ReportNumberEvent", exc.code.name)
            return
        self._count("ReportNumberEvent", "OK")

    async def run(self, seconds: float) -> None:
        """Start sessions and events on a fixed schedule for ``seconds``."""
        started = time.monotonic()
        running: set[asyncio.Task[None]] = set()
        sessions = events = 0
        while (elapsed := time.monotonic() - started) < seconds:
            while sessions < elapsed * LOOKUPS_PER_S:
                sessions += 1
                task = asyncio.ensure_future(self.citizen_session())
                running.add(task)
                task.add_done_callback(running.discard)
            while events < elapsed * NOTICES_PER_S:
                events += 1
                task = asyncio.ensure_future(self.report_event())
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.sleep(0.05)
        if running:
            await asyncio.gather(*running)

    async def close(self) -> None:
        await self._portal.close()
        await self._carrier.close()


async def sample_until(pid: int, stop: asyncio.Event, samples: list[ProcessSample]) -> None:
    started = time.monotonic()
    while not stop.is_set():
        samples.append(sample_process(pid, at=time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)


@pytest.mark.timeout(int(SOAK_SECONDS) + 240)
async def test_soak_shows_no_growth_in_memory_or_file_descriptors(
    sqlite_database: Database, dev_keys: DevKeys, tmp_path: Path
) -> None:
    """Under minutes of steady lookups, unbinds and notices every call succeeds, and
    the gateway's open file descriptors and resident memory stop growing after the
    warm-up."""
    citizens = [Citizen.numbered(n) for n in range(40)]
    federation = Upstreams(dev_keys, citizens)
    catalogues = {p: Catalogue(latency=0.02, jitter=0.03) for p in ("pay", "chat", "shop")}
    await federation.start(catalogues)
    gateway, port = federation.gateway_process(
        sqlite_database,
        tmp_path,
        gateway={"log_level": "info"},
        sections={
            "delivery": {"poll_interval_s": 0.5, "backoff_initial_s": 0.2},
            "notices": {"check_interval_s": 0.5, "backoff_initial_s": 0.2},
        },
    )
    load = SteadyLoad(f"127.0.0.1:{port}", Identity(dev_keys), federation)
    samples: list[ProcessSample] = []
    stop = asyncio.Event()
    try:
        await gateway.spawn()
        await gateway.wait_ready()
        sampler = asyncio.ensure_future(sample_until(gateway.pid, stop, samples))
        await load.run(SOAK_SECONDS)
        stop.set()
        await sampler
    finally:
        stop.set()
        await load.close()
        await gateway.terminate()
        await federation.close()

    series = series_summary(samples, warmup_s=WARMUP_S)
    figures = {
        "seconds": SOAK_SECONDS,
        "sample_every_s": SAMPLE_EVERY_S,
        "warmup_s": WARMUP_S,
        "calls": dict(load.statuses),
        "lookup_p50_ms": round(percentile(load.lookup_seconds, 50) * 1000, 1),
        "lookup_p99_ms": round(percentile(load.lookup_seconds, 99) * 1000, 1),
        "unbinds_applied_by_providers": sum(c.unbound for c in catalogues.values()),
        "notices_received_by_providers": sum(c.notices for c in catalogues.values()),
        **series,
    }
    record_result("soak", figures)

    failed = {k: n for k, n in load.statuses.items() if not k.endswith(" OK")}
    assert not failed, figures
    assert series["samples_after_warmup"] >= 3, figures
    fds_first, fds_last = series["fds_first_third_median"], series["fds_last_third_median"]
    assert fds_last - fds_first <= FD_SLACK, f"open file descriptors grew: {figures}"
    rss_first = series["rss_mib_first_third_median"]
    rss_last = series["rss_mib_last_third_median"]
    assert rss_last <= rss_first * (1 + RSS_GROWTH), f"resident memory grew: {figures}"
