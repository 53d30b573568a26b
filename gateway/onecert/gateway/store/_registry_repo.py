"""The provider registry: who the gateway calls and hears, shared by every replica.

Every change (an invitation, a join, a certificate, a conformance gate, a
suspension, seeding from the configuration) is one write transaction that
locks the one-row ``registry_head``, changes the entry, appends its history
row and its audit row, and bumps the registry version. Replicas poll
:meth:`RegistryRepository.version` and reload :meth:`RegistryRepository.snapshot`
when it moves. Enrollment tokens are stored as their SHA-256 only: the raw
token is returned once, by :meth:`RegistryRepository.invite`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from onecert.gateway.store._audit_repo import AuditedRepository
from onecert.gateway.store._models import (
    enrollment_tokens,
    registry_entries,
    registry_head,
    registry_history,
)
from onecert.gateway.store._registry_seed import CONFIG_ACTOR, plan_seed
from onecert.gateway.store._registry_types import (
    INVITABLE,
    STATUS_TARGETS,
    AlreadyExistsError,
    EntryKind,
    EntryOrigin,
    Invitation,
    RedeemOutcome,
    RedeemResult,
    RegistryEntry,
    RegistryEvent,
    RegistrySnapshot,
    RegistryStatus,
    SeedEntry,
    SeedReport,
    TransitionError,
)
from onecert.gateway.store._rows import (
    check_text,
    error_text,
    fetch_all,
    fetch_first,
    from_row,
    resolve_now,
)
from onecert.gateway.store._types import AuditDraft, DeliveryMode, NotFoundError

__all__ = ["RegistryRepository", "check_entry_id", "token_digest"]

_ID = re.compile(r"[a-z0-9._-]{1,64}")
_CATEGORY = re.compile(r"[a-z_]{1,32}")
_SERIAL = re.compile(r"[0-9a-f]{1,64}")
_MAX_NAME = 200
_MAX_REASON = 500
_MAX_FAILURES = 50
# Makes a token recognisable in a paste or a secret scanner; not a secret.
_TOKEN_PREFIX = "onecert-enroll-"  # noqa: S105 - a fixed prefix, the secret follows it
_JOINABLE = frozenset({RegistryStatus.INVITED, RegistryStatus.PENDING})
_CERTIFIABLE = frozenset({RegistryStatus.PENDING, RegistryStatus.ACTIVE})
_ACTIONS = {
    RegistryStatus.SUSPENDED: "suspend",
    RegistryStatus.ACTIVE: "resume",
    RegistryStatus.REMOVED: "remove",
}


def check_entry_id(value: str) -> str:
    """``value`` if it is a valid provider or carrier id, else ValueError."""
    if not _ID.fullmatch(value):
        raise ValueError("an id is 1 to 64 characters of [a-z0-9._-]")
    return value


def token_digest(raw: str) -> str:
    """The SHA-256 hex of an enrollment token: all the store keeps of it."""
    return hashlib.sha256(raw.encode()).hexdigest()


def _check_name(name: str) -> str:
    if len(name) > _MAX_NAME or not name.isprintable():
        raise ValueError(f"a name is at most {_MAX_NAME} printable characters")
    return name


def _check_category(category: str) -> str:
    if not _CATEGORY.fullmatch(category):
        raise ValueError("a category is 1 to 32 characters of [a-z_]")
    return category


def _entry(row: RowMapping) -> RegistryEntry:
    return from_row(
        RegistryEntry,
        row,
        kind=EntryKind(row["kind"]),
        delivery=DeliveryMode(row["delivery"]),
        plaintext=bool(row["plaintext"]),
        prefixes=tuple((row["prefixes"] or "").split()),
        status=RegistryStatus(row["status"]),
        origin=EntryOrigin(row["origin"]),
        gate_failures=tuple(json.loads(row["gate_failures"] or "[]")),
        version=int(row["version"]),
    )


def _is(kind: EntryKind, entry_id: str) -> Any:
    c = registry_entries.c
    return (c.kind == kind.value) & (c.id == entry_id)


class RegistryRepository(AuditedRepository):
    """Providers and carriers, their status, certificates and history (``store.registry``)."""

    # ------------------------------------------------------------ reads

    async def get(
        self, entry_id: str, *, kind: EntryKind = EntryKind.PROVIDER
    ) -> RegistryEntry | None:
        """The entry, or None for an id the registry does not know."""
        async with self._db.read() as conn:
            row = await fetch_first(conn, select(registry_entries).where(_is(kind, entry_id)))
        return None if row is None else _entry(row)

    async def list(
        self,
        *,
        status: RegistryStatus | None = None,
        kind: EntryKind = EntryKind.PROVIDER,
        after: str | None = None,
        limit: int | None = None,
    ) -> Sequence[RegistryEntry]:
        """Every entry of ``kind`` (only those in ``status`` when given), by id: those
        whose id sorts after ``after`` when given, at most ``limit`` when given."""
        c = registry_entries.c
        stmt = select(registry_entries).where(c.kind == kind.value).order_by(c.id)
        if status is not None:
            stmt = stmt.where(c.status == status.value)
        if after is not None:
            stmt = stmt.where(c.id > after)
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self._db.read() as conn:
            return [_entry(r) for r in await fetch_all(conn, stmt)]

    async def version(self) -> int:
        """The registry version: bumped by every change (0 before the first)."""
        async with self._db.read() as conn:
            stmt = select(registry_head.c.version).where(registry_head.c.id == 1)
            return int((await conn.execute(stmt)).scalar_one())

    async def snapshot(self) -> RegistrySnapshot:
        """Every entry that is not removed, and the ids of those that are, at one version."""
        c = registry_entries.c
        async with self._db.snapshot() as conn:
            stmt = select(registry_head.c.version).where(registry_head.c.id == 1)
            version = int((await conn.execute(stmt)).scalar_one())
            rows = await fetch_all(conn, select(registry_entries).order_by(c.kind, c.id))
        live = tuple(_entry(r) for r in rows if r["status"] != RegistryStatus.REMOVED.value)
        removed = frozenset(
            (EntryKind(r["kind"]), str(r["id"]))
            for r in rows
            if r["status"] == RegistryStatus.REMOVED.value
        )
        return RegistrySnapshot(version=version, entries=live, removed=removed)

    async def history(
        self, entry_id: str, *, kind: EntryKind = EntryKind.PROVIDER
    ) -> Sequence[RegistryEvent]:
        """The entry's changes, oldest first."""
        h = registry_history.c
        stmt = (
            select(registry_history)
            .where(h.kind == kind.value, h.entry_id == entry_id)
            .order_by(h.seq)
        )
        async with self._db.read() as conn:
            rows = await fetch_all(conn, stmt)
        return [
            from_row(
                RegistryEvent,
                r,
                seq=int(r["seq"]),
                kind=EntryKind(r["kind"]),
                from_status=None if r["from_status"] is None else RegistryStatus(r["from_status"]),
                to_status=None if r["to_status"] is None else RegistryStatus(r["to_status"]),
                detail=json.loads(r["detail"]),
            )
            for r in rows
        ]

    # ------------------------------------------------------------ changes

    async def invite(
        self,
        provider_id: str,
        *,
        name: str,
        category: str,
        ttl: timedelta,
        actor: str,
        now: datetime | None = None,
    ) -> Invitation:
        """Invite a provider: a new one-time enrollment token, returned once.

        A new id is entered ``invited``. Re-inviting an invited or pending
        provider replaces its token (the old one is revoked) and keeps its
        status; re-inviting a removed one starts it afresh (``invited``).
        An active or suspended id raises :class:`AlreadyExistsError`; a bad
        id, name, category or ttl raises ValueError.
        """
        check_entry_id(provider_id)
        _check_name(name)
        _check_category(category)
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self._db.write() as conn:
            now = await self._begin(conn, now)
            row = await _fetch_row(conn, EntryKind.PROVIDER, provider_id)
            old = None if row is None else RegistryStatus(row["status"])
            if old is not None and old not in INVITABLE:
                raise AlreadyExistsError(
                    f"provider {provider_id!r} is {old.value}: an invitation is for a new, "
                    "invited, pending or removed provider"
                )
            await _revoke_tokens(conn, provider_id, now)
            expires_at = now + ttl
            await conn.execute(
                insert(enrollment_tokens).values(
                    token_hash=token_digest(token),
                    provider_id=provider_id,
                    created_at=now,
                    created_by=actor,
                    expires_at=expires_at,
                )
            )
            version = await _bump(conn)
            fresh = old is None or old is RegistryStatus.REMOVED
            values: dict[str, Any] = {"name": name, "category": category, "invited_at": now}
            if fresh:
                values.update(_fresh_invitation(now, actor))
            if row is None:
                values.update(kind=EntryKind.PROVIDER.value, id=provider_id, created_at=now)
                await conn.execute(insert(registry_entries).values(**values, version=version))
            else:
                await _update(conn, EntryKind.PROVIDER, provider_id, values, version)
            new = RegistryStatus.INVITED if fresh else old
            detail = {"expires_at": expires_at.isoformat(), "category": category}
            await self._log(conn, _Change(provider_id, now, actor, "invite", old, new, detail))
            entry = await _fetch_entry(conn, EntryKind.PROVIDER, provider_id)
        return Invitation(entry=entry, token=token, expires_at=expires_at)

    async def redeem_token(
        self,
        provider_id: str,
        raw_token: str,
        *,
        address: str | None,
        delivery: DeliveryMode | str,
        plaintext: bool = False,
        now: datetime | None = None,
    ) -> RedeemResult:
        """Spend an enrollment token: the provider joins (``invited`` -> ``pending``).

        Atomic and single use across replicas. Anything but
        :attr:`RedeemOutcome.REDEEMED` changes nothing. A push provider
        needs an ``address`` (ValueError otherwise); a poll-only one may
        have none.
        """
        delivery = DeliveryMode(delivery)
        if address is not None:
            check_text("address", address, 255)
        elif delivery is DeliveryMode.PUSH:
            raise ValueError("a provider that receives notices by push needs an address")
        async with self._db.write() as conn:
            now = await self._begin(conn, now)
            t = enrollment_tokens.c
            token = await fetch_first(
                conn, select(enrollment_tokens).where(t.token_hash == token_digest(raw_token))
            )
            refused = _token_refusal(token, provider_id, now)
            if refused is not None:
                return RedeemResult(refused)
            row = await _fetch_row(conn, EntryKind.PROVIDER, provider_id)
            if row is None or RegistryStatus(row["status"]) not in _JOINABLE:
                entry = None if row is None else _entry(row)
                return RedeemResult(RedeemOutcome.NOT_INVITED, entry)
            old = RegistryStatus(row["status"])
            await conn.execute(
                update(enrollment_tokens)
                .where(t.token_hash == token_digest(raw_token))
                .values(used_at=now)
            )
            version = await _bump(conn)
            actor = f"provider:{provider_id}"
            values: dict[str, Any] = {
                "address": address,
                "delivery": delivery.value,
                "plaintext": plaintext,
                "joined_at": now,
                "status": RegistryStatus.PENDING.value,
            }
            if old is not RegistryStatus.PENDING:
                values.update(status_changed_at=now, status_actor=actor, status_reason=None)
            await _update(conn, EntryKind.PROVIDER, provider_id, values, version)
            detail = {"delivery": delivery.value, "address": address is not None}
            change = _Change(provider_id, now, actor, "join", old, RegistryStatus.PENDING, detail)
            await self._log(conn, change)
            return RedeemResult(
                RedeemOutcome.REDEEMED, await _fetch_entry(conn, EntryKind.PROVIDER, provider_id)
            )

    async def record_certificate(
        self,
        provider_id: str,
        *,
        serial: str,
        not_after: datetime,
        actor: str = "gateway",
        now: datetime | None = None,
    ) -> RegistryEntry:
        """Record the certificate just issued to a pending or active provider.

        ``serial`` is lowercase hex. NotFoundError for an unknown id,
        TransitionError for a provider in another status.
        """
        if not _SERIAL.fullmatch(serial):
            raise ValueError("serial must be 1 to 64 lowercase hex digits")
        not_after = resolve_now(not_after)
        async with self._db.write() as conn:
            now = await self._begin(conn, now)
            status = await _status_in(conn, provider_id, _CERTIFIABLE, "be issued a certificate")
            version = await _bump(conn)
            values = {"cert_serial": serial, "cert_not_after": not_after}
            await _update(conn, EntryKind.PROVIDER, provider_id, values, version)
            detail = {"serial": "0x" + serial, "not_after": not_after.isoformat()}
            await self._log(
                conn, _Change(provider_id, now, actor, "certificate", status, status, detail)
            )
            return await _fetch_entry(conn, EntryKind.PROVIDER, provider_id)

    async def record_gate(
        self,
        provider_id: str,
        *,
        passed: bool,
        failures: Iterable[str] = (),
        actor: str = "gateway",
        now: datetime | None = None,
    ) -> RegistryEntry:
        """Record a conformance gate's verdict; a pending provider that passed becomes active.

        A failed gate leaves the status as it is (a pending provider stays
        pending and sees why). NotFoundError for an unknown id,
        TransitionError for a provider neither pending nor active.
        """
        kept = [error_text(f)[:_MAX_REASON] for f in failures][:_MAX_FAILURES]
        async with self._db.write() as conn:
            now = await self._begin(conn, now)
            old = await _status_in(conn, provider_id, _CERTIFIABLE, "go through the gate")
            version = await _bump(conn)
            values: dict[str, Any] = {
                "gate_passed": passed,
                "gate_failures": json.dumps(kept, ensure_ascii=False),
                "gate_at": now,
            }
            new = old
            if passed and old is RegistryStatus.PENDING:
                new = RegistryStatus.ACTIVE
                values.update(_status_values(new, now, actor, "passed the conformance gate"))
                values["activated_at"] = now
            await _update(conn, EntryKind.PROVIDER, provider_id, values, version)
            detail: dict[str, str | int | bool] = {"passed": passed, "failures": len(kept)}
            if kept:
                detail["first_failure"] = kept[0]
            await self._log(conn, _Change(provider_id, now, actor, "gate", old, new, detail))
            return await _fetch_entry(conn, EntryKind.PROVIDER, provider_id)

    async def set_status(
        self,
        entry_id: str,
        status: RegistryStatus,
        *,
        actor: str,
        reason: str = "",
        kind: EntryKind = EntryKind.PROVIDER,
        now: datetime | None = None,
    ) -> RegistryEntry:
        """Suspend (``suspended``), resume (``active``) or remove (``removed``) an entry.

        The allowed moves are :data:`STATUS_TARGETS`; resuming a provider
        that never passed the gate puts it back in ``pending``. Suspension
        and removal revoke its unused tokens. NotFoundError for an unknown
        id; TransitionError for a move the status does not allow.
        """
        if status not in _ACTIONS:
            raise TransitionError(f"status {status.value!r} is not set by hand")
        reason = error_text(reason)[:_MAX_REASON]
        async with self._db.write() as conn:
            now = await self._begin(conn, now)
            row = await _fetch_row(conn, kind, entry_id)
            if row is None:
                raise NotFoundError(f"no {kind.value} {entry_id!r} in the registry")
            old = RegistryStatus(row["status"])
            if status is old:
                raise TransitionError(f"{kind.value} {entry_id!r} is already {old.value}")
            if status not in STATUS_TARGETS[old]:
                raise TransitionError(
                    f"{kind.value} {entry_id!r} is {old.value}: it cannot be {_ACTIONS[status]}d"
                )
            new = status
            if new is RegistryStatus.ACTIVE and row["activated_at"] is None:
                new = RegistryStatus.PENDING
            if new in (RegistryStatus.SUSPENDED, RegistryStatus.REMOVED):
                await _revoke_tokens(conn, entry_id, now)
            version = await _bump(conn)
            values = _status_values(new, now, actor, reason or None)
            await _update(conn, kind, entry_id, values, version)
            detail = {"reason": reason} if reason else {}
            change = _Change(entry_id, now, actor, _ACTIONS[status], old, new, detail, kind)
            await self._log(conn, change)
            return await _fetch_entry(conn, kind, entry_id)

    async def seed(
        self, entries: Sequence[SeedEntry], *, now: datetime | None = None
    ) -> SeedReport:
        """Make the registry's config-seeded entries match ``entries`` (the configuration).

        Idempotent. New ids are entered ``active``; config entries whose
        settings changed are updated (their status kept when an admin set
        it); config entries no longer listed are ``removed`` (and come back
        when listed again); ids owned by an invitation are left alone
        (``skipped``). The version moves only when something changed.
        """
        async with self._db.write() as conn:
            now = await self._begin(conn, now)
            rows = await fetch_all(
                conn,
                select(registry_entries).where(
                    registry_entries.c.kind.in_([k.value for k in EntryKind])
                ),
            )
            plan = plan_seed(entries, [_entry(r) for r in rows], now)
            if not plan.report.changed:
                return plan.report
            version = await _bump(conn)
            for step in plan.steps:
                if step.insert:
                    await conn.execute(
                        insert(registry_entries).values(**step.values, version=version)
                    )
                else:
                    await _update(conn, step.kind, step.id, step.values, version)
                change = _Change(
                    step.id,
                    now,
                    CONFIG_ACTOR,
                    step.action,
                    step.old,
                    step.new,
                    step.detail,
                    step.kind,
                )
                await self._log(conn, change)
            return plan.report

    # ------------------------------------------------------------ helpers

    async def _begin(self, conn: AsyncConnection, now: datetime | None) -> datetime:
        # Every registry write takes the head's row lock first, so changes
        # are serialised across replicas and versions commit in order.
        h = registry_head.c
        await conn.execute(select(h.version).where(h.id == 1).with_for_update())
        return await self._db.clock(conn, resolve_now(now))

    async def _log(self, conn: AsyncConnection, change: _Change) -> None:
        """The history row and the audit row of one change, in its transaction."""
        c = change
        full: dict[str, str | int | bool] = dict(c.detail)
        if c.old is not None:
            full["from_status"] = c.old.value
        if c.new is not None:
            full["to_status"] = c.new.value
        await conn.execute(
            insert(registry_history).values(
                kind=c.kind.value,
                entry_id=c.entry_id,
                at=c.at,
                actor=c.actor,
                action=c.action,
                from_status=None if c.old is None else c.old.value,
                to_status=None if c.new is None else c.new.value,
                detail=json.dumps(full, sort_keys=True, ensure_ascii=False),
            )
        )
        subject = f"{c.kind.value}:{c.entry_id}"
        draft = AuditDraft(kind=f"registry.{c.action}", actor=c.actor, subject=subject, detail=full)
        await self._audit.chain(conn, [draft], c.at)


