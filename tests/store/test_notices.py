"""Recycled-number notices: recording, push and poll delivery, acks and confirmations."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from onecert.gateway.store import (
    AuditDraft,
    AuditValueError,
    ConflictError,
    DeliveryState,
    NotFoundError,
    Notice,
    PushResult,
    Store,
    StoredEventType,
)
from onecert.gateway.store._models import audit_log
from tests.store.store_support import MSISDN, record_notice

PROVIDERS = (("pay", "push"), ("chat", "push"), ("blog", "poll"), ("forum", "poll"))


async def _record(
    store: Store, now: datetime, event_id: str = "ev-1", **options: Any
) -> tuple[Notice, bool]:
    """A notice for the four PROVIDERS, unless ``options`` name others."""
    return await record_notice(store, now, event_id, **{"providers": PROVIDERS, **options})


async def test_record_creates_one_delivery_per_provider(store: Store, t0: datetime) -> None:
    """A recorded event gets one PENDING delivery per provider, each with its own SET jti."""
    notice, created = await _record(store, t0)
    assert created
    assert notice.msisdn == MSISDN
    assert notice.event_type is StoredEventType.RECYCLED
    assert notice.providers == 4
    assert re.fullmatch(r"nt_[A-Za-z0-9_-]{24}", notice.notice_id)
    found = await store.deliveries.for_notice(notice.notice_id)
    assert [(d.provider_id, d.mode.value) for d in found] == sorted(PROVIDERS)
    assert len({d.jti for d in found}) == 4
    assert all(d.state is DeliveryState.PENDING and d.notice == notice for d in found)
    assert await store.notices.get(notice.notice_id) == notice
    assert await store.deliveries.get(found[0].jti) == found[0]


async def test_same_event_twice_is_recorded_once(store: Store, t0: datetime) -> None:
    """The same carrier event id with the same content returns the first notice."""
    notice, _ = await _record(store, t0)
    again, created = await _record(
        store, t0 + timedelta(minutes=1), effective_at=notice.effective_at
    )
    assert not created
    assert again == notice
    assert len(await store.deliveries.for_notice(notice.notice_id)) == 4


async def test_same_event_id_with_other_content_conflicts(store: Store, t0: datetime) -> None:
    """The same event id with another number, type or time is refused."""
    notice, _ = await _record(store, t0)
    with pytest.raises(ConflictError):
        await _record(store, t0, effective_at=notice.effective_at, event_type="CANCELLED")
    with pytest.raises(ConflictError):
        await _record(store, t0, effective_at=notice.effective_at, msisdn="+8613900139000")
    with pytest.raises(ConflictError):
        await _record(store, t0, effective_at=notice.effective_at + timedelta(seconds=1))


async def test_event_ids_are_per_carrier(store: Store, t0: datetime) -> None:
    """Two carriers may use the same event id."""
    await _record(store, t0)
    other, created = await record_notice(
        store,
        t0,
        carrier_id="carrier-b",
        event_type=StoredEventType.CANCELLED,
        effective_at=t0,
        quiet_period_ends_at=t0 + timedelta(days=90),
        deadline=t0 + timedelta(days=80),
    )
    assert created
    assert other.providers == 0
    assert other.quiet_period_ends_at == t0 + timedelta(days=90)


async def test_concurrent_reports_record_one_notice(
    store: Store, other_store: Store, t0: datetime
) -> None:
    """A carrier retrying concurrently against two gateways records the event once."""
    effective = t0 - timedelta(hours=1)
    results = await asyncio.gather(
        *(_record(s, t0, effective_at=effective) for s in (store, other_store, store, other_store))
    )
    assert sum(created for _, created in results) == 1
    (notice_id,) = {n.notice_id for n, _ in results}
    assert len(await store.deliveries.for_notice(notice_id)) == 4


async def test_bad_input_is_refused(store: Store, t0: datetime) -> None:
    """A non-E.164 number, an unknown type or mode, or a repeated provider is refused."""
    with pytest.raises(ValueError, match=r"E\.164"):
        await _record(store, t0, msisdn="13800138000")
    with pytest.raises(ValueError, match="PORTED"):
        await _record(store, t0, event_type="PORTED")
    with pytest.raises(ValueError, match="email"):
        await _record(store, t0, providers=[("pay", "email")])
    with pytest.raises(ValueError, match="once"):
        await _record(store, t0, providers=[("pay", "push"), ("pay", "poll")])


async def test_poll_returns_pending_sets_until_acknowledged(store: Store, t0: datetime) -> None:
    """Polls return a provider's pending SETs, oldest first, until they are acknowledged."""
    for i in range(3):
        await _record(store, t0 + timedelta(seconds=i), f"ev-{i}", providers=[("blog", "poll")])
    batch, more = await store.deliveries.poll("blog", max_events=2, now=t0 + timedelta(minutes=1))
    assert more
    assert [d.notice.event_id for d in batch] == ["ev-0", "ev-1"]
    assert all(d.delivered_at == t0 + timedelta(minutes=1) for d in batch)
    again, _ = await store.deliveries.poll("blog", max_events=2, now=t0 + timedelta(minutes=2))
    assert [d.jti for d in again] == [d.jti for d in batch]
    assert all(d.attempts == 2 and d.delivered_at == t0 + timedelta(minutes=1) for d in again)
    acked = await store.deliveries.ack("blog", [batch[0].jti, batch[0].jti, "unknown"], now=t0)
    assert acked == 1
    assert await store.deliveries.ack("blog", [batch[0].jti]) == 0
    rest, more = await store.deliveries.poll("blog", max_events=10, now=t0)
    assert not more
    assert [d.notice.event_id for d in rest] == ["ev-1", "ev-2"]
    assert await store.deliveries.poll("nobody", now=t0) == ([], False)


