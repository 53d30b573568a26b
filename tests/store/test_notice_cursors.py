"""Providers' cursors in the notice log: leased by push workers, moved only past settled
notices, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from onecert.gateway.store import (
    DeliveryMode,
    DeliveryState,
    Notice,
    PushResult,
    Settlement,
    Store,
)
from tests.store.test_notices import _record as record_notice

PROVIDERS = (("pay", "push"), ("chat", "push"), ("blog", "poll"))


async def _record(
    store: Store,
    now: datetime,
    event_id: str = "ev-1",
    *,
    providers: Sequence[tuple[str, str]] = PROVIDERS,
) -> Notice:
    notice, _ = await record_notice(store, now, event_id, providers=providers)
    return notice


async def positions(store: Store, *provider_ids: str) -> list[tuple[int, int] | None]:
    """Each provider's cursor as ``(acked_seq, head_seq)``, None without one."""
    cursors = [await store.cursors.get(p) for p in provider_ids]
    return [None if c is None else (c.acked_seq, c.head_seq) for c in cursors]


async def test_notices_take_consecutive_places_in_the_log(store: Store, t0: datetime) -> None:
    """Each notice takes the next seq; a provider's cursor head follows what is routed to it."""
    first = await _record(store, t0, "ev-1")
    second = await _record(store, t0, "ev-2", providers=[("pay", "push")])
    assert (first.seq, second.seq) == (1, 2)
    assert await positions(store, "pay", "chat", "nobody") == [(0, 2), (0, 1), None]


async def test_push_workers_lease_push_providers_only(store: Store, t0: datetime) -> None:
    """Workers lease the cursors of push providers with notices, never poll ones, one
    worker at a time until the lease runs out."""
    notice = await _record(store, t0)
    claimed = await store.cursors.claim_due(worker_id="w", now=t0, lease_s=30)
    assert sorted(c.provider_id for c in claimed) == ["chat", "pay"]
    assert all(c.lease_owner == "w" for c in claimed)
    assert await store.cursors.claim_due(worker_id="x", now=t0 + timedelta(seconds=29)) == []
    again = await store.cursors.claim_due(worker_id="x", now=t0 + timedelta(seconds=30))
    assert sorted(c.provider_id for c in again) == ["chat", "pay"]
    (pending,) = await store.cursors.pending(again[0], limit=10)
    # The push read does not count the notice's copies (None): the rest is the notice.
    assert pending.notice == replace(notice, providers=None)


async def test_two_stores_share_push_work(store: Store, other_store: Store, t0: datetime) -> None:
    """Concurrent claims from two processes never hand out one provider twice."""
    await _record(store, t0, providers=[(f"p{i:02d}", "push") for i in range(30)])
    rounds = await asyncio.gather(
        *(
            s.cursors.claim_due(worker_id=f"w{i}", limit=4, now=t0)
            for i, s in enumerate((store, other_store, store, other_store, store, other_store))
        )
    )
    ids = [c.provider_id for batch in rounds for c in batch]
    assert len(ids) == len(set(ids)) == 24


async def test_settling_a_batch_moves_the_cursor_and_idles_it(store: Store, t0: datetime) -> None:
    """Acknowledged notices move the cursor to the head and free it; the next notice
    routed to the provider makes it due again."""
    await _record(store, t0, "ev-1", providers=[("pay", "push")])
    await _record(store, t0, "ev-2", providers=[("pay", "push")])
    (cursor,) = await store.cursors.claim_due(worker_id="w", now=t0)
    batch = await store.cursors.pending(cursor, limit=10)
    assert [d.notice.event_id for d in batch] == ["ev-1", "ev-2"]
    results = [
        PushResult.acknowledged(batch[0].jti),
        PushResult.acknowledged(batch[1].jti, 2),
    ]
    await store.cursors.settle(cursor, results, worker_id="w", now=t0)
    after = await store.cursors.get("pay")
    assert after is not None
    assert (after.acked_seq, after.head_seq, after.lease_owner) == (2, 2, None)
    acted = await store.deliveries.get(batch[1].jti)
    assert acted is not None
    assert (acted.state, acted.bindings_removed, acted.acted_at) == (
        DeliveryState.ACKNOWLEDGED,
        2,
        t0,
    )
    assert await store.cursors.claim_due(worker_id="w", now=t0 + timedelta(days=1)) == []
    await _record(store, t0, "ev-3", providers=[("pay", "push")])
    (due,) = await store.cursors.claim_due(worker_id="w", now=t0)
    assert [d.notice.event_id for d in await store.cursors.pending(due, limit=10)] == ["ev-3"]


