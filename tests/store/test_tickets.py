"""Unbind tickets: idempotent creation, leased claims, and state transitions."""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import datetime, timedelta

import pytest

from onecert.gateway.store import (
    AttemptOutcome,
    ConflictError,
    NotFoundError,
    Store,
    StoredTicketState,
    Ticket,
)

HOUR = timedelta(hours=1)


def _digest(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


async def _create(
    store: Store,
    now: datetime,
    handle: str = "handle-1",
    *,
    sub_hash: str = "sub-a",
    provider_id: str = "example-pay",
    expires_in: timedelta = 24 * HOUR,
) -> tuple[Ticket, bool]:
    return await store.tickets.create(
        handle_digest=_digest(handle),
        sub_hash=sub_hash,
        provider_id=provider_id,
        reason=1,
        payload="sealed:opaque",
        msisdn_hash=_digest("+8613800138000"),
        expires_at=now + expires_in,
        now=now,
    )


async def test_create_is_idempotent_on_the_handle(store: Store, t0: datetime) -> None:
    """The same handle twice gives the same QUEUED ticket, created only once."""
    first, created = await _create(store, t0)
    again, created_again = await _create(store, t0 + timedelta(seconds=5))
    assert created
    assert not created_again
    assert again == first
    assert first.state is StoredTicketState.QUEUED
    assert first.attempts == 0
    assert first.next_attempt_at == t0
    assert first.created_at == t0
    assert first.payload == "sealed:opaque"
    assert await store.tickets.get(first.ticket_id) == first


async def test_concurrent_creates_make_one_ticket(
    store: Store, other_store: Store, t0: datetime
) -> None:
    """Racing creates with one handle, from two processes, yield one ticket."""
    results = await asyncio.gather(
        *(_create(s, t0, "raced") for s in (store, other_store, store, other_store))
    )
    assert sum(created for _, created in results) == 1
    assert len({ticket.ticket_id for ticket, _ in results}) == 1


async def test_same_handle_for_another_citizen_is_a_conflict(store: Store, t0: datetime) -> None:
    """A handle digest reused by another citizen is refused, not merged."""
    await _create(store, t0)
    with pytest.raises(ConflictError):
        await _create(store, t0, sub_hash="sub-b")


async def test_ticket_ids_are_random_and_url_safe(store: Store, t0: datetime) -> None:
    """Ticket ids are long, URL-safe and distinct."""
    ids = {(await _create(store, t0, f"h{i}"))[0].ticket_id for i in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"ut_[A-Za-z0-9_-]{24}", i) for i in ids)


async def test_unknown_ticket_is_none(store: Store) -> None:
    """An unknown ticket id reads as None."""
    assert await store.tickets.get("ut_nope") is None


async def test_claim_leases_due_tickets_once(store: Store, t0: datetime) -> None:
    """A claim leases due tickets, counts the attempt, and leaves them alone while leased."""
    ticket, _ = await _create(store, t0)
    claimed = await store.tickets.claim_due(worker_id="w1", now=t0, lease_s=30)
    assert [c.ticket_id for c in claimed] == [ticket.ticket_id]
    assert claimed[0].attempts == 1
    assert claimed[0].lease_owner == "w1"
    assert claimed[0].lease_until == t0 + timedelta(seconds=30)
    assert await store.tickets.claim_due(worker_id="w2", now=t0 + timedelta(seconds=29)) == []


async def test_not_yet_due_tickets_are_not_claimed(store: Store, t0: datetime) -> None:
    """A ticket created after ``now`` (not due yet) is not claimed."""
    await _create(store, t0)
    assert await store.tickets.claim_due(worker_id="w", now=t0 - timedelta(seconds=1)) == []


async def test_expired_lease_makes_ticket_claimable_again(store: Store, t0: datetime) -> None:
    """A crashed worker's lease runs out and another worker takes the ticket over."""
    ticket, _ = await _create(store, t0)
    await store.tickets.claim_due(worker_id="crashed", now=t0, lease_s=30)
    again = await store.tickets.claim_due(worker_id="w2", now=t0 + timedelta(seconds=30))
    assert [c.ticket_id for c in again] == [ticket.ticket_id]
    assert again[0].attempts == 2
    assert again[0].lease_owner == "w2"


