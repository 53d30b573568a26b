"""The audit log's repository: one path appends to the hash chain, one verifies it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Connection, String, Text, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.type_api import TypeEngine

from onecert.gateway.store._audit import canonical_detail, check_audit_fields, row_hash
from onecert.gateway.store._database import StoreDatabase
from onecert.gateway.store._models import GENESIS_HASH, UTCDateTime, audit_head, audit_log
from onecert.gateway.store._rows import pg_unnest, resolve_now
from onecert.gateway.store._types import AuditDraft, AuditEntry, AuditVerification

__all__ = ["AuditRepository", "AuditedRepository"]


def _checked(entries: Sequence[AuditDraft]) -> list[AuditDraft]:
    # Copies, so that a caller's dict changed later cannot change a row.
    drafts = [
        AuditDraft(kind=e.kind, actor=e.actor, subject=e.subject, detail=dict(e.detail))
        for e in entries
    ]
    for d in drafts:
        check_audit_fields(kind=d.kind, actor=d.actor, subject=d.subject, detail=d.detail)
    return drafts


# Built once: a statement object reused keeps its cache key and compiled form,
# which otherwise cost more than the SQLite work of a small append.
_HEAD = select(audit_head.c.seq, audit_head.c.row_hash).where(audit_head.c.id == 1)
_LOCK_HEAD = _HEAD.with_for_update()
_APPEND = insert(audit_log)
_MOVE_HEAD = (
    update(audit_head)
    .where(audit_head.c.id == 1)
    .values(seq=bindparam("new_seq"), row_hash=bindparam("new_hash"))
)

# On PostgreSQL: the rows (all with one ts) unnested from an array per column,
# inserted by a data-modifying CTE of the head's UPDATE.
_ARRAYS: dict[str, TypeEngine[Any]] = {
    "seq": BigInteger(),
    "kind": String(),
    "actor": String(),
    "subject": String(),
    "detail": Text(),
    "prev_hash": String(),
    "row_hash": String(),
}
_ROWS = pg_unnest(**{name: (f"{name}s", kind) for name, kind in _ARRAYS.items()})
_PG_APPEND = _MOVE_HEAD.add_cte(
    insert(audit_log)
    .from_select(
        ["ts", *_ARRAYS],
        select(bindparam("ts", type_=UTCDateTime()), *(_ROWS.c[name] for name in _ARRAYS)),
    )
    .cte("appended")
)


def _chain(conn: Connection, drafts: Sequence[AuditDraft], ts: datetime) -> list[AuditEntry]:
    # Synchronous, so that one SQLite transaction is one step (write_sync);
    # async callers run it with run_sync in their own transaction.
    head = conn.execute(_LOCK_HEAD).one()
    seq, prev = int(head.seq), str(head.row_hash)
    out: list[AuditEntry] = []
    rows: list[dict[str, Any]] = []
    for d in drafts:
        seq += 1
        # The stored row but its own hash: what that hash is computed over.
        content: dict[str, Any] = {
            "seq": seq,
            "ts": ts,
            "kind": d.kind,
            "actor": d.actor,
            "subject": d.subject,
            "detail": canonical_detail(d.detail),
            "prev_hash": prev,
        }
        prev = row_hash(**content)
        rows.append({**content, "row_hash": prev})
        out.append(AuditEntry(**{**content, "detail": dict(d.detail), "row_hash": prev}))
    if rows and conn.dialect.name == "postgresql":
        # The rows and the head moved in one statement over arrays (one
        # execution on the server, not one per row, and one round trip less).
        conn.execute(
            _PG_APPEND,
            {
                "ts": ts,
                "new_seq": seq,
                "new_hash": prev,
                **{f"{name}s": [r[name] for r in rows] for name in _ARRAYS},
            },
        )
    elif rows:
        conn.execute(_APPEND, rows)
        conn.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": prev})
    return out


class AuditRepository:
    """The hash-chained audit log (``store.audit``).

    Every row is chained to the one before it by :func:`row_hash`. Appends
    are serialised across processes (PostgreSQL: a row lock on the chain
    head; SQLite: the write lock), so the chain stays linear. Other
    repositories append rows in their own transactions with :meth:`chain`,
    so a row commits (or not) with the change it records.
    """

    def __init__(self, db: StoreDatabase) -> None:
        self._db = db

    async def append(
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
        AuditValueError (see ``check_audit_fields``).
        """
        draft = AuditDraft(kind=kind, actor=actor, subject=subject, detail=dict(detail or {}))
        (entry,) = await self.append_many([draft], now=now)
        return entry

    async def append_many(
        self, entries: Sequence[AuditDraft], *, now: datetime | None = None
    ) -> list[AuditEntry]:
        """Append rows to the hash chain, in the given order, in one transaction.

        The chain head is locked and read once and each row is chained to
        the one before it, so many rows cost one commit. Every row is
        checked before anything is written (AuditValueError, as in
        :meth:`append`); then all rows are appended, or none.
        """
        drafts = _checked(entries)
        if not drafts:
            return []
        ts = resolve_now(now)
        # One step on SQLite (see StoreDatabase.write_sync): the append is on
        # the lookup's critical path, before its summary is sent.
        return await self._db.write_sync(_chain, drafts, ts)

    async def chain(
        self, conn: AsyncConnection, drafts: Sequence[AuditDraft], ts: datetime
    ) -> list[AuditEntry]:
        """Append rows in the caller's write transaction (they commit with it)."""
        return await conn.run_sync(_chain, _checked(drafts), ts)

    async def verify(self, *, batch: int = 1000) -> AuditVerification:
        """Check the whole chain in one consistent snapshot.

        Every row must have the next seq (1, 2, ...), the previous row's
        hash as ``prev_hash``, and a ``row_hash`` that matches its content;
        the last row must match the chain head (so a cut tail is found).
        The first failure is reported with its seq (a missing row by the
        seq it should have had).
        """
        a = audit_log.c
        async with self._db.snapshot() as conn:
            head = (await conn.execute(_HEAD)).first()
            expected, prev, checked = 1, GENESIS_HASH, 0
            while True:
                rows = (
                    await conn.execute(
                        select(audit_log).where(a.seq >= expected).order_by(a.seq).limit(batch)
                    )
                ).all()
                for r in rows:
                    failure = _row_failure(r, expected, prev)
                    if failure is not None:
                        return AuditVerification(False, checked, *failure)
                    prev, expected, checked = r.row_hash, expected + 1, checked + 1
                if len(rows) < batch:
                    break
        if head is None:
            return AuditVerification(False, checked, None, "the chain head row is missing")
        return _head_verdict(head.seq, head.row_hash, expected - 1, prev, checked)