async def test_the_cursor_never_passes_an_unsettled_notice(store: Store, t0: datetime) -> None:
    """A notice to try again holds the cursor below it; the provider is backed off, and
    a refused notice is settled as received."""
    for i in range(3):
        await _record(store, t0, f"ev-{i}", providers=[("pay", "push")])
    (cursor,) = await store.cursors.claim_due(worker_id="w", now=t0)
    first, second, third = await store.cursors.pending(cursor, limit=10)
    retry_at = t0 + timedelta(minutes=1)
    await store.cursors.settle(
        cursor,
        [
            PushResult.acknowledged(first.jti),
            PushResult.retry(second.jti, "UNAVAILABLE"),
            PushResult.refused(third.jti, "INVALID_ARGUMENT"),
        ],
        worker_id="w",
        retry_at=retry_at,
        error="UNAVAILABLE",
        now=t0,
    )
    after = await store.cursors.get("pay")
    assert after is not None
    assert (after.acked_seq, after.attempts, after.last_error) == (1, 1, "UNAVAILABLE")
    refused = await store.deliveries.get(third.jti)
    assert refused is not None
    assert (refused.state, refused.delivered_at) == (DeliveryState.FAILED, t0)
    assert await store.cursors.claim_due(worker_id="w", now=retry_at - timedelta(seconds=1)) == []
    (again,) = await store.cursors.claim_due(worker_id="w", now=retry_at)
    assert [d.jti for d in await store.cursors.pending(again, limit=10)] == [second.jti]


async def test_only_the_lease_holder_frees_the_cursor(store: Store, t0: datetime) -> None:
    """A worker whose lease was taken over still records acknowledgements (facts), but
    does not free or reschedule the cursor the new holder leased."""
    await _record(store, t0, providers=[("pay", "push")])
    (old,) = await store.cursors.claim_due(worker_id="old", now=t0, lease_s=1)
    (new,) = await store.cursors.claim_due(worker_id="new", now=t0 + timedelta(seconds=2))
    (d,) = await store.cursors.pending(old, limit=10)
    await store.cursors.settle(old, [PushResult.acknowledged(d.jti)], worker_id="old", now=t0)
    after = await store.cursors.get("pay")
    assert after is not None
    assert after.lease_owner == "new"
    assert after.acked_seq == after.head_seq == 1
    assert new.provider_id == "pay"


