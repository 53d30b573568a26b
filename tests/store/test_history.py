"""Number history and the recycled check (RECYCLED / NOT_RECYCLED / NO_DATA)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from onecert.gateway.store import (
    NumberEvent,
    RecycledStatus,
    Store,
    StoredEventType,
    classify_recycled,
)
from tests.store.store_support import MSISDN_HASH, record_notice

DAY = timedelta(days=1)


async def _event(
    store: Store, event_id: str, event_type: StoredEventType, effective_at: datetime
) -> None:
    await record_notice(
        store,
        effective_at,
        event_id,
        event_type=event_type,
        effective_at=effective_at,
        deadline=effective_at + DAY,
    )


async def test_history_is_sorted_by_effective_time(store: Store, t0: datetime) -> None:
    """A number's history comes back oldest first, whatever the reporting order."""
    await _event(store, "e2", StoredEventType.RECYCLED, t0)
    await _event(store, "e1", StoredEventType.CANCELLED, t0 - 90 * DAY)
    history = await store.notices.history(MSISDN_HASH)
    assert [(e.event_type, e.effective_at) for e in history] == [
        (StoredEventType.CANCELLED, t0 - 90 * DAY),
        (StoredEventType.RECYCLED, t0),
    ]
    assert await store.notices.history("0" * 64) == []


async def test_check_recycled_answers(store: Store, t0: datetime) -> None:
    """RECYCLED after a recycling, NOT_RECYCLED inside known history, NO_DATA before it."""
    await _event(store, "c", StoredEventType.CANCELLED, t0 - 90 * DAY)
    await _event(store, "r", StoredEventType.RECYCLED, t0)
    before = await store.notices.check_recycled(MSISDN_HASH, t0 - DAY)
    assert before.status is RecycledStatus.RECYCLED
    assert before.recycled_at == t0
    after = await store.notices.check_recycled(MSISDN_HASH, t0 + DAY)
    assert after.status is RecycledStatus.NOT_RECYCLED
    assert after.coverage_start == t0 - 90 * DAY
    # Before the first event the gateway knows nothing...
    unknown = await store.notices.check_recycled(MSISDN_HASH, t0 - 100 * DAY)
    assert unknown.status is RecycledStatus.RECYCLED  # ...but the later recycling is known.
    other = hashlib.sha256(b"+8613900139000").hexdigest()
    assert (await store.notices.check_recycled(other, t0)).status is RecycledStatus.NO_DATA
    # With a configured history start, silence means "not recycled".
    covered = await store.notices.check_recycled(other, t0, history_start=t0 - 365 * DAY)
    assert covered.status is RecycledStatus.NOT_RECYCLED


def _history(offsets: list[tuple[bool, int]], base: datetime) -> list[NumberEvent]:
    return sorted(
        (
            NumberEvent(
                notice_id=f"n{i}",
                carrier_id="c",
                event_type=StoredEventType.RECYCLED if recycled else StoredEventType.CANCELLED,
                effective_at=base + timedelta(days=days),
                quiet_period_ends_at=None,
                recorded_at=base + timedelta(days=days),
            )
            for i, (recycled, days) in enumerate(offsets)
        ),
        key=lambda e: e.effective_at,
    )


BASE = datetime(2024, 1, 1, tzinfo=UTC)
_events = st.lists(st.tuples(st.booleans(), st.integers(-1000, 1000)), max_size=8)
_days = st.integers(-1200, 1200)


@given(_events, _days, st.one_of(st.none(), _days))
def test_classify_recycled_rule(
    offsets: list[tuple[bool, int]], day: int, start_day: int | None
) -> None:
    """The classification follows the rule: recycled after the date, else coverage decides."""
    history = _history(offsets, BASE)
    specified = BASE + timedelta(days=day)
    history_start = None if start_day is None else BASE + timedelta(days=start_day)
    result = classify_recycled(history, specified, history_start=history_start)
    later = [
        e.effective_at
        for e in history
        if e.event_type is StoredEventType.RECYCLED and e.effective_at > specified
    ]
    if later:
        assert result.status is RecycledStatus.RECYCLED
        assert result.recycled_at == max(later)
        return
    assert result.recycled_at is None
    starts = [e.effective_at for e in history] + ([history_start] if history_start else [])
    covered = bool(starts) and specified >= min(starts)
    assert result.status is (RecycledStatus.NOT_RECYCLED if covered else RecycledStatus.NO_DATA)


@given(_events, _days, _days)
def test_classify_recycled_is_monotonic_in_the_date(
    offsets: list[tuple[bool, int]], a: int, b: int
) -> None:
    """Asking about a later date never turns NOT_RECYCLED into RECYCLED or NO_DATA."""
    history = _history(offsets, BASE)
    early, late = sorted((BASE + timedelta(days=a), BASE + timedelta(days=b)))
    if classify_recycled(history, early).status is RecycledStatus.NOT_RECYCLED:
        assert classify_recycled(history, late).status is RecycledStatus.NOT_RECYCLED
