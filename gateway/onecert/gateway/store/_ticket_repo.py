"""Unbind tickets: opened by ``Gateway.Unbind``, leased by delivery workers, closed by answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from onecert.gateway.store._audit_repo import AuditedRepository
from onecert.gateway.store._claims import Lease, WorkQueue, claim_leases
from onecert.gateway.store._models import unbind_tickets
from onecert.gateway.store._rows import (
    OPEN_TICKET,
    attempt_values,
    aware,
    check_text,
    expiry_error,
    fetch_all,
    fetch_first,
    fetch_one,
    lease_free,
    new_id,
    resolve_now,
    ticket_from_row,
)
from onecert.gateway.store._types import (
    AttemptOutcome,
    AuditDraft,
    ConflictError,
    NotFoundError,
    StoredTicketState,
    Ticket,
)

__all__ = ["TicketRepository"]

# How many expired tickets one claim turns to FAILED, at most.
_EXPIRY_BATCH = 500
_TICKETS = WorkQueue(unbind_tickets, unbind_tickets.c.ticket_id, lambda: select(unbind_tickets))


class TicketRepository(AuditedRepository):
    """Unbind tickets (``store.tickets``).

    Tickets hold a sealed payload, never a raw msisdn. Methods that take an
    ``audit`` callback append its row in the same transaction as the change.
    """

    async def create(
        self,
        *,
        handle_digest: str,
        sub_hash: str,
        provider_id: str,
        reason: int,
        payload: str,
        msisdn_hash: str,
        expires_at: datetime,
        now: datetime | None = None,
        audit: Callable[[Ticket, bool], AuditDraft] | None = None,
    ) -> tuple[Ticket, bool]:
        """Open an unbind ticket, or return the one this handle already opened.

        Idempotent on ``handle_digest`` (SHA-256 hex of the handle), also
        when two requests race: returns ``(ticket, created)``. The new
        ticket is QUEUED and due at once. ``payload`` is the sealed text the
        delivery worker opens (msisdn and account ref), never parsed here.
        ``audit(ticket, created)`` gives the audit row appended in the same
        transaction. Raises ConflictError if the handle opened a ticket for
        another citizen or provider (a handle names both, so this is a bug).
        """
        now = resolve_now(now)
        expires_at = aware(expires_at, "expires_at")
        values = {
            "ticket_id": new_id("ut_"),
            "handle_digest": check_text("handle_digest", handle_digest, 64),
            "sub_hash": check_text("sub_hash", sub_hash, 64),
            "provider_id": check_text("provider_id", provider_id, 64),
            "reason": reason,
            "payload": check_text("payload", payload, 65536),
            "msisdn_hash": check_text("msisdn_hash", msisdn_hash, 64),
            "state": StoredTicketState.QUEUED.value,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
            "expires_at": expires_at,
            "next_attempt_at": now,
        }
        t = unbind_tickets.c
        async with self._db.write() as conn:
            # On the database's clock, the ticket keeps the lifetime it was
            # given (expires_at - now) from the database's now.
            stamped = await self._db.clock(conn, now)
            if stamped != now:
                values.update(
                    created_at=stamped,
                    updated_at=stamped,
                    next_attempt_at=stamped,
                    expires_at=stamped + (expires_at - now),
                )
                now = stamped
            stmt = (
                self._db.insert(unbind_tickets)
                .values(**values)
                .on_conflict_do_nothing(index_elements=[t.handle_digest])
                .returning(t.ticket_id)
            )
            created = (await conn.execute(stmt)).first() is not None
            # Under READ COMMITTED this read sees a row a racing request
            # committed (ON CONFLICT waited for it).
            row = await fetch_one(
                conn, select(unbind_tickets).where(t.handle_digest == handle_digest)
            )
            ticket = ticket_from_row(row)
            if not created and (ticket.sub_hash != sub_hash or ticket.provider_id != provider_id):
                raise ConflictError(
                    "the handle already opened a ticket for another citizen or provider"
                )
            if audit is not None:
                await self._audit.chain(conn, [audit(ticket, created)], now)
        return ticket, created

    async def get(self, ticket_id: str) -> Ticket | None:
        """The ticket, or None. Callers check ``sub_hash`` before showing it."""
        async with self._db.read() as conn:
            row = await fetch_first(
                conn, select(unbind_tickets).where(unbind_tickets.c.ticket_id == ticket_id)
            )
        return None if row is None else ticket_from_row(row)

    async def claim_due(
        self,
        *,
        worker_id: str,
        limit: int = 10,
        lease_s: float = 60.0,
        now: datetime | None = None,
        expired: list[Ticket] | None = None,
        audit_expired: Callable[[Ticket], AuditDraft] | None = None,
    ) -> list[Ticket]:
        """Lease up to ``limit`` tickets that are due, for one delivery attempt each.

        Due: QUEUED or PENDING, ``next_attempt_at <= now``, and no live lease
        (a lease whose ``lease_until`` passed belongs to a crashed or stuck
        worker and no longer counts). Each claimed ticket gets
        ``lease_owner = worker_id``, ``lease_until = now + lease_s`` and one
        more attempt, atomically: two workers, in one process or in several
        processes on the same database, never claim the same ticket while a
        lease lives. Unleased tickets past ``expires_at`` become FAILED on
        the way (last_error says so) and are not returned; pass a list as
        ``expired`` to have them appended to it, and ``audit_expired`` for
        the audit row of each, appended in the same transaction.
        """
        lease = Lease.take(worker_id, limit=limit, lease_s=lease_s, now=resolve_now(now))
        t = unbind_tickets.c
        async with self._db.write() as conn:
            lease = lease.at(await self._db.clock(conn, lease.now))
            now = lease.now
            closed = await self._expire(
                conn, now, want_rows=expired is not None or audit_expired is not None
            )
            if audit_expired is not None:
                drafts = [audit_expired(ticket_from_row(r)) for r in closed]
                await self._audit.chain(conn, drafts, now)
            rows = await claim_leases(
                conn,
                _TICKETS,
                lease,
                where=[t.state.in_(OPEN_TICKET), t.expires_at > now, t.next_attempt_at <= now],
                order=[t.next_attempt_at, t.ticket_id],
                values={"updated_at": now},
            )
        # Reported only once committed.
        if expired is not None:
            expired.extend(ticket_from_row(r) for r in closed)
        return [ticket_from_row(r) for r in rows]

    async def _expire(
        self, conn: AsyncConnection, now: datetime, *, want_rows: bool
    ) -> Sequence[RowMapping]:
        # Unleased open tickets past expires_at become FAILED; returns them
        # (read back only when someone wants them).
        t = unbind_tickets.c
        free = and_(t.state.in_(OPEN_TICKET), lease_free(unbind_tickets, now))
        rows_expired = (
            await conn.execute(
                select(t.ticket_id, t.state, t.last_error)
                .where(free, t.expires_at <= now)
                .limit(_EXPIRY_BATCH)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for row in rows_expired:
            await conn.execute(
                update(unbind_tickets)
                .where(t.ticket_id == row.ticket_id)
                .values(
                    state=StoredTicketState.FAILED.value,
                    last_error=expiry_error(StoredTicketState(row.state), row.last_error),
                    closed_at=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
            )
        if not (want_rows and rows_expired):
            return []
        return await fetch_all(
            conn,
            select(unbind_tickets).where(t.ticket_id.in_([r.ticket_id for r in rows_expired])),
        )

    async def finish_attempt(
        self,
        ticket_id: str,
        *,
        worker_id: str,
        outcome: AttemptOutcome | str,
        provider_reason: str = "",
        answered_at: datetime | None = None,
        error: str = "",
        next_attempt_at: datetime | None = None,
        now: datetime | None = None,
        audit: Callable[[Ticket], AuditDraft] | None = None,
    ) -> Ticket:
        """Record how a delivery attempt ended and release the lease; returns the ticket.

        - DONE / REJECTED (the provider's final answer, received at
          ``answered_at``, default ``now``): the ticket ends in that state.
          Recorded even if this worker's lease was lost, since the provider
          applies an unbind once per ticket id and its answer is the truth.
        - PENDING: the provider accepted and will finish later; asked again
          at ``next_attempt_at`` (required).
        - RETRY: no answer (``error`` required); tried again at
          ``next_attempt_at`` (required).
        - FATAL: no answer and none will come; FAILED with ``error``.

        Retries are never scheduled after ``expires_at``; an attempt that
        ends past it turns the ticket FAILED. Terminal tickets never change,
        and a worker whose lease was taken over changes nothing unless it
        brings a final answer. ``audit(ticket)`` gives the audit row appended,
        in the same transaction, when this attempt makes the ticket final.
        Raises NotFoundError for an unknown ticket.
        """
        now = resolve_now(now)
        outcome = AttemptOutcome(outcome)
        if outcome in (AttemptOutcome.PENDING, AttemptOutcome.RETRY) and next_attempt_at is None:
            raise ValueError(f"{outcome.value} needs next_attempt_at")
        if outcome in (AttemptOutcome.RETRY, AttemptOutcome.FATAL) and not error:
            raise ValueError(f"{outcome.value} needs an error")
        t = unbind_tickets.c
        async with self._db.write() as conn:
            row = await fetch_first(
                conn, select(unbind_tickets).where(t.ticket_id == ticket_id).with_for_update()
            )
            if row is None:
                raise NotFoundError("no such ticket")
            ticket = ticket_from_row(row)
            final = outcome in (AttemptOutcome.DONE, AttemptOutcome.REJECTED)
            if ticket.state.terminal or (not final and ticket.lease_owner != worker_id):
                return ticket
            values: dict[str, Any] = attempt_values(
                ticket,
                outcome,
                now=now,
                provider_reason=provider_reason,
                answered_at=answered_at,
                error=error,
                next_attempt_at=next_attempt_at,
            )
            values.update(updated_at=now, lease_owner=None, lease_until=None)
            await conn.execute(
                update(unbind_tickets).where(t.ticket_id == ticket_id).values(**values)
            )
            row = await fetch_one(conn, select(unbind_tickets).where(t.ticket_id == ticket_id))
            after = ticket_from_row(row)
            if audit is not None and after.state.terminal:
                await self._audit.chain(conn, [audit(after)], now)
        return after