@dataclass(frozen=True)
class _Change:
    """One change to an entry, as its history row and audit row record it."""

    entry_id: str
    at: datetime
    actor: str
    action: str
    old: RegistryStatus | None
    new: RegistryStatus | None
    detail: Mapping[str, str | int | bool]
    kind: EntryKind = EntryKind.PROVIDER


def _status_values(
    status: RegistryStatus, now: datetime, actor: str, reason: str | None
) -> dict[str, Any]:
    return {
        "status": status.value,
        "status_changed_at": now,
        "status_actor": actor,
        "status_reason": reason,
    }


def _fresh_invitation(now: datetime, actor: str) -> dict[str, Any]:
    # A new id, or a removed one invited again: nothing of a former life survives.
    return {
        **_status_values(RegistryStatus.INVITED, now, actor, None),
        "origin": EntryOrigin.ENROLLED.value,
        "address": None,
        "delivery": DeliveryMode.PUSH.value,
        "plaintext": False,
        "client_cn": None,
        "deadline_s": None,
        "max_concurrency": None,
        "prefixes": None,
        "joined_at": None,
        "activated_at": None,
        "cert_serial": None,
        "cert_not_after": None,
        "gate_passed": None,
        "gate_failures": None,
        "gate_at": None,
    }


def _token_refusal(
    token: RowMapping | None, provider_id: str, now: datetime
) -> RedeemOutcome | None:
    """Why a token cannot be spent by ``provider_id`` now, or None when it can."""
    if token is None:
        return RedeemOutcome.UNKNOWN
    if token["provider_id"] != provider_id:
        return RedeemOutcome.OTHER_ID
    if token["used_at"] is not None:
        return RedeemOutcome.USED
    if token["revoked_at"] is not None:
        return RedeemOutcome.REVOKED
    if token["expires_at"] <= now:
        return RedeemOutcome.EXPIRED
    return None