async def test_claim_respects_limit_and_order(store: Store, t0: datetime) -> None:
    """Claims take the longest-due tickets first, at most ``limit``."""
    made = [(await _create(store, t0 + timedelta(seconds=i), f"h{i}"))[0] for i in range(5)]
    now = t0 + timedelta(minutes=1)
    first = await store.tickets.claim_due(worker_id="w", limit=3, now=now)
    assert [t.ticket_id for t in first] == [t.ticket_id for t in made[:3]]
    rest = await store.tickets.claim_due(worker_id="w", limit=3, now=now)
    assert [t.ticket_id for t in rest] == [t.ticket_id for t in made[3:]]


async def test_two_workers_on_two_stores_never_share_a_ticket(
    store: Store, other_store: Store, t0: datetime
) -> None:
    """Concurrent claims from two processes hand each ticket to exactly one worker."""
    made = {(await _create(store, t0, f"h{i}"))[0].ticket_id for i in range(40)}
    seen: list[str] = []
    for _ in range(4):
        rounds = await asyncio.gather(
            store.tickets.claim_due(worker_id="a1", limit=3, now=t0),
            other_store.tickets.claim_due(worker_id="b1", limit=3, now=t0),
            store.tickets.claim_due(worker_id="a2", limit=3, now=t0),
            other_store.tickets.claim_due(worker_id="b2", limit=3, now=t0),
        )
        ids = [t.ticket_id for batch in rounds for t in batch]
        assert len(ids) == len(set(ids))
        seen.extend(ids)
    assert len(seen) == len(set(seen)) == 40
    assert set(seen) == made
    for ticket_id in made:
        ticket = await store.tickets.get(ticket_id)
        assert ticket is not None
        assert ticket.attempts == 1


async def _claimed(store: Store, t0: datetime, *, expires_in: timedelta = 24 * HOUR) -> Ticket:
    ticket, _ = await _create(store, t0, expires_in=expires_in)
    claimed = await store.tickets.claim_due(worker_id="w", now=t0)
    assert [c.ticket_id for c in claimed] == [ticket.ticket_id]
    return claimed[0]


async def _finish(
    store: Store,
    ticket: Ticket,
    outcome: AttemptOutcome | str,
    *,
    now: datetime,
    error: str = "",
    provider_reason: str = "",
    next_attempt_at: datetime | None = None,
) -> Ticket:
    """Worker "w" ends its attempt at ``ticket`` with ``outcome``."""
    return await store.tickets.finish_attempt(
        ticket.ticket_id,
        worker_id="w",
        outcome=outcome,
        provider_reason=provider_reason,
        error=error,
        next_attempt_at=next_attempt_at,
        now=now,
    )


async def test_done_is_final(store: Store, t0: datetime) -> None:
    """DONE records the answer and never changes again."""
    ticket = await _claimed(store, t0)
    answered = t0 + timedelta(seconds=2)
    done = await store.tickets.finish_attempt(
        ticket.ticket_id,
        worker_id="w",
        outcome=AttemptOutcome.DONE,
        provider_reason="unbound",
        answered_at=answered,
        now=answered,
    )
    assert done.state is StoredTicketState.DONE
    assert done.provider_outcome == "DONE"
    assert done.provider_reason == "unbound"
    assert done.answered_at == answered
    assert done.closed_at == answered
    assert done.lease_owner is None
    for outcome in AttemptOutcome:
        after = await _finish(
            store, ticket, outcome, error="x", next_attempt_at=t0 + HOUR, now=t0 + HOUR
        )
        assert after == done
    assert await store.tickets.claim_due(worker_id="w", now=t0 + 48 * HOUR) == []
    assert await store.tickets.get(ticket.ticket_id) == done


async def test_rejected_is_final_with_reason(store: Store, t0: datetime) -> None:
    """REJECTED records the provider's reason and is final."""
    ticket = await _claimed(store, t0)
    rejected = await _finish(store, ticket, "REJECTED", provider_reason="unknown account", now=t0)
    assert rejected.state is StoredTicketState.REJECTED
    assert rejected.provider_reason == "unknown account"
    assert rejected.answered_at == t0


