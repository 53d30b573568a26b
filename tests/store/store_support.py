"""What the store tests share: the number they record events for, and one way to record one."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta

from onecert.gateway.store import DeliveryMode, Notice, Store, StoredEventType

MSISDN = "+8613800138000"
MSISDN_HASH = hashlib.sha256(MSISDN.encode()).hexdigest()


async def record_notice(
    store: Store,
    now: datetime,
    event_id: str = "ev-1",
    *,
    carrier_id: str = "carrier-a",
    event_type: StoredEventType | str = "RECYCLED",
    msisdn: str = MSISDN,
    effective_at: datetime | None = None,
    quiet_period_ends_at: datetime | None = None,
    deadline: datetime | None = None,
    providers: Iterable[tuple[str, DeliveryMode | str]] = (),
) -> tuple[Notice, bool]:
    """``carrier_id`` reports ``event_type`` for ``msisdn`` at ``now``: effective an hour
    before and with a week to act unless told otherwise, for ``providers`` (id, mode)."""
    notice, created, _ = await store.notices.record(
        carrier_id=carrier_id,
        event_id=event_id,
        msisdn=msisdn,
        msisdn_hash=hashlib.sha256(msisdn.encode()).hexdigest(),
        event_type=event_type,
        effective_at=effective_at or now - timedelta(hours=1),
        quiet_period_ends_at=quiet_period_ends_at,
        deadline=deadline or now + timedelta(days=7),
        providers=[(p, DeliveryMode(m)) for p, m in providers],
        now=now,
    )
    return notice, created
