"""Rate limits shared by every replica: one limit for the whole cluster, not per process.

Each key is a token bucket kept as one number, its *theoretical arrival
time* (GCRA, the generic cell rate algorithm of ATM networks): a call at
``now`` is allowed when ``max(tat, now) + interval - now <= burst * interval``,
and then moves ``tat`` on by ``interval``. One conditional upsert decides
and records a call atomically, so replicas counting the same key never
admit more than the bucket holds.
"""

from __future__ import annotations

import time

from sqlalchemy import case, delete, literal, select

from onecert.gateway.store._database import StoreDatabase
from onecert.gateway.store._models import rate_limits
from onecert.gateway.store._rows import check_text

__all__ = ["RateRepository"]


class RateRepository:
    """Token buckets by key (``store.rates``)."""

    def __init__(self, db: StoreDatabase) -> None:
        self._db = db

    async def take(self, key: str, *, rate: float, burst: int, now: float | None = None) -> float:
        """Take one token from ``key``'s bucket (``burst`` tokens, ``rate`` per second).

        Returns 0.0 when the call is allowed (and counted), else the seconds
        until a token is free (nothing counted). ``now`` is Unix time.
        """
        check_text("key", key, 128)
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        now = time.time() if now is None else now
        interval = 1.0 / rate
        c = rate_limits.c
        start = case((c.tat > now, c.tat), else_=literal(now))
        ins = self._db.insert(rate_limits).values(key=key, tat=now + interval)
        stmt = ins.on_conflict_do_update(
            index_elements=[c.key],
            set_={"tat": start + interval},
            where=start + interval - now <= burst * interval,
        ).returning(c.tat)
        async with self._db.single() as conn:
            taken = (await conn.execute(stmt)).first()
        if taken is not None:
            return 0.0
        async with self._db.read() as conn:
            tat = (await conn.execute(select(c.tat).where(c.key == key))).scalar_one_or_none()
        if tat is None:
            return interval
        # Free once tat - now fits (burst - 1) intervals again.
        return max(interval / 1000, float(tat) - now - (burst - 1) * interval)

    async def purge(self, *, now: float | None = None) -> int:
        """Forget buckets that are full again (their ``tat`` has passed); returns how many."""
        now = time.time() if now is None else now
        async with self._db.write() as conn:
            result = await conn.execute(delete(rate_limits).where(rate_limits.c.tat <= now))
            return int(result.rowcount)
