"""The storage layer: every durable piece of gateway state, on SQLite or PostgreSQL.

One :class:`Store` per process, shared by every task. Each method is one
short transaction. Methods that write run in a *write transaction*: on
SQLite ``BEGIN IMMEDIATE`` (the database write lock is taken before the
first read, so a read-then-write never races another process); on
PostgreSQL a READ COMMITTED transaction whose reads of work items use
``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent workers never claim the
same row and never wait for each other.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import statistics
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from onecert.gateway.store._audit import canonical_detail, check_audit_fields, row_hash
from onecert.gateway.store._engine import (
    BEGIN_OPTION,
    MIGRATION_LOCK,
    configure_sqlite,
    current_revision,
    head_revision,
    normalize_url,
    run_alembic,
)
from onecert.gateway.store._models import (
    GENESIS_HASH,
    audit_head,
    audit_log,
    deliveries,
    number_events,
    replay_cache,
    unbind_tickets,
)
from onecert.gateway.store._rows import (
    OPEN_TICKET,
    attempt_values,
    aware,
    check_text,
    delivery_from_row,
    delivery_query,
    error_text,
    expiry_error,
    fetch_all,
    fetch_first,
    fetch_one,
    instant,
    lease_free,
    new_id,
    notice_from_row,
    notice_query,
    resolve_now,
    ticket_from_row,
    utcnow,
)
from onecert.gateway.store._types import (
    AttemptOutcome,
    AuditDraft,
    AuditEntry,
    AuditVerification,
    ConflictError,
    Delivery,
    DeliveryMode,
    DeliveryState,
    NotFoundError,
    Notice,
    NumberEvent,
    NumberEventType,
    ProviderComplianceRow,
    RecycledCheck,
    Ticket,
    TicketState,
    classify_recycled,
)
from onecert.sdk._msisdn import is_e164

__all__ = ["Store", "StoreReplayCache"]

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# How many expired tickets one claim turns to FAILED, at most.
_EXPIRY_BATCH = 500


class Store:
    """All durable gateway state: replay cache, unbind tickets, notices, audit.

    Build with :meth:`open`, run :meth:`upgrade` once at start-up, share the
    object between tasks, :meth:`close` at shutdown (or ``async with``).
    Times are aware datetimes, stored and returned in UTC; every method that
    depends on the clock takes ``now`` (default: the current time) so that
    callers and tests control it. Raw msisdns are stored only in notices
    (the SET names the number); tickets hold a sealed payload instead, and
    the audit log refuses anything that reads like a phone number.
    """

    def __init__(self, engine: AsyncEngine, *, schema: str | None = None) -> None:
        """Wrap an engine built by :meth:`open` (prefer :meth:`open`)."""
        self._engine = engine
        self._schema = schema
        self._dialect = engine.dialect.name
        self._writer = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        # For a write that is one statement: no BEGIN/COMMIT round trips; the
        # statement is atomic and durable on its own.
        self._single = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if self._dialect == "postgresql"
            else engine.execution_options(**{BEGIN_OPTION: ""})
        )

    @classmethod
    def open(
        cls,
        url: str,
        *,
        schema: str | None = None,
        busy_timeout_ms: int = 5000,
        pool_size: int = 5,
        echo: bool = False,
    ) -> Store:
        """Create a store for ``url`` (nothing is connected until first use).

        Args:
            url: ``sqlite:///path/to/file.db`` or ``postgresql://user@host/db``
                (async drivers are chosen for you, see :func:`normalize_url`).
                SQLite connections use WAL, ``synchronous=FULL``, foreign keys
                and ``busy_timeout``.
            schema: PostgreSQL only: the schema to use (``search_path``);
                :meth:`upgrade` creates it if missing.
            busy_timeout_ms: SQLite only: how long to wait for the write lock.
            pool_size: PostgreSQL only: connections kept open per process.
            echo: log every SQL statement (debugging).
        """
        url = normalize_url(url)
        backend = make_url(url).get_backend_name()
        if backend == "postgresql":
            connect_args: dict[str, Any] = {}
            if schema is not None:
                if not _SCHEMA_NAME.fullmatch(schema):
                    raise ValueError("schema must match [a-z_][a-z0-9_]{0,62}")
                connect_args["server_settings"] = {"search_path": schema}
            engine = create_async_engine(
                url,
                connect_args=connect_args,
                pool_size=pool_size,
                pool_pre_ping=True,
                echo=echo,
            )
            return cls(engine, schema=schema)
        if schema is not None:
            raise ValueError("schema applies to PostgreSQL only")
        engine = create_async_engine(url, echo=echo)
        configure_sqlite(engine, busy_timeout_ms=busy_timeout_ms)
        return cls(engine)

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine (for diagnostics and tests)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------ schema

    async def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema to ``revision`` (alembic; idempotent).

        Safe when several gateways start at once: the migration runs in one
        transaction under a lock (PostgreSQL: an advisory lock; SQLite: the
        write lock), so the others wait and then find nothing to do.
        """
        if self._dialect == "sqlite":
            await self._ensure_wal()
        async with self._writer.begin() as conn:
            if self._dialect == "postgresql":
                await conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                if self._schema is not None:
                    await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            await conn.run_sync(run_alembic, "upgrade", revision)
        # Pooled connections may hold statements prepared against the old
        # schema; start afresh.
        await self._engine.dispose()

    async def _ensure_wal(self) -> None:
        delay = 0.01
        while True:
            async with self._engine.connect() as conn:
                raw = await conn.get_raw_connection()
                # Outside any transaction: the driver connection itself.
                driver: Any = raw.driver_connection
                try:
                    cursor = await driver.execute("PRAGMA journal_mode = WAL")
                    (mode,) = await cursor.fetchone()
                    await cursor.close()
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or delay > 5:
                        raise
                    mode = None
            if mode in ("wal", "memory"):
                return
            if mode is not None:
                raise RuntimeError(f"SQLite refused WAL mode (journal_mode is {mode})")
            await asyncio.sleep(delay)
            delay *= 2

    async def downgrade(self, revision: str = "base") -> None:
        """Migrate the schema down to ``revision`` ("base" drops everything)."""
        async with self._writer.begin() as conn:
            if self._dialect == "postgresql":
                await conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            await conn.run_sync(run_alembic, "downgrade", revision)
        await self._engine.dispose()

    async def schema_revision(self) -> str | None:
        """The migration the database is at (None before the first upgrade)."""
        async with self._engine.connect() as conn:
            return await conn.run_sync(current_revision)

    @staticmethod
    def head_revision() -> str:
        """The newest migration this code knows."""
        return head_revision()

    # ------------------------------------------------------------ helpers

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.begin() as conn:
            yield conn

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # ------------------------------------------------------------ replay cache

    async def remember_jti(
        self, jti: str, expires_at: datetime, *, now: datetime | None = None
    ) -> bool:
        """Record ``jti`` until ``expires_at``; True if new (or only expired).

        Atomic across processes (insert-if-absent). An already expired
        ``expires_at`` is not stored and answers True: such a token can
        never be accepted again anyway.
        """
        now = resolve_now(now)
        expires_at = aware(expires_at, "expires_at")
        check_text("jti", jti, 128)
        if expires_at <= now:
            return True
        c = replay_cache.c
        ins = self._insert(replay_cache).values(jti=jti, expires_at=expires_at)
        stmt = ins.on_conflict_do_update(
            index_elements=[c.jti],
            set_={"expires_at": ins.excluded.expires_at},
            where=c.expires_at <= now,
        ).returning(c.jti)
        # One statement, no transaction around it: insert-if-absent is atomic
        # by itself, and the row is committed when the answer comes back.
        async with self._single.begin() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def purge_expired_jtis(self, *, now: datetime | None = None) -> int:
        """Delete replay entries that expired; returns how many."""
        now = resolve_now(now)
        async with self._write() as conn:
            result = await conn.execute(
                replay_cache.delete().where(replay_cache.c.expires_at <= now)
            )
            return int(result.rowcount)

    # ------------------------------------------------------------ tickets

    async def create_ticket(
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
        values = {
            "ticket_id": new_id("ut_"),
            "handle_digest": check_text("handle_digest", handle_digest, 64),
            "sub_hash": check_text("sub_hash", sub_hash, 64),
            "provider_id": check_text("provider_id", provider_id, 64),
            "reason": reason,
            "payload": check_text("payload", payload, 65536),
            "msisdn_hash": check_text("msisdn_hash", msisdn_hash, 64),
            "state": TicketState.QUEUED.value,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
            "expires_at": aware(expires_at, "expires_at"),
            "next_attempt_at": now,
        }
        t = unbind_tickets.c
        stmt = (
            self._insert(unbind_tickets)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[t.handle_digest])
            .returning(t.ticket_id)
        )
        async with self._write() as conn:
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
                await self._append_audit(conn, audit(ticket, created), now)
        return ticket, created

    async def get_ticket(self, ticket_id: str) -> Ticket | None:
        """The ticket, or None. Callers check ``sub_hash`` before showing it."""
        async with self._read() as conn:
            row = await fetch_first(
                conn, select(unbind_tickets).where(unbind_tickets.c.ticket_id == ticket_id)
            )
        return None if row is None else ticket_from_row(row)

    async def claim_due_tickets(
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
        now = resolve_now(now)
        check_text("worker_id", worker_id, 128)
        if limit < 1 or lease_s <= 0:
            raise ValueError("limit must be >= 1 and lease_s > 0")
        t = unbind_tickets.c
        free = and_(t.state.in_(OPEN_TICKET), lease_free(unbind_tickets, now))
        async with self._write() as conn:
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
                        state=TicketState.FAILED.value,
                        last_error=expiry_error(TicketState(row.state), row.last_error),
                        closed_at=now,
                        updated_at=now,
                        lease_owner=None,
                        lease_until=None,
                    )
                )
            closed: Sequence[Any] = []
            if (expired is not None or audit_expired is not None) and rows_expired:
                closed = await fetch_all(
                    conn,
                    select(unbind_tickets).where(
                        t.ticket_id.in_([r.ticket_id for r in rows_expired])
                    ),
                )
            if audit_expired is not None:
                for r in closed:
                    await self._append_audit(conn, audit_expired(ticket_from_row(r)), now)
            ids = (
                await conn.scalars(
                    select(t.ticket_id)
                    .where(free, t.expires_at > now, t.next_attempt_at <= now)
                    .order_by(t.next_attempt_at, t.ticket_id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            rows: Sequence[Any] = []
            if ids:
                await conn.execute(
                    update(unbind_tickets)
                    .where(t.ticket_id.in_(ids))
                    .values(
                        attempts=t.attempts + 1,
                        lease_owner=worker_id,
                        lease_until=now + timedelta(seconds=lease_s),
                        updated_at=now,
                    )
                )
                rows = await fetch_all(
                    conn,
                    select(unbind_tickets)
                    .where(t.ticket_id.in_(ids))
                    .order_by(t.next_attempt_at, t.ticket_id),
                )
        # Reported only once committed.
        if expired is not None:
            expired.extend(ticket_from_row(r) for r in closed)
        return [ticket_from_row(r) for r in rows]

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
        async with self._write() as conn:
            row = await fetch_first(
                conn, select(unbind_tickets).where(t.ticket_id == ticket_id).with_for_update()
            )
            if row is None:
                raise NotFoundError("no such ticket")
            ticket = ticket_from_row(row)
            final = outcome in (AttemptOutcome.DONE, AttemptOutcome.REJECTED)
            if ticket.state.terminal or (not final and ticket.lease_owner != worker_id):
                return ticket
            values = attempt_values(
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
                await self._append_audit(conn, audit(after), now)
        return after

    # ------------------------------------------------------------ notices

    async def record_number_event(
        self,
        *,
        carrier_id: str,
        event_id: str,
        msisdn: str,
        msisdn_hash: str,
        event_type: NumberEventType | str,
        effective_at: datetime,
        quiet_period_ends_at: datetime | None,
        deadline: datetime,
        providers: Sequence[tuple[str, DeliveryMode | str]],
        now: datetime | None = None,
        audit: Callable[[Notice, bool], AuditDraft] | None = None,
    ) -> tuple[Notice, bool]:
        """Record a carrier's event and one delivery per provider, in one transaction.

        Idempotent on ``(carrier_id, event_id)``: the same event again
        returns ``(notice, False)`` and creates nothing. The same id with
        another number, type or time raises ConflictError (the deadline and
        provider list are the gateway's and may change between retries).
        Each delivery gets its own SET ``jti``, is PENDING and due at once;
        ``providers`` pairs a provider id with ``"push"`` or ``"poll"``.
        ``audit(notice, created)`` gives the audit row appended in the same
        transaction.
        """
        now = resolve_now(now)
        if not is_e164(msisdn):
            raise ValueError("msisdn must be E.164")
        kind = NumberEventType(event_type)
        effective_at = aware(effective_at, "effective_at")
        quiet = (
            None
            if quiet_period_ends_at is None
            else aware(quiet_period_ends_at, "quiet_period_ends_at")
        )
        targets = [(check_text("provider_id", p, 64), DeliveryMode(m)) for p, m in providers]
        if len({p for p, _ in targets}) != len(targets):
            raise ValueError("each provider may appear once")
        n = number_events.c
        stmt = (
            self._insert(number_events)
            .values(
                notice_id=new_id("nt_"),
                carrier_id=check_text("carrier_id", carrier_id, 64),
                event_id=check_text("event_id", event_id, 128),
                msisdn=msisdn,
                msisdn_hash=check_text("msisdn_hash", msisdn_hash, 64),
                event_type=kind.value,
                effective_at=effective_at,
                quiet_period_ends_at=quiet,
                deadline=aware(deadline, "deadline"),
                recorded_at=now,
            )
            .on_conflict_do_nothing(index_elements=[n.carrier_id, n.event_id])
            .returning(n.notice_id)
        )
        async with self._write() as conn:
            notice_id = (await conn.execute(stmt)).scalar()
            if notice_id is not None and targets:
                await conn.execute(
                    insert(deliveries),
                    [
                        {
                            "jti": new_id(""),
                            "notice_id": notice_id,
                            "provider_id": provider_id,
                            "mode": mode.value,
                            "state": DeliveryState.PENDING.value,
                            "attempts": 0,
                            "created_at": now,
                            "next_attempt_at": now,
                        }
                        for provider_id, mode in targets
                    ],
                )
            row = await fetch_one(
                conn, notice_query().where(n.carrier_id == carrier_id, n.event_id == event_id)
            )
            notice = notice_from_row(row)
            created = notice_id is not None
            if not created and (
                notice.msisdn_hash != msisdn_hash
                or notice.event_type is not kind
                or notice.effective_at != effective_at
                or notice.quiet_period_ends_at != quiet
            ):
                raise ConflictError("this event_id was already reported with other content")
            if audit is not None:
                await self._append_audit(conn, audit(notice, created), now)
        return notice, created

    async def get_notice(self, notice_id: str) -> Notice | None:
        """The notice, or None."""
        async with self._read() as conn:
            row = await fetch_first(
                conn, notice_query().where(number_events.c.notice_id == notice_id)
            )
        return None if row is None else notice_from_row(row)

    async def get_delivery(self, jti: str) -> Delivery | None:
        """The delivery with this SET ``jti``, or None."""
        async with self._read() as conn:
            row = await fetch_first(conn, delivery_query().where(deliveries.c.jti == jti))
        return None if row is None else delivery_from_row(row)

    async def notice_deliveries(self, notice_id: str) -> list[Delivery]:
        """Every delivery of one notice, by provider id."""
        async with self._read() as conn:
            rows = await fetch_all(
                conn,
                delivery_query()
                .where(deliveries.c.notice_id == notice_id)
                .order_by(deliveries.c.provider_id),
            )
        return [delivery_from_row(r) for r in rows]

    async def claim_due_deliveries(
        self,
        *,
        worker_id: str,
        limit: int = 10,
        lease_s: float = 60.0,
        now: datetime | None = None,
    ) -> list[Delivery]:
        """Lease up to ``limit`` push deliveries that are due, like :meth:`claim_due_tickets`.

        Due: mode push, PENDING, ``next_attempt_at <= now``, no live lease.
        Poll deliveries are never claimed (providers fetch them).
        """
        now = resolve_now(now)
        check_text("worker_id", worker_id, 128)
        if limit < 1 or lease_s <= 0:
            raise ValueError("limit must be >= 1 and lease_s > 0")
        d = deliveries.c
        async with self._write() as conn:
            ids = (
                await conn.scalars(
                    select(d.jti)
                    .where(
                        d.mode == DeliveryMode.PUSH.value,
                        d.state == DeliveryState.PENDING.value,
                        d.next_attempt_at <= now,
                        lease_free(deliveries, now),
                    )
                    .order_by(d.next_attempt_at, d.jti)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not ids:
                return []
            await conn.execute(
                update(deliveries)
                .where(d.jti.in_(ids))
                .values(
                    attempts=d.attempts + 1,
                    lease_owner=worker_id,
                    lease_until=now + timedelta(seconds=lease_s),
                )
            )
            rows = await fetch_all(
                conn, delivery_query().where(d.jti.in_(ids)).order_by(d.next_attempt_at, d.jti)
            )
        return [delivery_from_row(r) for r in rows]

    async def mark_delivered(
        self,
        jti: str,
        *,
        acknowledged_at: datetime | None = None,
        bindings_removed: int | None = None,
    ) -> bool:
        """A push was acknowledged by the provider: the delivery is done.

        ``bindings_removed`` (from ReceiveEventResponse when the provider
        already acted) also records the action at ``acknowledged_at``.
        True if this changed the delivery; False if it was no longer
        PENDING. The lease is released whoever held it (an acknowledgement
        is a fact, not a claim).
        """
        at = resolve_now(acknowledged_at)
        d = deliveries.c
        values: dict[str, Any] = {
            "state": DeliveryState.ACKNOWLEDGED.value,
            "delivered_at": func.coalesce(d.delivered_at, instant(at)),
            "acknowledged_at": at,
            "lease_owner": None,
            "lease_until": None,
        }
        if bindings_removed is not None:
            if bindings_removed < 0:
                raise ValueError("bindings_removed must be >= 0")
            values.update(acted_at=at, confirmed_at=at, bindings_removed=bindings_removed)
        async with self._write() as conn:
            result = await conn.execute(
                update(deliveries)
                .where(d.jti == jti, d.state == DeliveryState.PENDING.value)
                .values(**values)
            )
            return bool(result.rowcount)

    async def mark_delivery_failed(
        self,
        jti: str,
        *,
        worker_id: str,
        error: str,
        next_attempt_at: datetime | None,
    ) -> bool:
        """A push attempt failed: retry at ``next_attempt_at``, or give up (None: FAILED).

        Only the worker holding the lease may do this; True if it did.
        """
        d = deliveries.c
        values: dict[str, Any] = {
            "last_error": error_text(check_text("error", error, 65536)),
            "lease_owner": None,
            "lease_until": None,
        }
        if next_attempt_at is None:
            values["state"] = DeliveryState.FAILED.value
        else:
            values["next_attempt_at"] = aware(next_attempt_at, "next_attempt_at")
        async with self._write() as conn:
            result = await conn.execute(
                update(deliveries)
                .where(
                    d.jti == jti,
                    d.state == DeliveryState.PENDING.value,
                    d.lease_owner == worker_id,
                )
                .values(**values)
            )
            return bool(result.rowcount)

    async def poll_deliveries(
        self,
        provider_id: str,
        *,
        max_events: int = 100,
        now: datetime | None = None,
    ) -> tuple[list[Delivery], bool]:
        """Pending poll-mode deliveries for a provider, oldest first: ``(batch, more)``.

        RFC 8936: a SET is returned by every poll until it is acknowledged
        (:meth:`ack_deliveries`) or refused (:meth:`reject_deliveries`).
        The first hand-out sets ``delivered_at``; each counts as an attempt.
        """
        now = resolve_now(now)
        if not 1 <= max_events <= 1000:
            raise ValueError("max_events must be 1 to 1000")
        d = deliveries.c
        async with self._write() as conn:
            ids = (
                await conn.scalars(
                    select(d.jti)
                    .where(
                        d.provider_id == provider_id,
                        d.mode == DeliveryMode.POLL.value,
                        d.state == DeliveryState.PENDING.value,
                    )
                    .order_by(d.created_at, d.jti)
                    .limit(max_events + 1)
                    # Concurrent polls of one provider queue here rather
                    # than lock rows in different orders (deadlock).
                    .with_for_update()
                )
            ).all()
            more = len(ids) > max_events
            ids = ids[:max_events]
            if not ids:
                return [], False
            await conn.execute(
                update(deliveries)
                .where(d.jti.in_(ids))
                .values(
                    attempts=d.attempts + 1,
                    delivered_at=func.coalesce(d.delivered_at, instant(now)),
                )
            )
            rows = await fetch_all(
                conn, delivery_query().where(d.jti.in_(ids)).order_by(d.created_at, d.jti)
            )
        return [delivery_from_row(r) for r in rows], more

    async def ack_deliveries(
        self, provider_id: str, jtis: Iterable[str], *, now: datetime | None = None
    ) -> int:
        """The provider durably received these SETs; returns how many were newly acknowledged.

        Unknown jtis, other providers' jtis and repeats are ignored.
        """
        now = resolve_now(now)
        wanted = sorted(set(jtis))
        if not wanted:
            return 0
        d = deliveries.c
        async with self._write() as conn:
            # Lock in the order polls lock in, so that concurrent acks and
            # polls of one provider cannot deadlock.
            ids = (
                await conn.scalars(
                    select(d.jti)
                    .where(
                        d.provider_id == provider_id,
                        d.jti.in_(wanted),
                        d.state == DeliveryState.PENDING.value,
                    )
                    .order_by(d.created_at, d.jti)
                    .with_for_update()
                )
            ).all()
            if not ids:
                return 0
            result = await conn.execute(
                update(deliveries)
                .where(d.jti.in_(ids), d.state == DeliveryState.PENDING.value)
                .values(
                    state=DeliveryState.ACKNOWLEDGED.value,
                    acknowledged_at=now,
                    delivered_at=func.coalesce(d.delivered_at, instant(now)),
                    lease_owner=None,
                    lease_until=None,
                )
            )
            return int(result.rowcount)

    async def reject_deliveries(self, provider_id: str, errors: Mapping[str, str]) -> int:
        """The provider could not process these SETs (RFC 8936 ``setErrs``): FAILED.

        ``errors`` maps jti to "code: description". Returns how many changed.
        """
        if not errors:
            return 0
        d = deliveries.c
        async with self._write() as conn:
            # Same lock order as polls and acks (no deadlock).
            ids = (
                await conn.scalars(
                    select(d.jti)
                    .where(
                        d.provider_id == provider_id,
                        d.jti.in_(sorted(errors)),
                        d.state == DeliveryState.PENDING.value,
                    )
                    .order_by(d.created_at, d.jti)
                    .with_for_update()
                )
            ).all()
            for jti in ids:
                await conn.execute(
                    update(deliveries)
                    .where(d.jti == jti)
                    .values(
                        state=DeliveryState.FAILED.value,
                        last_error=error_text(errors[jti] or "refused by the provider"),
                        lease_owner=None,
                        lease_until=None,
                    )
                )
        return len(ids)

    async def confirm_action(
        self,
        provider_id: str,
        jti: str,
        *,
        bindings_removed: int,
        acted_at: datetime | None = None,
        now: datetime | None = None,
    ) -> bool:
        """The provider says it acted on a notice; False if it had already confirmed.

        ``acted_at`` defaults to ``now`` (the receipt time) and is capped at
        it: an action cannot be confirmed before it happened. A confirmation
        implies receipt, so an unacknowledged delivery becomes ACKNOWLEDGED.
        Raises NotFoundError for a jti that is not this provider's.
        """
        now = resolve_now(now)
        acted = now if acted_at is None else min(aware(acted_at, "acted_at"), now)
        if bindings_removed < 0:
            raise ValueError("bindings_removed must be >= 0")
        d = deliveries.c
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(d.acted_at, d.acknowledged_at)
                    .where(d.jti == jti, d.provider_id == provider_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise NotFoundError("no such notice for this provider")
            if row.acted_at is not None:
                return False
            values: dict[str, Any] = {
                "acted_at": acted,
                "confirmed_at": now,
                "bindings_removed": bindings_removed,
            }
            if row.acknowledged_at is None:
                values.update(
                    state=DeliveryState.ACKNOWLEDGED.value,
                    acknowledged_at=now,
                    delivered_at=func.coalesce(d.delivered_at, instant(now)),
                    lease_owner=None,
                    lease_until=None,
                )
            await conn.execute(update(deliveries).where(d.jti == jti).values(**values))
        return True

    # ------------------------------------------------------------ history

    async def number_history(self, msisdn_hash: str) -> list[NumberEvent]:
        """Every event recorded for the number, oldest first (by effective time)."""
        n = number_events.c
        async with self._read() as conn:
            rows = await fetch_all(
                conn,
                select(
                    n.notice_id,
                    n.carrier_id,
                    n.event_type,
                    n.effective_at,
                    n.quiet_period_ends_at,
                    n.recorded_at,
                )
                .where(n.msisdn_hash == msisdn_hash)
                .order_by(n.effective_at, n.recorded_at, n.notice_id),
            )
        return [
            NumberEvent(
                notice_id=r["notice_id"],
                carrier_id=r["carrier_id"],
                event_type=NumberEventType(r["event_type"]),
                effective_at=r["effective_at"],
                quiet_period_ends_at=r["quiet_period_ends_at"],
                recorded_at=r["recorded_at"],
            )
            for r in rows
        ]

    async def check_recycled(
        self,
        msisdn_hash: str,
        specified_date: datetime,
        *,
        history_start: datetime | None = None,
    ) -> RecycledCheck:
        """RECYCLED / NOT_RECYCLED / NO_DATA for the number since ``specified_date``.

        See :func:`classify_recycled` for the rule and ``history_start``.
        """
        history = await self.number_history(msisdn_hash)
        return classify_recycled(
            history,
            aware(specified_date, "specified_date"),
            history_start=None if history_start is None else aware(history_start, "history_start"),
        )

    # ------------------------------------------------------------ compliance

    async def compliance_report(
        self,
        *,
        now: datetime | None = None,
        since: datetime | None = None,
        providers: Iterable[str] = (),
    ) -> list[ProviderComplianceRow]:
        """Per provider, how notices and unbind tickets were handled, by provider id.

        Counts notices recorded and tickets created at or after ``since``
        (all when None). Providers named in ``providers`` appear even
        without activity. Notices are classified at ``now`` as in
        :func:`classify_notice`.
        """
        now = resolve_now(now)
        d, n, t = deliveries.c, number_events.c, unbind_tickets.c

        def count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
            return func.sum(case((condition, 1), else_=0))

        notice_stmt = (
            select(
                d.provider_id,
                func.count().label("total"),
                func.count(d.delivered_at).label("delivered"),
                func.count(d.acknowledged_at).label("acknowledged"),
                count_if(and_(d.acted_at.is_not(None), d.acted_at <= n.deadline)).label("on_time"),
                count_if(and_(d.acted_at.is_not(None), d.acted_at > n.deadline)).label("late"),
                count_if(and_(d.acted_at.is_(None), n.deadline < now)).label("never"),
                count_if(and_(d.acted_at.is_(None), n.deadline >= now)).label("awaiting"),
            )
            .join(number_events, d.notice_id == n.notice_id)
            .group_by(d.provider_id)
        )
        ticket_stmt = select(t.provider_id, t.state, func.count().label("count")).group_by(
            t.provider_id, t.state
        )
        times_stmt = select(t.provider_id, t.created_at, t.answered_at).where(
            t.state.in_((TicketState.DONE.value, TicketState.REJECTED.value)),
            t.answered_at.is_not(None),
        )
        if since is not None:
            since = aware(since, "since")
            notice_stmt = notice_stmt.where(n.recorded_at >= since)
            ticket_stmt = ticket_stmt.where(t.created_at >= since)
            times_stmt = times_stmt.where(t.created_at >= since)
        async with self._read() as conn:
            notice_rows = await fetch_all(conn, notice_stmt)
            ticket_rows = await fetch_all(conn, ticket_stmt)
            time_rows = (await conn.execute(times_stmt)).all()

        ids = set(providers)
        notices = {r["provider_id"]: r for r in notice_rows}
        tickets: dict[str, dict[str, int]] = {}
        for r in ticket_rows:
            tickets.setdefault(r["provider_id"], {})[r["state"]] = int(r["count"])
        durations: dict[str, list[float]] = {}
        for provider_id, created_at, answered_at in time_rows:
            durations.setdefault(provider_id, []).append(
                max(0.0, (answered_at - created_at).total_seconds())
            )
        ids.update(notices, tickets)

        report = []
        for provider_id in sorted(ids):
            nr = notices.get(provider_id)
            tc = tickets.get(provider_id, {})
            times = durations.get(provider_id)
            report.append(
                ProviderComplianceRow(
                    provider_id=provider_id,
                    notices=int(nr["total"]) if nr else 0,
                    notices_delivered=int(nr["delivered"]) if nr else 0,
                    notices_acknowledged=int(nr["acknowledged"]) if nr else 0,
                    acted_on_time=int(nr["on_time"]) if nr else 0,
                    acted_late=int(nr["late"]) if nr else 0,
                    never_acted=int(nr["never"]) if nr else 0,
                    awaiting_action=int(nr["awaiting"]) if nr else 0,
                    unbinds_open=sum(tc.get(s, 0) for s in OPEN_TICKET),
                    unbinds_done=tc.get(TicketState.DONE.value, 0),
                    unbinds_rejected=tc.get(TicketState.REJECTED.value, 0),
                    unbinds_failed=tc.get(TicketState.FAILED.value, 0),
                    unbind_median_time=(
                        timedelta(seconds=statistics.median(times)) if times else None
                    ),
                )
            )
        return report

    # ------------------------------------------------------------ audit

    async def append_audit(
        self,
        *,
        kind: str,
        actor: str,
        subject: str,
        detail: Mapping[str, str | int | bool] | None = None,
        now: datetime | None = None,
    ) -> AuditEntry:
        """Append one row to the hash chain and return it.

        ``actor`` and ``subject`` must already be identifiers or digests
        (for example ``"provider:example-pay"``, the SHA-256 of an msisdn);
        anything that looks like a raw phone or ID number raises
        AuditValueError (see ``check_audit_fields``). Appends are serialised
        across processes (PostgreSQL: a row lock on the chain head; SQLite:
        the write lock), so the chain stays linear.
        """
        draft = AuditDraft(kind=kind, actor=actor, subject=subject, detail=dict(detail or {}))
        check_audit_fields(kind=kind, actor=actor, subject=subject, detail=draft.detail)
        async with self._write() as conn:
            return await self._append_audit(conn, draft, resolve_now(now))

    async def _append_audit(
        self, conn: AsyncConnection, draft: AuditDraft, ts: datetime
    ) -> AuditEntry:
        # In the caller's write transaction: the row commits (or not) with it.
        values = dict(draft.detail)
        check_audit_fields(kind=draft.kind, actor=draft.actor, subject=draft.subject, detail=values)
        text = canonical_detail(values)
        h = audit_head.c
        head = (
            await conn.execute(select(h.seq, h.row_hash).where(h.id == 1).with_for_update())
        ).one()
        seq = int(head.seq) + 1
        digest = row_hash(
            prev_hash=head.row_hash,
            seq=seq,
            ts=ts,
            kind=draft.kind,
            actor=draft.actor,
            subject=draft.subject,
            detail=text,
        )
        await conn.execute(
            insert(audit_log).values(
                seq=seq,
                ts=ts,
                kind=draft.kind,
                actor=draft.actor,
                subject=draft.subject,
                detail=text,
                prev_hash=head.row_hash,
                row_hash=digest,
            )
        )
        await conn.execute(update(audit_head).where(h.id == 1).values(seq=seq, row_hash=digest))
        return AuditEntry(
            seq=seq,
            ts=ts,
            kind=draft.kind,
            actor=draft.actor,
            subject=draft.subject,
            detail=values,
            prev_hash=head.row_hash,
            row_hash=digest,
        )

    async def append_audit_many(
        self, entries: Sequence[AuditDraft], *, now: datetime | None = None
    ) -> list[AuditEntry]:
        """Append rows to the hash chain, in the given order, in one transaction.

        The chain head is locked and read once and each row is chained to
        the one before it, so many rows cost one commit. Every row is
        checked before anything is written (AuditValueError, as in
        :meth:`append_audit`); then all rows are appended, or none.
        """
        drafts = [
            AuditDraft(kind=e.kind, actor=e.actor, subject=e.subject, detail=dict(e.detail))
            for e in entries
        ]
        for d in drafts:
            check_audit_fields(kind=d.kind, actor=d.actor, subject=d.subject, detail=d.detail)
        if not drafts:
            return []
        ts = resolve_now(now)
        h = audit_head.c
        async with self._write() as conn:
            head = (
                await conn.execute(select(h.seq, h.row_hash).where(h.id == 1).with_for_update())
            ).one()
            seq, prev = int(head.seq), str(head.row_hash)
            out: list[AuditEntry] = []
            texts: list[str] = []
            for d in drafts:
                seq += 1
                text = canonical_detail(d.detail)
                texts.append(text)
                digest = row_hash(
                    prev_hash=prev,
                    seq=seq,
                    ts=ts,
                    kind=d.kind,
                    actor=d.actor,
                    subject=d.subject,
                    detail=text,
                )
                out.append(
                    AuditEntry(
                        seq=seq,
                        ts=ts,
                        kind=d.kind,
                        actor=d.actor,
                        subject=d.subject,
                        detail=dict(d.detail),
                        prev_hash=prev,
                        row_hash=digest,
                    )
                )
                prev = digest
            await conn.execute(
                insert(audit_log),
                [
                    {
                        "seq": e.seq,
                        "ts": e.ts,
                        "kind": e.kind,
                        "actor": e.actor,
                        "subject": e.subject,
                        "detail": text,
                        "prev_hash": e.prev_hash,
                        "row_hash": e.row_hash,
                    }
                    for e, text in zip(out, texts, strict=True)
                ],
            )
            await conn.execute(update(audit_head).where(h.id == 1).values(seq=seq, row_hash=prev))
        return out

    async def verify_audit(self, *, batch: int = 1000) -> AuditVerification:
        """Check the whole chain in one consistent snapshot.

        Every row must have the next seq (1, 2, ...), the previous row's
        hash as ``prev_hash``, and a ``row_hash`` that matches its content;
        the last row must match the chain head (so a cut tail is found).
        The first failure is reported with its seq (a missing row by the
        seq it should have had).
        """
        a = audit_log.c
        async with self._engine.connect() as conn:
            if self._dialect == "postgresql":
                await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                head = (
                    await conn.execute(
                        select(audit_head.c.seq, audit_head.c.row_hash).where(audit_head.c.id == 1)
                    )
                ).first()
                expected, prev, checked = 1, GENESIS_HASH, 0
                while True:
                    rows = (
                        await conn.execute(
                            select(audit_log).where(a.seq >= expected).order_by(a.seq).limit(batch)
                        )
                    ).all()
                    for r in rows:
                        if r.seq != expected:
                            return AuditVerification(
                                False, checked, expected, f"row {expected} is missing"
                            )
                        if r.prev_hash != prev:
                            return AuditVerification(
                                False, checked, r.seq, "prev_hash does not match the row before"
                            )
                        recomputed = row_hash(
                            prev_hash=r.prev_hash,
                            seq=r.seq,
                            ts=r.ts,
                            kind=r.kind,
                            actor=r.actor,
                            subject=r.subject,
                            detail=r.detail,
                        )
                        if recomputed != r.row_hash:
                            return AuditVerification(
                                False, checked, r.seq, "row_hash does not match the row's content"
                            )
                        prev, expected, checked = r.row_hash, expected + 1, checked + 1
                    if len(rows) < batch:
                        break
        last = expected - 1
        if head is None:
            return AuditVerification(False, checked, None, "the chain head row is missing")
        if head.seq > last:
            return AuditVerification(
                False, checked, last + 1, f"rows {last + 1} to {head.seq} are missing at the end"
            )
        if head.seq < last:
            return AuditVerification(
                False, checked, head.seq + 1, "rows follow the recorded end of the chain"
            )
        if head.row_hash != prev:
            return AuditVerification(
                False, checked, last or None, "the chain head does not match the last row"
            )
        return AuditVerification(True, checked)


class StoreReplayCache:
    """The gateway's replay cache on a :class:`Store`, shared by every replica.

    Implements ``remember(jti, expires_at: float) -> bool`` (seconds since
    the epoch) and deletes expired entries at most every ``purge_every_s``.
    A bounded in-process front remembers the ``local_entries`` jtis seen
    last, so a replay to this process is refused without a database round
    trip; a jti it does not hold always goes to the database, and nothing
    is accepted before the database has recorded it.
    """

    def __init__(
        self, store: Store, *, purge_every_s: float = 60.0, local_entries: int = 10_000
    ) -> None:
        if local_entries < 0:
            raise ValueError("local_entries must not be negative")
        self._store = store
        self._purge_every_s = purge_every_s
        self._next_purge = 0.0
        self._local_entries = local_entries
        # jti -> expires_at, oldest first (dicts keep insertion order).
        self._local: dict[str, float] = {}

    async def remember(self, jti: str, expires_at: float) -> bool:
        """Record ``jti``; True if it was not seen before (or only expired), else False."""
        now = utcnow()
        seen = self._local.get(jti)
        if seen is not None and seen > now.timestamp():
            return False
        if now.timestamp() >= self._next_purge:
            self._next_purge = now.timestamp() + self._purge_every_s
            await self._store.purge_expired_jtis(now=now)
        first = await self._store.remember_jti(
            jti, datetime.fromtimestamp(expires_at, UTC), now=now
        )
        # Remembered whether new or refused: either way the database holds
        # it live until about expires_at, so a later call here is a replay.
        self._note(jti, expires_at)
        return first

    def _note(self, jti: str, expires_at: float) -> None:
        if self._local_entries == 0:
            return
        self._local.pop(jti, None)
        self._local[jti] = expires_at
        while len(self._local) > self._local_entries:
            # Forgetting only costs a round trip: the database still refuses it.
            del self._local[next(iter(self._local))]