class AuditedRepository:
    """A repository whose changes append their audit rows in the change's own transaction.

    The base of the repositories that write audited changes: they share the
    database and the one :class:`AuditRepository`, whose
    :meth:`~AuditRepository.chain` they call inside their transactions.
    """

    def __init__(self, db: StoreDatabase, audit: AuditRepository) -> None:
        self._db = db
        self._audit = audit


def _row_failure(r: Any, expected: int, prev: str) -> tuple[int, str] | None:
    # (seq at fault, reason) for the first rule this row breaks, or None.
    if r.seq != expected:
        return expected, f"row {expected} is missing"
    if r.prev_hash != prev:
        return r.seq, "prev_hash does not match the row before"
    # Every column but row_hash is hashed: a column added unhashed fails here, loudly.
    content = {name: value for name, value in r._mapping.items() if name != "row_hash"}
    if row_hash(**content) != r.row_hash:
        return r.seq, "row_hash does not match the row's content"
    return None


def _head_verdict(
    head_seq: int, head_hash: str, last: int, prev: str, checked: int
) -> AuditVerification:
    if head_seq > last:
        return AuditVerification(
            False, checked, last + 1, f"rows {last + 1} to {head_seq} are missing at the end"
        )
    if head_seq < last:
        return AuditVerification(
            False, checked, head_seq + 1, "rows follow the recorded end of the chain"
        )
    if head_hash != prev:
        return AuditVerification(
            False, checked, last or None, "the chain head does not match the last row"
        )
    return AuditVerification(True, checked)
