"""The replay cache: identity-assertion ``jti``s seen while they live, shared by replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam

from onecert.gateway.store._database import StoreDatabase
from onecert.gateway.store._models import replay_cache
from onecert.gateway.store._rows import aware, check_text, resolve_now, utcnow

__all__ = ["ReplayRepository", "StoreReplayCache"]


class ReplayRepository:
    """Which token ids were seen, until when (``store.replay``)."""

    def __init__(self, db: StoreDatabase) -> None:
        self._db = db
        c = replay_cache.c
        ins = db.insert(replay_cache).values(jti=bindparam("jti"), expires_at=bindparam("exp"))
        # Built once and reused: its cache key and compiled form are kept.
        self._spend = ins.on_conflict_do_update(
            index_elements=[c.jti],
            set_={"expires_at": ins.excluded.expires_at},
            where=c.expires_at <= bindparam("now"),
        ).returning(c.jti)

    async def remember(
        self, jti: str, expires_at: datetime, *, now: datetime | None = None
    ) -> bool:
        """Record ``jti`` until ``expires_at``; True if new (or only expired).

        Atomic across processes (insert-if-absent). An already expired
        ``expires_at`` is not stored and answers True: such a token can
        never be accepted again anyway.
        """
        return jti in await self.remember_many([(jti, expires_at)], now=now)

    async def remember_many(
        self, entries: Sequence[tuple[str, datetime]], *, now: datetime | None = None
    ) -> set[str]:
        """Record every ``(jti, expires_at)`` in one statement; returns the jtis that
        were new (or only expired), as :meth:`remember` would answer each.

        The jtis must be distinct. Already expired entries are not stored and
        count as new.
        """
        now = resolve_now(now)
        new: set[str] = set()
        rows: list[dict[str, object]] = []
        for jti, given in entries:
            expires_at = aware(given, "expires_at")
            check_text("jti", jti, 128)
            if expires_at <= now:
                new.add(jti)
            else:
                rows.append({"jti": jti, "exp": expires_at, "now": now})
        if len({r["jti"] for r in rows}) != len(rows):
            raise ValueError("remember_many needs distinct jtis")
        if rows:
            # Insert-if-absent per jti, all in one transaction committed
            # before the answer comes back; one step on SQLite (write_sync).
            # In jti order: two replicas' batches then wait for each other
            # in the same order (PostgreSQL), never in a deadlock.
            rows.sort(key=lambda row: str(row["jti"]))
            new.update(await self._db.write_sync(self._spend_all, rows))
        return new

    def _spend_all(self, conn: Connection, rows: list[dict[str, object]]) -> list[str]:
        spent = [conn.execute(self._spend, row).first() for row in rows]
        return [str(row["jti"]) for row, first in zip(rows, spent, strict=True) if first]

    async def purge_expired(self, *, now: datetime | None = None) -> int:
        """Delete replay entries that expired; returns how many."""
        now = resolve_now(now)
        async with self._db.write() as conn:
            result = await conn.execute(
                replay_cache.delete().where(replay_cache.c.expires_at <= now)
            )
            return int(result.rowcount)


class StoreReplayCache:
    """The gateway's replay cache on a :class:`ReplayRepository`, shared by every replica.

    Implements ``remember(jti, expires_at: float) -> bool`` (seconds since
    the epoch) and deletes expired entries at most every ``purge_every_s``.
    A bounded in-process front remembers the ``local_entries`` jtis seen
    last, so a replay to this process is refused without a database round
    trip (answered before :meth:`remember` first pauses); a jti it does not
    hold always goes to the database, and nothing is accepted before the
    database has recorded it.

    Writes are group-committed: one task writes every jti queued while the
    previous statement ran in one multi-row statement, so concurrent
    lookups share a round trip and a commit.
    """

    def __init__(
        self,
        replay: ReplayRepository,
        *,
        purge_every_s: float = 60.0,
        local_entries: int = 10_000,
    ) -> None:
        if local_entries < 0:
            raise ValueError("local_entries must not be negative")
        self._replay = replay
        self._purge_every_s = purge_every_s
        self._next_purge = 0.0
        self._local_entries = local_entries
        # jti -> expires_at, oldest first (dicts keep insertion order).
        self._local: dict[str, float] = {}
        # jti -> (expires_at, the futures of its callers), waiting for the writer.
        self._queue: dict[str, tuple[float, list[asyncio.Future[bool]]]] = {}
        self._writer: asyncio.Task[None] | None = None

    async def remember(self, jti: str, expires_at: float) -> bool:
        """Record ``jti``; True if it was not seen before (or only expired), else False."""
        seen = self._local.get(jti)
        if seen is not None and seen > utcnow().timestamp():
            return False
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        queued = self._queue.get(jti)
        if queued is None:
            self._queue[jti] = (expires_at, [done])
        else:
            queued[1].append(done)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_queued(), name="replay-writer"
            )
        return await done

    async def _write_queued(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, {}
                await self._write_batch(batch)
        finally:
            self._writer = None

    async def _write_batch(
        self, batch: dict[str, tuple[float, list[asyncio.Future[bool]]]]
    ) -> None:
        now = utcnow()
        try:
            if now.timestamp() >= self._next_purge:
                self._next_purge = now.timestamp() + self._purge_every_s
                await self._replay.purge_expired(now=now)
            new = await self._replay.remember_many(
                [(jti, datetime.fromtimestamp(exp, UTC)) for jti, (exp, _) in batch.items()],
                now=now,
            )
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            for _, waiters in batch.values():
                for done in waiters:
                    if not done.done():
                        done.set_exception(exc)
            return
        for jti, (expires_at, waiters) in batch.items():
            # Remembered whether new or refused: either way the database holds
            # it live until about expires_at, so a later call here is a replay.
            self._note(jti, expires_at)
            for i, done in enumerate(waiters):
                # The same jti twice in one batch: only the first can be new.
                if not done.done():
                    done.set_result(jti in new and i == 0)

    def _note(self, jti: str, expires_at: float) -> None:
        if self._local_entries == 0:
            return
        self._local.pop(jti, None)
        self._local[jti] = expires_at
        while len(self._local) > self._local_entries:
            # Forgetting only costs a round trip: the database still refuses it.
            del self._local[next(iter(self._local))]