@pytest.mark.parametrize(
    ("outcome", "answer", "expected"),
    [
        pytest.param(
            AttemptOutcome.PENDING,
            {"provider_reason": "manual review"},
            {"state": StoredTicketState.PENDING, "provider_outcome": "PENDING"},
            id="pending",
        ),
        pytest.param(
            AttemptOutcome.RETRY,
            {"error": "UNAVAILABLE: connection refused"},
            {
                "state": StoredTicketState.QUEUED,
                "last_error": "UNAVAILABLE: connection refused",
                "lease_owner": None,
            },
            id="retry",
        ),
    ],
)
async def test_an_unfinished_attempt_is_asked_again_later(
    store: Store,
    t0: datetime,
    outcome: AttemptOutcome,
    answer: dict[str, str],
    expected: dict[str, object],
) -> None:
    """PENDING (the provider's answer) and RETRY (a retryable error, kept as last_error,
    the ticket QUEUED) wait until next_attempt_at, then are claimed again and can
    finish DONE."""
    ticket = await _claimed(store, t0)
    later = t0 + timedelta(seconds=20)
    waiting = await _finish(store, ticket, outcome, next_attempt_at=later, now=t0, **answer)
    assert {name: getattr(waiting, name) for name in expected} == expected
    assert waiting.next_attempt_at == later
    assert await store.tickets.claim_due(worker_id="w", now=later - timedelta(seconds=1)) == []
    (again,) = await store.tickets.claim_due(worker_id="w", now=later)
    assert again.attempts == 2
    done = await _finish(store, ticket, AttemptOutcome.DONE, now=later)
    assert done.state is StoredTicketState.DONE


async def test_fatal_error_fails_the_ticket(store: Store, t0: datetime) -> None:
    """A non-retryable error ends the ticket FAILED with the error."""
    ticket = await _claimed(store, t0)
    failed = await _finish(
        store, ticket, AttemptOutcome.FATAL, error="INVALID_ARGUMENT: bad account ref", now=t0
    )
    assert failed.state is StoredTicketState.FAILED
    assert failed.last_error == "INVALID_ARGUMENT: bad account ref"


async def test_expired_ticket_fails_with_last_error(store: Store, t0: datetime) -> None:
    """A ticket not answered before it expires becomes FAILED, keeping the last error."""
    ticket = await _claimed(store, t0, expires_in=HOUR)
    await _finish(
        store,
        ticket,
        AttemptOutcome.RETRY,
        error="UNAVAILABLE: provider down",
        next_attempt_at=t0 + 2 * HOUR,
        now=t0,
    )
    after = await store.tickets.get(ticket.ticket_id)
    assert after is not None
    # Never scheduled past its expiry.
    assert after.next_attempt_at == t0 + HOUR
    assert await store.tickets.claim_due(worker_id="w", now=t0 + HOUR) == []
    failed = await store.tickets.get(ticket.ticket_id)
    assert failed is not None
    assert failed.state is StoredTicketState.FAILED
    assert failed.last_error is not None
    assert failed.last_error.startswith("expired before the provider answered")
    assert "UNAVAILABLE: provider down" in failed.last_error
    assert failed.closed_at == t0 + HOUR


async def test_attempt_ending_after_expiry_fails(store: Store, t0: datetime) -> None:
    """A retryable error reported after the expiry ends the ticket FAILED."""
    ticket = await _claimed(store, t0, expires_in=HOUR)
    failed = await _finish(
        store,
        ticket,
        AttemptOutcome.RETRY,
        error="DEADLINE_EXCEEDED",
        next_attempt_at=t0 + 2 * HOUR,
        now=t0 + HOUR,
    )
    assert failed.state is StoredTicketState.FAILED
    assert failed.last_error is not None
    assert "DEADLINE_EXCEEDED" in failed.last_error


async def test_pending_past_expiry_fails(store: Store, t0: datetime) -> None:
    """A ticket still PENDING at its expiry becomes FAILED, saying it was pending."""
    ticket = await _claimed(store, t0, expires_in=HOUR)
    await _finish(store, ticket, AttemptOutcome.PENDING, next_attempt_at=t0 + 3 * HOUR, now=t0)
    assert await store.tickets.claim_due(worker_id="w", now=t0 + 2 * HOUR) == []
    failed = await store.tickets.get(ticket.ticket_id)
    assert failed is not None
    assert failed.state is StoredTicketState.FAILED
    assert failed.last_error == "expired while the provider's answer was PENDING"


