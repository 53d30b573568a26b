"""Refreshes that queue share snapshots, yet each caller finds its own change applied."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tests.registry.registry_support import RegistryWorld


async def test_concurrent_changes_are_each_applied_when_their_refresh_returns(
    world: RegistryWorld,
) -> None:
    """Twelve changes at once, each followed by a refresh: when a refresh returns, the
    change made before it is applied here, and no more snapshots than changes were applied."""
    gateway = await world.start("pay")
    registry = gateway.registry
    assert registry is not None
    applied: list[int] = []
    registry.subscribe(lambda change: applied.append(change.snapshot.version))

    async def change_then_refresh(i: int) -> None:
        provider_id = f"site-{i:02d}"
        await world.store.registry.invite(
            provider_id,
            name=provider_id,
            category="forum",
            ttl=timedelta(hours=1),
            actor="admin:test",
        )
        await registry.refresh()
        assert registry.snapshot is not None
        assert provider_id in {e.id for e in registry.snapshot.entries}

    await asyncio.gather(*(change_then_refresh(i) for i in range(12)))
    assert 1 <= len(applied) <= 12
    assert applied == sorted(applied)
