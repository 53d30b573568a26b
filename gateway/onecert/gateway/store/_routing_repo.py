"""Providers' routing filters, sealed by the gateway, shared by every replica.

Each publication is one row: a snapshot, additions, or an opt-out, its
payload sealed (the repository never sees it in the clear). Rows take their
``seq`` from the one-row ``routing_head`` under its row lock, so they commit
in ``seq`` order and a replica that has applied every row up to ``n`` never
misses a row below ``n`` committed later. Replicas poll :meth:`head` and read
what is new with :meth:`since`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update

from onecert.gateway.store._audit_repo import AuditedRepository
from onecert.gateway.store._models import routing_filters, routing_head, routing_keys
from onecert.gateway.store._rows import check_text, from_row, next_seq, resolve_now
from onecert.gateway.store._types import AuditDraft, ConflictError, NotFoundError

__all__ = ["FilterKind", "FilterRow", "KeyRow", "KeyState", "RoutingRepository"]


class FilterKind(enum.StrEnum):
    """What a routing publication is."""

    SNAPSHOT = "snapshot"
    ADDITIONS = "additions"
    OPT_OUT = "opt_out"


@dataclass(frozen=True)
class FilterRow:
    """One stored publication.

    Attributes:
        seq: its place in the order every replica applies publications in.
        provider_id: who published it.
        kind: snapshot, additions or opt-out.
        key_version: the routing key version it is keyed with (0 for an opt-out).
        created_at: the provider's ``created_at`` (Unix seconds; the
            gateway's receive time for an opt-out).
        received_at: when the gateway stored it.
        interval_s: the promised snapshot interval (snapshots only).
        sealed: the sealed payload (empty for an opt-out's nothing).
    """

    seq: int
    provider_id: str
    kind: FilterKind
    key_version: int
    created_at: int
    received_at: datetime
    interval_s: int | None
    sealed: bytes


class KeyState(enum.StrEnum):
    """Where a routing key version stands."""

    ACTIVE = "active"
    """Providers build new filters with it; one version at a time."""
    LIVE = "live"
    """Filters keyed with it are still routed (during a rotation)."""
    RETIRED = "retired"
    """Filters keyed with it are dropped and refused; its key is erased."""


@dataclass(frozen=True)
class KeyRow:
    """One stored routing key version (``sealed`` is empty once retired)."""

    version: int
    sealed: bytes
    state: KeyState
    changed_at: datetime


class RoutingRepository(AuditedRepository):
    """The sealed filters of every provider (``store.routing``)."""

    async def publish(
        self,
        *,
        provider_id: str,
        kind: FilterKind,
        key_version: int,
        created_at: int,
        sealed: bytes,
        interval_s: int | None = None,
        replay_margin_s: int = 300,
        audit: AuditDraft | None = None,
        now: datetime | None = None,
    ) -> int:
        """Store a publication (and its audit row, in the same transaction); returns its seq.

        A snapshot or an opt-out supersedes the provider's earlier snapshots
        and opt-outs, and its additions created ``replay_margin_s`` or more
        before it (those are in the snapshot by definition): they are deleted,
        so the table holds about one snapshot per provider.
        """
        now = resolve_now(now)
        check_text("provider_id", provider_id, 64)
        f = routing_filters.c
        async with self._db.write() as conn:
            seq = await next_seq(conn, routing_head)
            if kind is not FilterKind.ADDITIONS:
                superseded = f.kind != FilterKind.ADDITIONS.value
                old_additions = f.created_at <= created_at - replay_margin_s
                await conn.execute(
                    delete(routing_filters).where(
                        f.provider_id == provider_id, superseded | old_additions
                    )
                )
            await conn.execute(
                insert(routing_filters).values(
                    seq=seq,
                    provider_id=provider_id,
                    kind=kind.value,
                    key_version=key_version,
                    created_at=created_at,
                    received_at=now,
                    interval_s=interval_s,
                    sealed=sealed,
                )
            )
            if audit is not None:
                await self._audit.chain(conn, [audit], now)
        return seq

    async def head(self) -> int:
        """The seq of the last publication stored (0 before the first)."""
        async with self._db.read() as conn:
            stmt = select(routing_head.c.seq).where(routing_head.c.id == 1)
            return int((await conn.execute(stmt)).scalar_one())

    async def since(self, seq: int, *, limit: int = 1000) -> Sequence[FilterRow]:
        """Publications after ``seq``, oldest first, at most ``limit``."""
        f = routing_filters.c
        stmt = select(routing_filters).where(f.seq > seq).order_by(f.seq).limit(limit)
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [from_row(FilterRow, r, kind=FilterKind(r["kind"])) for r in rows]

    # ------------------------------------------------------------------ keys

    async def keys(self) -> Sequence[KeyRow]:
        """Every stored routing key version, lowest first (none until the first rotation)."""
        k = routing_keys.c
        async with self._db.read() as conn:
            rows = (await conn.execute(select(routing_keys).order_by(k.version))).mappings().all()
        return [from_row(KeyRow, r, state=KeyState(r["state"])) for r in rows]

    async def rotate_key(
        self,
        *,
        version: int,
        sealed: bytes,
        seed: Sequence[tuple[int, bytes]] = (),
        audit: AuditDraft | None = None,
        now: datetime | None = None,
    ) -> None:
        """Store a new active version; the active one before it stays live.

        ``seed``: the versions in use before the first rotation (from the
        configuration), stored live if the table is still empty, so every
        replica reads the whole keyring from here afterwards. The audit row
        commits in the same transaction.

        Raises:
            ConflictError: ``version`` is not above every stored version.
        """
        now = resolve_now(now)
        k = routing_keys.c
        async with self._db.write() as conn:
            stored = (await conn.execute(select(k.version))).scalars().all()
            if not stored:
                stored = [v for v, _ in seed]
                for seed_version, seed_sealed in seed:
                    await conn.execute(
                        insert(routing_keys).values(
                            version=seed_version,
                            sealed=seed_sealed,
                            state=KeyState.LIVE.value,
                            changed_at=now,
                        )
                    )
            if stored and version <= max(int(v) for v in stored):
                raise ConflictError(
                    f"routing key version {version} is not above every stored version"
                )
            await conn.execute(
                update(routing_keys)
                .where(k.state == KeyState.ACTIVE.value)
                .values(state=KeyState.LIVE.value, changed_at=now)
            )
            await conn.execute(
                insert(routing_keys).values(
                    version=version, sealed=sealed, state=KeyState.ACTIVE.value, changed_at=now
                )
            )
            if audit is not None:
                await self._audit.chain(conn, [audit], now)

    async def retire_key(
        self, version: int, *, audit: AuditDraft | None = None, now: datetime | None = None
    ) -> None:
        """Retire a live version: its key is erased, filters keyed with it are dropped.

        Raises:
            NotFoundError: no such version, or already retired.
            ConflictError: it is the active version.
        """
        now = resolve_now(now)
        k = routing_keys.c
        async with self._db.write() as conn:
            state = (
                await conn.execute(select(k.state).where(k.version == version))
            ).scalar_one_or_none()
            if state is None or state == KeyState.RETIRED.value:
                raise NotFoundError(f"routing key version {version} is not live")
            if state == KeyState.ACTIVE.value:
                raise ConflictError("the active routing key cannot be retired: rotate first")
            await conn.execute(
                update(routing_keys)
                .where(k.version == version)
                .values(state=KeyState.RETIRED.value, sealed=b"", changed_at=now)
            )
            if audit is not None:
                await self._audit.chain(conn, [audit], now)

    async def snapshot_versions(self) -> dict[str, int]:
        """The key version of each provider's stored snapshot."""
        f = routing_filters.c
        stmt = select(f.provider_id, f.key_version).where(f.kind == FilterKind.SNAPSHOT.value)
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return {str(provider_id): int(version) for provider_id, version in rows}
