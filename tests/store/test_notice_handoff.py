"""A report's fresh copies leased in the transaction that records them (the recording
replica pushes them at once), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from onecert.gateway.store import (
    DeliveryMode,
    DeliveryState,
    Handoff,
    Notice,
    PushResult,
    Settlement,
    Store,
)
from tests.store.store_support import MSISDN, record_notice


async def _record_leased(
    store: Store,
    now: datetime,
    event_id: str,
    providers: Sequence[tuple[str, str]],
    *,
    worker_id: str = "w",
    limit: int = 100,
    lease_s: float = 30.0,
) -> tuple[Notice, bool, list[Handoff]]:
    return await store.notices.record(
        carrier_id="carrier-a",
        event_id=event_id,
        msisdn=MSISDN,
        msisdn_hash=hashlib.sha256(MSISDN.encode()).hexdigest(),
        event_type="RECYCLED",
        effective_at=now - timedelta(hours=1),
        quiet_period_ends_at=None,
        deadline=now + timedelta(days=7),
        providers=[(p, DeliveryMode(m)) for p, m in providers],
        now=now,
        worker_id=worker_id,
        limit=limit,
        lease_s=lease_s,
    )


async def test_fresh_push_copies_are_leased_with_the_report(store: Store, t0: datetime) -> None:
    """The push providers' cursors come back leased, each with its copy as the store
    holds it; poll providers are not leased, and no other worker can claim them."""
    notice, created, handed = await _record_leased(
        store, t0, "ev-1", [("pay", "push"), ("chat", "push"), ("blog", "poll")]
    )
    assert created
    assert sorted(h.cursor.provider_id for h in handed) == ["chat", "pay"]
    assert all(h.cursor.lease_owner == "w" and h.cursor.attempts == 1 for h in handed)
    stored = {d.jti: d for d in await store.deliveries.for_notice(notice.notice_id)}
    for h in handed:
        assert h.delivery == stored[h.delivery.jti]
        assert h.delivery.provider_id == h.cursor.provider_id
        assert (h.cursor.acked_seq, h.cursor.head_seq) == (notice.seq - 1, notice.seq)
    assert await store.cursors.claim_due(worker_id="x", now=t0 + timedelta(seconds=29)) == []


async def test_a_lease_taken_with_the_report_runs_out_like_any_other(
    store: Store, t0: datetime
) -> None:
    """If the recording replica dies before pushing, another worker claims the copies
    once the lease runs out, and pushes the same notice (same jti)."""
    _, _, handed = await _record_leased(store, t0, "ev-1", [("pay", "push")], lease_s=30)
    claimed = await store.cursors.claim_due(worker_id="x", now=t0 + timedelta(seconds=30))
    assert [c.provider_id for c in claimed] == ["pay"]
    (pending,) = await store.cursors.pending(claimed[0], limit=10)
    assert pending.jti == handed[0].delivery.jti


async def test_only_cursors_the_report_alone_made_due_are_leased(
    store: Store, t0: datetime
) -> None:
    """A provider with an older notice still waiting, or leased by another worker, is
    left to the claim query (its notices go out in log order); so is any beyond the limit."""
    await record_notice(store, t0, "ev-0", providers=[("pay", "push")])
    await record_notice(store, t0, "ev-00", providers=[("chat", "push")])
    (chat,) = await store.cursors.claim_due(worker_id="other", limit=1, now=t0)
    (chat_copy,) = await store.cursors.pending(chat, limit=10)
    # chat's earlier notice is settled: it would be free but for the other lease.
    await store.cursors.settle(
        chat, [PushResult.acknowledged(chat_copy.jti)], worker_id="nobody", now=t0
    )
    providers = [("pay", "push"), ("chat", "push"), ("a1", "push"), ("a2", "push")]
    _, _, handed = await _record_leased(store, t0, "ev-1", providers, limit=1)
    assert [h.cursor.provider_id for h in handed] == ["a1"]
    claimed = await store.cursors.claim_due(worker_id="x", now=t0)
    assert sorted(c.provider_id for c in claimed) == ["a2", "pay"]


async def test_the_same_report_again_leases_nothing(store: Store, t0: datetime) -> None:
    """A report repeated (idempotent) creates no copies, so it hands none over."""
    await _record_leased(store, t0, "ev-1", [("pay", "push")])
    notice, created, handed = await _record_leased(store, t0, "ev-1", [("pay", "push")])
    assert not created
    assert handed == []
    (copy,) = await store.deliveries.for_notice(notice.notice_id)
    assert copy.state is DeliveryState.PENDING


async def test_settling_tells_whether_a_provider_has_more(store: Store, t0: datetime) -> None:
    """A settled provider with a notice routed to it while it was leased has more to
    push at once; one with nothing left does not."""
    _, _, (handed,) = await _record_leased(store, t0, "ev-1", [("pay", "push")])
    done = PushResult.acknowledged(handed.delivery.jti, 0)
    await record_notice(store, t0, "ev-2", providers=[("pay", "push")])
    assert await store.cursors.settle_many([_settled(handed, done)], worker_id="w", now=t0)
    (cursor,) = await store.cursors.claim_due(worker_id="w", now=t0)
    (second,) = await store.cursors.pending(cursor, limit=10)
    assert not await store.cursors.settle_many(
        [_settled(Handoff(cursor, second), PushResult.acknowledged(second.jti))],
        worker_id="w",
        now=t0,
    )


def _settled(handed: Handoff, result: PushResult) -> Settlement:
    return Settlement(handed.cursor, [result])