async def _bump(conn: AsyncConnection) -> int:
    h = registry_head.c
    stmt = update(registry_head).where(h.id == 1).values(version=h.version + 1)
    return int((await conn.execute(stmt.returning(h.version))).scalar_one())


async def _fetch_row(conn: AsyncConnection, kind: EntryKind, entry_id: str) -> RowMapping | None:
    return await fetch_first(conn, select(registry_entries).where(_is(kind, entry_id)))


async def _fetch_entry(conn: AsyncConnection, kind: EntryKind, entry_id: str) -> RegistryEntry:
    row = await _fetch_row(conn, kind, entry_id)
    assert row is not None
    return _entry(row)


async def _status_in(
    conn: AsyncConnection,
    provider_id: str,
    allowed: frozenset[RegistryStatus],
    what: str,
) -> RegistryStatus:
    row = await _fetch_row(conn, EntryKind.PROVIDER, provider_id)
    if row is None:
        raise NotFoundError(f"no provider {provider_id!r} in the registry")
    status = RegistryStatus(row["status"])
    if status not in allowed:
        raise TransitionError(f"provider {provider_id!r} is {status.value}: it cannot {what}")
    return status


async def _update(
    conn: AsyncConnection,
    kind: EntryKind,
    entry_id: str,
    values: Mapping[str, Any],
    version: int,
) -> None:
    stmt = update(registry_entries).where(_is(kind, entry_id))
    await conn.execute(stmt.values(**values, version=version))


async def _revoke_tokens(conn: AsyncConnection, provider_id: str, now: datetime) -> None:
    t = enrollment_tokens.c
    await conn.execute(
        update(enrollment_tokens)
        .where(t.provider_id == provider_id, t.used_at.is_(None), t.revoked_at.is_(None))
        .values(revoked_at=now)
    )
