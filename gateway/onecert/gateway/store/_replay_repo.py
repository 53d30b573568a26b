"""The replay cache: identity-assertion ``jti``s seen while they live, shared by replicas."""

from __future__ import annotations

from datetime import UTC, datetime

from onecert.gateway.store._database import StoreDatabase
from onecert.gateway.store._models import replay_cache
from onecert.gateway.store._rows import aware, check_text, resolve_now, utcnow

__all__ = ["ReplayRepository", "StoreReplayCache"]


class ReplayRepository:
    """Which token ids were seen, until when (``store.replay``)."""

    def __init__(self, db: StoreDatabase) -> None:
        self._db = db

    async def remember(
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
        ins = self._db.insert(replay_cache).values(jti=jti, expires_at=expires_at)
        stmt = ins.on_conflict_do_update(
            index_elements=[c.jti],
            set_={"expires_at": ins.excluded.expires_at},
            where=c.expires_at <= now,
        ).returning(c.jti)
        # One statement, no transaction around it: insert-if-absent is atomic
        # by itself, and the row is committed when the answer comes back.
        async with self._db.single() as conn:
            return (await conn.execute(stmt)).first() is not None

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
    trip; a jti it does not hold always goes to the database, and nothing
    is accepted before the database has recorded it.
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

    async def remember(self, jti: str, expires_at: float) -> bool:
        """Record ``jti``; True if it was not seen before (or only expired), else False."""
        now = utcnow()
        seen = self._local.get(jti)
        if seen is not None and seen > now.timestamp():
            return False
        if now.timestamp() >= self._next_purge:
            self._next_purge = now.timestamp() + self._purge_every_s
            await self._replay.purge_expired(now=now)
        first = await self._replay.remember(jti, datetime.fromtimestamp(expires_at, UTC), now=now)
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
