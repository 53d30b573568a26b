"""Fixed-window counters shared by every replica: one rate limit for the whole cluster."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete

from onecert.gateway.store._database import StoreDatabase
from onecert.gateway.store._models import rate_windows
from onecert.gateway.store._rows import check_text, resolve_now

__all__ = ["RateRepository"]


class RateRepository:
    """Counts of events per key and window (``store.rates``)."""

    def __init__(self, db: StoreDatabase) -> None:
        self._db = db

    async def hit(
        self, key: str, *, window_s: int, limit: int, now: datetime | None = None
    ) -> bool:
        """Count one event for ``key`` in the current ``window_s`` window; True while
        the window holds at most ``limit`` events (this one included).

        One statement (an upsert that increments), atomic across replicas:
        two replicas counting the same key never lose a hit.
        """
        check_text("key", key, 128)
        if window_s < 1 or limit < 0:
            raise ValueError("window_s must be at least 1 and limit not negative")
        now = resolve_now(now)
        start = int(now.timestamp()) // window_s * window_s
        c = rate_windows.c
        ins = self._db.insert(rate_windows).values(key=key, window_start=start, count=1)
        stmt = ins.on_conflict_do_update(
            index_elements=[c.key, c.window_start], set_={"count": c.count + 1}
        ).returning(c.count)
        async with self._db.single() as conn:
            count = int((await conn.execute(stmt)).scalar_one())
        return count <= limit

    async def purge(self, *, older_than_s: int, now: datetime | None = None) -> int:
        """Delete windows that started ``older_than_s`` seconds ago or more; returns how many."""
        cutoff = int(resolve_now(now).timestamp()) - older_than_s
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(rate_windows).where(rate_windows.c.window_start <= cutoff)
            )
            return int(result.rowcount)