async def test_providers_cannot_ack_each_others_sets(store: Store, t0: datetime) -> None:
    """An ack of another provider's jti is ignored."""
    notice, _ = await _record(store, t0)
    blog = next(
        d for d in await store.deliveries.for_notice(notice.notice_id) if d.provider_id == "blog"
    )
    assert await store.deliveries.ack("forum", [blog.jti]) == 0
    assert await store.deliveries.reject("forum", {blog.jti: "invalid_key: no"}) == 0
    still = await store.deliveries.get(blog.jti)
    assert still is not None
    assert still.state is DeliveryState.PENDING


async def test_refused_sets_are_failed(store: Store, t0: datetime) -> None:
    """SETs the provider reports as errors (setErrs) are FAILED with the error and not resent."""
    await _record(store, t0, providers=[("blog", "poll")])
    (d,), _ = await store.deliveries.poll("blog", now=t0)
    assert await store.deliveries.reject("blog", {d.jti: "invalid_key: unknown kid"}) == 1
    failed = await store.deliveries.get(d.jti)
    assert failed is not None
    assert failed.state is DeliveryState.FAILED
    assert failed.last_error == "invalid_key: unknown kid"
    assert await store.deliveries.poll("blog", now=t0) == ([], False)


async def test_confirm_action_records_once(store: Store, t0: datetime) -> None:
    """A confirmation is recorded once, implies receipt, and cannot be dated in the future."""
    notice, _ = await _record(store, t0)
    blog = next(
        d for d in await store.deliveries.for_notice(notice.notice_id) if d.provider_id == "blog"
    )
    now = t0 + timedelta(hours=2)
    assert await store.deliveries.confirm_action(
        "blog", blog.jti, bindings_removed=1, acted_at=now + timedelta(days=1), now=now
    )
    assert not await store.deliveries.confirm_action("blog", blog.jti, bindings_removed=5, now=now)
    acted = await store.deliveries.get(blog.jti)
    assert acted is not None
    assert acted.acted_at == now
    assert acted.confirmed_at == now
    assert acted.bindings_removed == 1
    assert acted.state is DeliveryState.ACKNOWLEDGED
    assert acted.acknowledged_at == acted.delivered_at == now


async def test_confirm_action_keeps_earlier_action_time(store: Store, t0: datetime) -> None:
    """A provider may confirm later than it acted; the earlier action time is kept."""
    notice, _ = await _record(store, t0, providers=[("blog", "poll")])
    (d,) = await store.deliveries.for_notice(notice.notice_id)
    await store.deliveries.ack("blog", [d.jti], now=t0)
    acted_at = t0 + timedelta(hours=1)
    assert await store.deliveries.confirm_action(
        "blog", d.jti, bindings_removed=0, acted_at=acted_at, now=t0 + timedelta(hours=3)
    )
    acted = await store.deliveries.get(d.jti)
    assert acted is not None
    assert acted.acted_at == acted_at
    assert acted.acknowledged_at == t0


async def test_confirm_action_of_unknown_notice(store: Store, t0: datetime) -> None:
    """Confirming an unknown jti, or another provider's, is NOT_FOUND; negatives are refused."""
    notice, _ = await _record(store, t0)
    blog = next(
        d for d in await store.deliveries.for_notice(notice.notice_id) if d.provider_id == "blog"
    )
    with pytest.raises(NotFoundError):
        await store.deliveries.confirm_action("blog", "nope", bindings_removed=0)
    with pytest.raises(NotFoundError):
        await store.deliveries.confirm_action("forum", blog.jti, bindings_removed=0)
    with pytest.raises(ValueError, match="bindings_removed"):
        await store.deliveries.confirm_action("blog", blog.jti, bindings_removed=-1)