async def test_a_leased_expired_ticket_is_left_to_its_worker(store: Store, t0: datetime) -> None:
    """An expired ticket under a live lease is not failed behind its worker's back."""
    ticket = await _claimed(store, t0, expires_in=timedelta(seconds=10))
    now = t0 + timedelta(seconds=20)
    assert await store.tickets.claim_due(worker_id="other", now=now) == []
    current = await store.tickets.get(ticket.ticket_id)
    assert current is not None
    assert current.state is StoredTicketState.QUEUED
    done = await _finish(store, ticket, "DONE", now=now)
    assert done.state is StoredTicketState.DONE


async def test_worker_that_lost_its_lease_changes_nothing(store: Store, t0: datetime) -> None:
    """After a takeover the old worker's retry is ignored, but a final answer still counts."""
    ticket = await _claimed(store, t0)
    later = t0 + timedelta(minutes=5)
    (taken,) = await store.tickets.claim_due(worker_id="w2", now=later)
    ignored = await _finish(
        store, ticket, AttemptOutcome.RETRY, error="late", next_attempt_at=later + HOUR, now=later
    )
    assert ignored == taken
    done = await _finish(store, ticket, "DONE", now=later)
    assert done.state is StoredTicketState.DONE
    # The new owner's late retry cannot reopen it.
    after = await store.tickets.finish_attempt(
        ticket.ticket_id,
        worker_id="w2",
        outcome=AttemptOutcome.RETRY,
        error="x",
        next_attempt_at=later + HOUR,
        now=later,
    )
    assert after.state is StoredTicketState.DONE


async def test_finish_checks_its_arguments(store: Store, t0: datetime) -> None:
    """Unknown tickets, retries without a time and errors without text are refused."""
    ticket = await _claimed(store, t0)
    with pytest.raises(NotFoundError):
        await store.tickets.finish_attempt("ut_nope", worker_id="w", outcome="DONE")
    with pytest.raises(ValueError, match="next_attempt_at"):
        await store.tickets.finish_attempt(
            ticket.ticket_id, worker_id="w", outcome="RETRY", error="e"
        )
    with pytest.raises(ValueError, match="error"):
        await store.tickets.finish_attempt(ticket.ticket_id, worker_id="w", outcome="FATAL")
    with pytest.raises(ValueError, match="BOGUS"):
        await store.tickets.finish_attempt(ticket.ticket_id, worker_id="w", outcome="BOGUS")


async def test_errors_are_masked_in_receipts(store: Store, t0: datetime) -> None:
    """A phone number inside an error text is masked before it is stored."""
    ticket = await _claimed(store, t0)
    failed = await _finish(
        store, ticket, "FATAL", error="INVALID_ARGUMENT: +8613800138000 unknown", now=t0
    )
    assert failed.last_error is not None
    assert "13800138000" not in failed.last_error


async def test_claim_skips_rows_locked_by_another_transaction(
    store: Store, other_store: Store, t0: datetime
) -> None:
    """PostgreSQL: a ticket locked by another transaction is skipped, not waited for.

    SQLite: a claim waits for the other writer's lock (BEGIN IMMEDIATE) instead.
    """
    first, _ = await _create(store, t0, "locked")
    second, _ = await _create(store, t0 + timedelta(seconds=1), "free")
    async with store.engine.connect() as conn:
        if store.dialect == "postgresql":
            await conn.begin()
            await conn.exec_driver_sql(
                "SELECT ticket_id FROM unbind_tickets WHERE ticket_id = $1 FOR UPDATE",
                (first.ticket_id,),
            )
            claimed = await asyncio.wait_for(
                other_store.tickets.claim_due(worker_id="b", now=t0 + HOUR), timeout=5
            )
            assert [t.ticket_id for t in claimed] == [second.ticket_id]
            await conn.rollback()
        else:
            await conn.execution_options(onecert_sqlite_begin="IMMEDIATE")
            await conn.begin()
            claim = asyncio.ensure_future(
                other_store.tickets.claim_due(worker_id="b", now=t0 + HOUR)
            )
            await asyncio.sleep(0.2)
            assert not claim.done()
            await conn.rollback()
            claimed = await asyncio.wait_for(claim, timeout=5)
            assert {t.ticket_id for t in claimed} == {first.ticket_id, second.ticket_id}
