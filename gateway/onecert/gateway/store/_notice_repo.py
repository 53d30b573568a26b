"""Carriers' number events (notices) in one ordered log, a copy per routed provider, history.

Each notice takes the next ``seq`` from ``notice_head``. On PostgreSQL it is
taken in a short transaction of its own, so replicas record notices
concurrently and one may commit before a lower ``seq``: the notice moves its
providers' cursors back below it when it commits (:func:`move_heads`), so a
cursor never passes a notice it has not settled. A notice is copied only to
the providers it is routed to (those that may hold the number), and moves
each one's cursor head (``notice_cursors``): storage per notice follows the
routed providers, not the registered ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, String, bindparam, case, insert, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from onecert.gateway.store._audit_repo import AuditRepository
from onecert.gateway.store._claims import Lease
from onecert.gateway.store._cursor_repo import Handoff, lease_fresh
from onecert.gateway.store._database import StoreDatabase
from onecert.gateway.store._models import (
    UTCDateTime,
    deliveries,
    notice_cursors,
    notice_head,
    number_events,
)
from onecert.gateway.store._rows import (
    aware,
    check_text,
    fetch_all,
    fetch_first,
    fetch_one,
    from_row,
    new_id,
    next_seq,
    notice_from_row,
    notice_query,
    pg_unnest,
    resolve_now,
)
from onecert.gateway.store._types import (
    AuditDraft,
    ConflictError,
    Delivery,
    DeliveryMode,
    DeliveryState,
    Notice,
    NumberEvent,
    RecycledCheck,
    StoredEventType,
    classify_recycled,
)
from onecert.sdk._msisdn import is_e164

__all__ = ["NoticeRepository"]


class NoticeRepository:
    """Notices of recycled numbers and the history they make (``store.notices``).

    Raw msisdns are stored only here: the Security Event Token a provider
    receives names the number. What happens to each provider's copy is in
    :class:`~onecert.gateway.store.DeliveryRepository`.
    """

    def __init__(self, db: StoreDatabase, audit: AuditRepository) -> None:
        self._db = db
        self._audit = audit

    async def record(
        self,
        *,
        carrier_id: str,
        event_id: str,
        msisdn: str,
        msisdn_hash: str,
        event_type: StoredEventType | str,
        effective_at: datetime,
        quiet_period_ends_at: datetime | None,
        deadline: datetime,
        providers: Sequence[tuple[str, DeliveryMode | str]],
        now: datetime | None = None,
        min_action: timedelta | None = None,
        route_tag: str | None = None,
        audit: Callable[[Notice, bool], AuditDraft] | None = None,
        worker_id: str = "none",
        limit: int = 0,
        lease_s: float = 60.0,
    ) -> tuple[Notice, bool, list[Handoff]]:
        """Record a carrier's event and one delivery per routed provider, in one transaction.

        Returns the notice, whether this call created it, and the copies
        handed over (below). Idempotent on ``(carrier_id, event_id)``: the
        same event again returns ``(notice, False, [])`` and creates nothing. The same id with
        another number, type or time raises ConflictError (the deadline and
        provider list are the gateway's and may change between retries).
        Each delivery gets its own SET ``jti``, is PENDING and due at once;
        ``providers`` pairs a provider id with ``"push"`` or ``"poll"``.
        ``audit(notice, created)`` gives the audit row appended in the same
        transaction. The deadline is at least ``min_action`` after the
        recording time, which is the database's clock when the store uses it
        (replicas whose clocks disagree give the same deadline).
        ``route_tag`` (see :meth:`route_late`) is kept with the notice.

        With ``limit`` > 0, the same transaction also leases to ``worker_id``
        (for ``lease_s``, at most ``limit``, as ``store.cursors.claim_due``
        leases) the push providers' cursors that the new notice alone made
        due, and returns each with its copy: the recording worker pushes at
        once, without a claim and a read of its own. A cursor it could not
        lease (busy, backing off, older notices waiting) is claimed by
        ``claim_due`` as usual; a lease taken here ends like any other:
        settled, or run out after a crash.
        """
        now = resolve_now(now)
        # The raw number is kept only to sign deliveries: an event without
        # providers (a carrier's history) passes "" and is kept by its hash alone.
        if not (is_e164(msisdn) or (msisdn == "" and not providers)):
            raise ValueError("msisdn must be E.164 (or empty for an event without deliveries)")
        event: dict[str, Any] = {
            "carrier_id": check_text("carrier_id", carrier_id, 64),
            "event_id": check_text("event_id", event_id, 128),
            "msisdn": msisdn,
            "msisdn_hash": check_text("msisdn_hash", msisdn_hash, 64),
            "event_type": StoredEventType(event_type).value,
            "effective_at": aware(effective_at, "effective_at"),
            "quiet_period_ends_at": None
            if quiet_period_ends_at is None
            else aware(quiet_period_ends_at, "quiet_period_ends_at"),
            "deadline": aware(deadline, "deadline"),
            "route_tag": None if route_tag is None else check_text("route_tag", route_tag, 48),
        }
        targets = [(check_text("provider_id", p, 64), DeliveryMode(m)) for p, m in providers]
        if len({p for p, _ in targets}) != len(targets):
            raise ValueError("each provider may appear once")
        lease = Lease.take(worker_id, limit=limit, lease_s=lease_s, now=now) if limit > 0 else None
        return await self._write(
            event, targets, now=now, min_action=min_action, lease=lease, audit=audit
        )

    async def _write(
        self,
        event: dict[str, Any],
        targets: Sequence[tuple[str, DeliveryMode]],
        *,
        now: datetime,
        min_action: timedelta | None,
        lease: Lease | None,
        audit: Callable[[Notice, bool], AuditDraft] | None,
    ) -> tuple[Notice, bool, list[Handoff]]:
        """:meth:`record`'s transaction, for an ``event`` and ``targets`` already checked."""
        seq = None
        if self._db.dialect == "postgresql":
            # Taken in a transaction of its own: the counter's row lock is held
            # for one statement, not for the whole recording (replicas record
            # notices concurrently; see move_heads for notices that commit out
            # of seq order). SQLite serialises writers anyway.
            async with self._db.single() as conn:
                seq = await next_seq(conn, notice_head)
        async with self._db.write() as conn:
            now = await self._db.clock(conn, now)
            event["recorded_at"] = now
            if min_action is not None:
                event["deadline"] = max(event["deadline"], now + min_action)
            notice, copies = await self._insert(conn, event, targets, now, seq)
            handed: list[Handoff] = []
            if copies and lease is not None:
                handed = await _lease_copies(conn, lease.at(now), notice, copies)
            if audit is not None:
                await self._audit.chain(conn, [audit(notice, copies is not None)], now)
        return notice, copies is not None, handed

    async def _insert(
        self,
        conn: AsyncConnection,
        event: dict[str, Any],
        targets: Sequence[tuple[str, DeliveryMode]],
        now: datetime,
        seq: int | None,
    ) -> tuple[Notice, list[dict[str, Any]] | None]:
        """The notice, and the copies made of it (None when it was recorded before)."""
        n = number_events.c
        existing = await conn.scalar(
            select(n.notice_id).where(
                n.carrier_id == event["carrier_id"], n.event_id == event["event_id"]
            )
        )
        notice_id = None
        copies: list[dict[str, Any]] = []
        if existing is None:
            if seq is None:
                seq = await next_seq(conn, notice_head)
            notice_id = (
                await conn.execute(
                    self._db.insert(number_events)
                    .values(notice_id=new_id("nt_"), seq=seq, **event)
                    .on_conflict_do_nothing(index_elements=[n.carrier_id, n.event_id])
                    .returning(n.notice_id)
                )
            ).scalar()
            if notice_id is not None and targets:
                copies = await self._route(conn, notice_id, seq, targets, now)
        row = await fetch_one(
            conn,
            notice_query().where(
                n.carrier_id == event["carrier_id"], n.event_id == event["event_id"]
            ),
        )
        notice = notice_from_row(row)
        created = notice_id is not None
        if not created and (
            notice.msisdn_hash != event["msisdn_hash"]
            or notice.event_type.value != event["event_type"]
            or notice.effective_at != event["effective_at"]
            or notice.quiet_period_ends_at != event["quiet_period_ends_at"]
        ):
            raise ConflictError("this event_id was already reported with other content")
        return notice, copies if created else None

    async def _route(
        self,
        conn: AsyncConnection,
        notice_id: str,
        seq: int,
        targets: Sequence[tuple[str, DeliveryMode]],
        now: datetime,
    ) -> list[dict[str, Any]]:
        """A copy of the notice for each target, and each target's cursor head moved to
        it; the copies' rows."""
        copies = [
            _delivery_row(notice_id, provider_id, seq, mode, now) for provider_id, mode in targets
        ]
        if self._db.dialect == "postgresql":
            # One statement over three arrays: the server inserts a thousand
            # rows as one execution, not a thousand (and the driver encodes
            # three arrays, not a thousand parameter sets).
            await conn.execute(
                _PG_COPIES,
                {
                    "notice_id": notice_id,
                    "seq": seq,
                    "created_at": now,
                    "jtis": [c["jti"] for c in copies],
                    "provider_ids": [c["provider_id"] for c in copies],
                    "modes": [c["mode"] for c in copies],
                },
            )
        else:
            await conn.execute(insert(deliveries), copies)
        await move_heads(self._db, conn, [(p, m, seq, seq) for p, m in targets], now)
        return copies

    async def route_late(
        self,
        provider_id: str,
        mode: DeliveryMode | str,
        route_tags: Sequence[str],
        *,
        now: datetime | None = None,
        audit: Callable[[int], AuditDraft] | None = None,
    ) -> int:
        """Route to ``provider_id`` the open notices whose ``route_tag`` is among ``route_tags``.

        For a provider whose filter additions show it now holds a number a
        notice was not routed to it for: each such notice whose deadline has
        not passed, and that it has no copy of, gets one, in log order.
        Returns how many; ``audit(count)`` is appended with them (when any).
        """
        now = resolve_now(now)
        mode = DeliveryMode(mode)
        n, d = number_events.c, deliveries.c
        tags = sorted(set(route_tags))
        async with self._db.write() as conn:
            now = await self._db.clock(conn, now)
            found: list[tuple[str, int]] = []
            for start in range(0, len(tags), _TAGS_PER_QUERY):
                has_copy = (
                    select(d.jti).where(d.notice_id == n.notice_id, d.provider_id == provider_id)
                ).exists()
                rows = await conn.execute(
                    select(n.notice_id, n.seq).where(
                        n.route_tag.in_(tags[start : start + _TAGS_PER_QUERY]),
                        n.deadline > now,
                        n.msisdn != "",
                        ~has_copy,
                    )
                )
                found += [(r.notice_id, int(r.seq)) for r in rows]
            if not found:
                return 0
            found.sort(key=lambda f: f[1])
            await conn.execute(
                insert(deliveries),
                [_delivery_row(notice_id, provider_id, seq, mode, now) for notice_id, seq in found],
            )
            heads = [(provider_id, mode, found[0][1], found[-1][1])]
            await move_heads(self._db, conn, heads, now)
            if audit is not None:
                await self._audit.chain(conn, [audit(len(found))], now)
        return len(found)

    async def get(self, notice_id: str) -> Notice | None:
        """The notice, or None."""
        async with self._db.read() as conn:
            row = await fetch_first(
                conn, notice_query().where(number_events.c.notice_id == notice_id)
            )
        return None if row is None else notice_from_row(row)

    async def history(self, msisdn_hash: str) -> list[NumberEvent]:
        """Every event recorded for the number, oldest first (by effective time)."""
        n = number_events.c
        async with self._db.read() as conn:
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
        return [from_row(NumberEvent, r, event_type=StoredEventType(r["event_type"])) for r in rows]

    async def check_recycled(
        self,
        msisdn_hash: str,
        specified_date: datetime,
        *,
        history_start: datetime | None = None,
    ) -> RecycledCheck:
        """RECYCLED / NOT_RECYCLED / NO_DATA for the number since ``specified_date``.

        See :func:`~onecert.gateway.store.classify_recycled` for the rule and
        ``history_start``.
        """
        history = await self.history(msisdn_hash)
        return classify_recycled(
            history,
            aware(specified_date, "specified_date"),
            history_start=None if history_start is None else aware(history_start, "history_start"),
        )


_TAGS_PER_QUERY = 500


# A report's copies on PostgreSQL: the columns every copy shares are
# parameters, the three that differ are arrays, unnested side by side.
_COPY_ARRAYS = pg_unnest(
    jti=("jtis", String()), provider_id=("provider_ids", String()), mode=("modes", String())
)
_PG_COPIES = postgresql.insert(deliveries).from_select(
    ["jti", "notice_id", "provider_id", "seq", "mode", "state", "attempts", "created_at"],
    select(
        _COPY_ARRAYS.c.jti,
        bindparam("notice_id", type_=String),
        _COPY_ARRAYS.c.provider_id,
        bindparam("seq", type_=BigInteger),
        _COPY_ARRAYS.c.mode,
        literal(DeliveryState.PENDING.value),
        literal(0),
        bindparam("created_at", type_=UTCDateTime()),
    ),
)


async def _lease_copies(
    conn: AsyncConnection, lease: Lease, notice: Notice, copies: Sequence[dict[str, Any]]
) -> list[Handoff]:
    """The push copies whose cursors :func:`lease_fresh` leased, with those cursors."""
    push = {c["provider_id"]: c for c in copies if c["mode"] == DeliveryMode.PUSH.value}
    leased = await lease_fresh(conn, lease, notice.seq, list(push))
    return [Handoff(cursor, _copy(push[cursor.provider_id], notice)) for cursor in leased]


def _copy(row: dict[str, Any], notice: Notice) -> Delivery:
    """The Delivery of a copy just inserted (what reading it back would give)."""
    return Delivery(
        jti=row["jti"],
        notice_id=row["notice_id"],
        provider_id=row["provider_id"],
        mode=DeliveryMode(row["mode"]),
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        last_error=None,
        delivered_at=None,
        acknowledged_at=None,
        acted_at=None,
        confirmed_at=None,
        bindings_removed=None,
        notice=notice,
    )


def _delivery_row(
    notice_id: str, provider_id: str, seq: int, mode: DeliveryMode, now: datetime
) -> dict[str, Any]:
    return {
        "jti": new_id(""),
        "notice_id": notice_id,
        "provider_id": provider_id,
        "seq": seq,
        "mode": mode.value,
        "state": DeliveryState.PENDING.value,
        "attempts": 0,
        "created_at": now,
    }


async def move_heads(
    db: StoreDatabase,
    conn: AsyncConnection,
    heads: Sequence[tuple[str, DeliveryMode, int, int]],
    now: datetime,
) -> None:
    """Providers' cursors learn of notices routed to them, from seq ``low`` to ``high``.

    Each of ``heads`` is ``(provider_id, mode, low, high)``, one per provider;
    a cursor is created when new.

    A cursor that had settled everything becomes due at once; one waiting
    out a backoff (its provider unreachable) keeps waiting. A notice below
    what the cursor settled (routed late, or committed after a notice with a
    higher seq) moves the cursor back to it. The cursor's row lock, taken
    here and by :func:`~._cursor_repo.advance_cursors`, orders the two.
    """
    if not heads:
        return
    rows = [
        {
            "provider_id": provider_id,
            "mode": mode.value,
            "acked_seq": low - 1,
            "head_seq": high,
            "attempts": 0,
            "next_attempt_at": now,
        }
        # In one order everywhere (as advance_cursors locks them): no deadlock.
        for provider_id, mode, low, high in sorted(heads)
    ]
    if db.dialect == "postgresql":
        # One execution over four arrays (rows keep their order: the locks too).
        await conn.execute(
            _PG_MOVE_HEADS,
            {
                "provider_ids": [r["provider_id"] for r in rows],
                "modes": [r["mode"] for r in rows],
                "acked": [r["acked_seq"] for r in rows],
                "heads": [r["head_seq"] for r in rows],
                "now": now,
            },
        )
        return
    # Executed once per row (one statement compiled once): a VALUES list of a
    # thousand rows would be compiled afresh each time, and compiling it cost
    # more than running it.
    await conn.execute(_upsert_heads(db.insert(notice_cursors)), rows)


def _upsert_heads(stmt: postgresql.Insert | sqlite.Insert) -> Any:
    """``stmt`` (an INSERT of cursors) moving an existing cursor's heads instead (see
    :func:`move_heads`)."""
    c = notice_cursors.c
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[c.provider_id],
        set_={
            "mode": new.mode,
            "next_attempt_at": case(
                (c.acked_seq >= c.head_seq, new.next_attempt_at), else_=c.next_attempt_at
            ),
            "head_seq": case((new.head_seq > c.head_seq, new.head_seq), else_=c.head_seq),
            "acked_seq": case((new.acked_seq < c.acked_seq, new.acked_seq), else_=c.acked_seq),
        },
    )


_HEAD_ARRAYS = pg_unnest(
    provider_id=("provider_ids", String()),
    mode=("modes", String()),
    acked_seq=("acked", BigInteger()),
    head_seq=("heads", BigInteger()),
)
_PG_MOVE_HEADS = _upsert_heads(
    postgresql.insert(notice_cursors).from_select(
        ["provider_id", "mode", "acked_seq", "head_seq", "attempts", "next_attempt_at"],
        select(
            _HEAD_ARRAYS.c.provider_id,
            _HEAD_ARRAYS.c.mode,
            _HEAD_ARRAYS.c.acked_seq,
            _HEAD_ARRAYS.c.head_seq,
            literal(0),
            bindparam("now", type_=UTCDateTime()),
        ),
    )
)
