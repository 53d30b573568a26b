"""In a running demo federation, CheckRecycled agrees with the lookup about the story's numbers:
the carriers report their past events as history, so a number the lookup shows as recycled
is RECYCLED to a provider that checks it at login."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from onecert.adapters.demo import CARRIERS, PROVIDERS, STORY, DemoFederation, history_events
from onecert.cli._demo import _Portal
from onecert.sdk import TenureState
from onecert.sdk.client import GatewayClient, ProviderGatewayClient, RecycledStatus, Started

# Configured rather than joining by invitation: the test calls as it with its dev certificate.
POLLING = replace(next(p for p in PROVIDERS if p.notices == "poll"), joins=False)


def test_history_follows_the_records() -> None:
    """The story's carrier records give the events the lookup implies: her old number
    cancelled when she left it and recycled when the next holder got it."""
    events = [(e.msisdn, e.event_type, e.effective_at) for e in history_events("bluefinch")]
    assert (STORY.former_number, "cancelled", STORY.former_until) in events
    assert (STORY.former_number, "recycled", STORY.next_holder_from) in events
    assert all(e.event_id.startswith("bluefinch-history-") for e in history_events("bluefinch"))


@pytest.fixture
async def federation(tmp_path: Path) -> AsyncIterator[DemoFederation]:
    """The demo's carriers, one provider (one that may call the gateway), and a gateway."""
    running = DemoFederation(tmp_path / "demo", carriers=CARRIERS, providers=[POLLING])
    try:
        await running.start()
        yield running
    finally:
        running.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_check_recycled_agrees_with_the_lookup(federation: DemoFederation) -> None:
    """Her former number, shown recycled by the lookup, is RECYCLED since a date in her
    tenure (at the next holder's start); her current number is RECYCLED since a date in
    the previous holder's tenure (at hers); and NOT_RECYCLED since she got it."""
    assert federation.history_reported >= 4
    portal = _Portal(federation)
    async with GatewayClient(federation.gateway_address, tls=portal.tls) as client:
        updates = [u async for u in client.lookup(portal.assertion(), timeout=20)]
    (started,) = [u for u in updates if isinstance(u, Started)]
    shown = {n.msisdn: n.state for n in started.numbers}
    assert shown[STORY.former_number] is TenureState.RECYCLED

    tls = federation.client_tls(POLLING.id)
    async with ProviderGatewayClient(federation.gateway_address, tls=tls) as provider:
        former = await provider.check_recycled(
            STORY.former_number, STORY.former_from + timedelta(days=400)
        )
        current = await provider.check_recycled(
            STORY.current_number, STORY.current_from - timedelta(days=400)
        )
        hers = await provider.check_recycled(
            STORY.current_number, STORY.current_from + timedelta(days=1)
        )
    assert (former.status, former.recycled_at) == (RecycledStatus.RECYCLED, STORY.next_holder_from)
    assert (current.status, current.recycled_at) == (RecycledStatus.RECYCLED, STORY.current_from)
    assert hers.status is RecycledStatus.NOT_RECYCLED