async def test_one_group_commit_settles_each_cursor_as_its_batch_went(
    store: Store, t0: datetime
) -> None:
    """In one settle_many: a provider with nothing left is freed and idle, one with a
    notice routed to it meanwhile is freed and due, one to try again is backed off, and
    one whose lease another worker took keeps that lease (its acknowledgement counts)."""
    ids = ("done", "more", "retry", "taken")
    await _record(store, t0, "ev-taken", providers=[("taken", "push")])
    cursors = {
        c.provider_id: c for c in await store.cursors.claim_due(worker_id="w", now=t0, lease_s=1)
    }
    for p in ids[:3]:
        await _record(store, t0, f"ev-{p}", providers=[(p, "push")])
    for c in await store.cursors.claim_due(worker_id="w", now=t0, lease_s=60, limit=10):
        cursors[c.provider_id] = c
    batches = {p: await store.cursors.pending(cursors[p], limit=10) for p in ids}
    await _record(store, t0, "ev-later", providers=[("more", "push")])
    later = t0 + timedelta(seconds=2)
    (taken,) = await store.cursors.claim_due(worker_id="x", now=later, limit=10)
    assert taken.provider_id == "taken"
    retry_at = t0 + timedelta(minutes=5)
    settlements = [
        Settlement(cursors[p], [PushResult.acknowledged(batches[p][0].jti, 1)])
        for p in ("done", "more", "taken")
    ]
    settlements.append(
        Settlement(
            cursors["retry"],
            [PushResult.retry(batches["retry"][0].jti, "UNAVAILABLE")],
            retry_at,
            "UNAVAILABLE",
        )
    )
    assert await store.cursors.settle_many(settlements, worker_id="w", now=later)
    after = [await store.cursors.get(p) for p in ids]
    done, more, retry, kept = (c for c in after if c is not None)
    assert (done.acked_seq, done.lease_owner, done.attempts) == (done.head_seq, None, 0)
    assert done.next_attempt_at.year == 9999  # idle until routed a notice
    assert (more.acked_seq + 1, more.lease_owner, more.next_attempt_at) == (
        more.head_seq,
        None,
        later,
    )
    assert (retry.lease_owner, retry.next_attempt_at, retry.last_error) == (
        None,
        retry_at,
        "UNAVAILABLE",
    )
    assert retry.acked_seq == retry.head_seq - 1
    assert (kept.lease_owner, kept.acked_seq) == ("x", kept.head_seq)
    (due,) = await store.cursors.claim_due(worker_id="w", now=later)
    assert due.provider_id == "more"


async def test_polls_and_acks_move_a_poll_providers_cursor(store: Store, t0: datetime) -> None:
    """A polling provider's acknowledgements move its cursor like pushes do."""
    await _record(store, t0, "ev-1", providers=[("blog", "poll")])
    await _record(store, t0, "ev-2", providers=[("blog", "poll")])
    batch, _ = await store.deliveries.poll("blog", now=t0)
    await store.deliveries.ack("blog", [batch[0].jti], now=t0)
    cursor = await store.cursors.get("blog")
    assert cursor is not None
    assert (cursor.acked_seq, cursor.head_seq) == (1, 2)
    assert await store.cursors.claim_due(worker_id="w", now=t0) == []


async def test_a_notice_below_the_cursor_moves_it_back(store: Store, t0: datetime) -> None:
    """A notice that reaches a provider below what its cursor settled (routed late, or
    committed after a higher seq by another replica) moves the cursor back to it and is
    delivered; the cursor then returns to the head."""
    first, _, _ = await store.notices.record(
        carrier_id="carrier-a",
        event_id="ev-1",
        msisdn="+8613800138000",
        msisdn_hash="0" * 64,
        event_type="RECYCLED",
        effective_at=t0 - timedelta(hours=1),
        quiet_period_ends_at=None,
        deadline=t0 + timedelta(days=7),
        providers=[("chat", DeliveryMode.PUSH)],
        now=t0,
        route_tag="1:aa",
    )
    await _record(store, t0, "ev-2", providers=[("pay", "push")])
    claimed = await store.cursors.claim_due(worker_id="w", now=t0)
    (cursor,) = [c for c in claimed if c.provider_id == "pay"]
    (second,) = await store.cursors.pending(cursor, limit=10)
    await store.cursors.settle(cursor, [PushResult.acknowledged(second.jti)], worker_id="w")
    settled = await store.cursors.get("pay")
    assert settled is not None
    assert (settled.acked_seq, settled.head_seq) == (2, 2)
    assert await store.notices.route_late("pay", "push", ["1:aa"], now=t0) == 1
    moved = await store.cursors.get("pay")
    assert moved is not None
    assert (moved.acked_seq, moved.head_seq) == (0, 2)
    (due,) = await store.cursors.claim_due(worker_id="w", now=t0)
    (late,) = await store.cursors.pending(due, limit=10)
    assert late.notice.notice_id == first.notice_id
    await store.cursors.settle(due, [PushResult.acknowledged(late.jti)], worker_id="w")
    back = await store.cursors.get("pay")
    assert back is not None
    assert back.acked_seq == back.head_seq == 2