async def test_concurrent_polls_and_acks_of_one_provider(
    store: Store, other_store: Store, t0: datetime
) -> None:
    """A provider polling and acknowledging through two gateways at once loses nothing."""
    for i in range(12):
        await _record(store, t0 + timedelta(seconds=i), f"ev-{i}", providers=[("blog", "poll")])
    batch, _ = await store.deliveries.poll("blog", max_events=12, now=t0)
    jtis = [d.jti for d in batch]
    results = await asyncio.gather(
        store.deliveries.ack("blog", jtis[:8], now=t0),
        other_store.deliveries.ack("blog", jtis[4:], now=t0),
        store.deliveries.poll("blog", max_events=5, now=t0),
        other_store.deliveries.poll("blog", max_events=5, now=t0),
    )
    assert results[0] + results[1] == 12
    assert await store.deliveries.poll("blog", now=t0) == ([], False)


def _row(kind: str) -> AuditDraft:
    return AuditDraft(kind=kind, actor="provider:blog", subject="provider:blog", detail={})


async def _audit_kinds(store: Store) -> list[str]:
    async with store.engine.connect() as conn:
        return list((await conn.scalars(select(audit_log.c.kind).order_by(audit_log.c.seq))).all())


async def test_acks_confirmations_and_give_ups_commit_with_their_audit_rows(
    store: Store, t0: datetime
) -> None:
    """A poll's acks and refusals, a confirmation and a push given up each append their
    audit row in the transaction of the change: the row is there exactly when the change is."""
    await _record(store, t0, "ev-1", providers=[("blog", "poll"), ("pay", "push")])
    await _record(store, t0, "ev-2", providers=[("blog", "poll")])
    batch, _ = await store.deliveries.poll("blog", now=t0)
    settled = await store.deliveries.settle(
        "blog",
        [batch[0].jti],
        {batch[1].jti: "invalid_key: no"},
        now=t0,
        audit=lambda acked, refused: AuditDraft(
            kind="notice.acknowledged",
            actor="provider:blog",
            subject="provider:blog",
            detail={"acknowledged": acked, "refused": refused},
        ),
    )
    assert settled == (1, 1)
    assert await store.deliveries.settle(
        "blog", [batch[0].jti], {}, audit=lambda a, r: _row("x")
    ) == (0, 0)
    recorded = await store.deliveries.confirm_action(
        "blog", batch[0].jti, bindings_removed=1, now=t0, audit=lambda ok: _row("notice.confirmed")
    )
    assert recorded
    (cursor,) = await store.cursors.claim_due(worker_id="w", now=t0)
    (push,) = await store.cursors.pending(cursor, limit=10)
    await store.cursors.settle(
        cursor,
        [PushResult.refused(push.jti, "UNAUTHENTICATED")],
        worker_id="w",
        now=t0,
        audit=[_row("notice.undelivered")],
    )
    kinds = await _audit_kinds(store)
    assert kinds.count("notice.acknowledged") == 1
    assert kinds.count("notice.confirmed") == 1
    assert kinds.count("notice.undelivered") == 1
    assert "x" not in kinds  # nothing changed, no row
    assert (await store.audit.verify()).ok


async def test_an_audit_row_that_cannot_be_written_undoes_the_change(
    store: Store, t0: datetime
) -> None:
    """When the audit row fails, the ack, the confirmation and the give-up it records are
    rolled back with it: a crash or a failure never keeps one without the other."""
    await _record(store, t0, providers=[("blog", "poll"), ("pay", "push")])
    (blog,), _ = await store.deliveries.poll("blog", now=t0)
    unfit = _row("NOT A KIND")
    with pytest.raises(AuditValueError):
        await store.deliveries.settle("blog", [blog.jti], {}, now=t0, audit=lambda a, r: unfit)
    with pytest.raises(AuditValueError):
        await store.deliveries.confirm_action(
            "blog", blog.jti, bindings_removed=1, now=t0, audit=lambda ok: unfit
        )
    (cursor,) = await store.cursors.claim_due(worker_id="w", now=t0)
    (push,) = await store.cursors.pending(cursor, limit=10)
    with pytest.raises(AuditValueError):
        await store.cursors.settle(
            cursor,
            [PushResult.given_up(push.jti, "x")],
            worker_id="w",
            now=t0,
            audit=[unfit],
        )
    for jti in (blog.jti, push.jti):
        delivery = await store.deliveries.get(jti)
        assert delivery is not None
        assert delivery.state is DeliveryState.PENDING
        assert delivery.acted_at is None
    assert await _audit_kinds(store) == []
