"""The replay cache shared by gateway replicas."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from onecert.gateway.store import Store, StoreReplayCache


async def test_remember_is_insert_if_absent(store: Store, t0: datetime) -> None:
    """A jti is new once while it lives, and may be remembered again after it expired."""
    exp = t0 + timedelta(minutes=5)
    assert await store.replay.remember("k1", exp, now=t0)
    assert not await store.replay.remember("k1", exp, now=t0 + timedelta(minutes=1))
    assert await store.replay.remember("k2", exp, now=t0)
    assert await store.replay.remember("k1", exp + timedelta(minutes=10), now=exp)
    assert not await store.replay.remember("k1", exp + timedelta(minutes=10), now=exp)


async def test_already_expired_entries_are_not_stored(store: Store, t0: datetime) -> None:
    """An entry that is already dead answers True and is not kept."""
    assert await store.replay.remember("dead", t0, now=t0)
    assert await store.replay.remember("dead", t0, now=t0)
    assert await store.replay.purge_expired(now=t0 + timedelta(days=1)) == 0


async def test_purge_deletes_only_expired(store: Store, t0: datetime) -> None:
    """Purging removes expired entries and keeps live ones."""
    await store.replay.remember("old", t0 + timedelta(minutes=1), now=t0)
    await store.replay.remember("new", t0 + timedelta(minutes=10), now=t0)
    assert await store.replay.purge_expired(now=t0 + timedelta(minutes=5)) == 1
    assert not await store.replay.remember("new", t0 + timedelta(minutes=10), now=t0)


async def test_concurrent_replays_across_replicas(store: Store, other_store: Store) -> None:
    """The same jti presented to two replicas at once is accepted by exactly one."""
    cache_a, cache_b = StoreReplayCache(store.replay), StoreReplayCache(other_store.replay)
    expires = time.time() + 60
    answers = await asyncio.gather(
        *(c.remember("same", expires) for c in (cache_a, cache_b, cache_a, cache_b))
    )
    assert sorted(answers) == [False, False, False, True]
    assert await cache_b.remember("other", expires)


async def test_remember_many_answers_each_jti(store: Store, t0: datetime) -> None:
    """One statement records many jtis and tells which were new, as one by one would."""
    exp = t0 + timedelta(minutes=5)
    assert await store.replay.remember("seen", exp, now=t0)
    new = await store.replay.remember_many(
        [("seen", exp), ("fresh", exp), ("dead", t0 - timedelta(seconds=1))], now=t0
    )
    assert new == {"fresh", "dead"}
    assert not await store.replay.remember("fresh", exp, now=t0)


async def test_concurrent_remembers_share_a_statement(store: Store, other_store: Store) -> None:
    """Many jtis remembered at once through one cache are each new once, and a jti
    repeated in the same burst is new only for its first caller."""
    cache = StoreReplayCache(store.replay)
    expires = time.time() + 60
    jtis = [f"j{i}" for i in range(20)] + ["j3", "j7"]
    answers = await asyncio.gather(*(cache.remember(j, expires) for j in jtis))
    assert answers == [True] * 20 + [False, False]
    assert not await StoreReplayCache(other_store.replay).remember("j11", expires)
