"""Group commit of audit rows, and the replay cache's in-process front."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from onecert.gateway._audit import Auditor
from onecert.gateway.store import AuditDraft, AuditValueError, Store, StoreReplayCache
from onecert.gateway.store._models import audit_log

MSISDN_HASH = hashlib.sha256(b"+8613800138000").hexdigest()


async def _rows(store: Store) -> list[tuple[int, str, str, dict[str, object]]]:
    async with store.engine.connect() as conn:
        result = await conn.execute(
            select(audit_log.c.seq, audit_log.c.ts, audit_log.c.actor, audit_log.c.detail).order_by(
                audit_log.c.seq
            )
        )
        return [(r.seq, str(r.ts), r.actor, {"detail": r.detail}) for r in result]


def _draft(actor: str, i: int) -> AuditDraft:
    return AuditDraft(kind="lookup", actor=actor, subject=MSISDN_HASH, detail={"i": i})


async def test_batch_appends_in_order_and_chains(store: Store, t0: datetime) -> None:
    """A batch gets consecutive seqs in the given order, each chained to the one before."""
    first = await store.audit.append(kind="unbind", actor="portal", subject=MSISDN_HASH, now=t0)
    batch = await store.audit.append_many([_draft(f"p{i}", i) for i in range(5)], now=t0)
    last = await store.audit.append(
        kind="notice", actor="carrier:a", subject="", now=t0 + timedelta(1)
    )
    assert [e.seq for e in batch] == [2, 3, 4, 5, 6]
    assert [e.actor for e in batch] == [f"p{i}" for i in range(5)]
    assert batch[0].prev_hash == first.row_hash
    assert all(b.prev_hash == a.row_hash for a, b in itertools.pairwise(batch))
    assert last.prev_hash == batch[-1].row_hash
    assert await store.audit.append_many([]) == []
    result = await store.audit.verify(batch=3)
    assert (result.ok, result.rows_checked) == (True, 7)


async def test_batch_with_an_unfit_row_writes_nothing(store: Store, t0: datetime) -> None:
    """One row that reads like a raw number refuses the whole batch before anything is written."""
    bad = AuditDraft(kind="lookup", actor="portal", subject="+8613800138000", detail={})
    with pytest.raises(AuditValueError):
        await store.audit.append_many([_draft("p0", 0), bad], now=t0)
    assert await _rows(store) == []
    assert (await store.audit.verify()).ok


async def test_concurrent_batches_from_two_processes_stay_linear(
    store: Store, other_store: Store, t0: datetime
) -> None:
    """Two gateways appending batches at once produce one gap-free chain."""
    await asyncio.gather(
        *(
            s.audit.append_many([_draft(f"p{i}", j) for j in range(4)], now=t0)
            for i in range(6)
            for s in (store, other_store)
        )
    )
    result = await store.audit.verify(batch=7)
    assert (result.ok, result.rows_checked) == (True, 48)


async def test_auditor_coalesces_rows_keeping_each_producers_order(store: Store) -> None:
    """Many concurrent producers: every row is written, in order per producer, in few commits."""
    auditor = Auditor(store, key=os.urandom(32))

    async def producer(p: int) -> None:
        for i in range(20):
            if i % 5 == 0:
                await auditor.record("lookup", actor=f"p{p}", detail={"i": i})
            else:
                auditor.spawn("lookup", actor=f"p{p}", detail={"i": i})
            if i % 3 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(producer(p) for p in range(10)))
    await auditor.drain()
    assert auditor.queued == 0
    rows = await _rows(store)
    assert len(rows) == 200
    for p in range(10):
        mine = [r[3]["detail"] for r in rows if r[2] == f"p{p}"]
        assert mine == [f'{{"i":{i}}}' for i in range(20)]
    # Rows of one commit share its instant: far fewer commits than rows.
    assert len({r[1] for r in rows}) < 100
    result = await store.audit.verify()
    assert (result.ok, result.rows_checked) == (True, 200)


async def test_auditor_refuses_an_unfit_row_alone(store: Store) -> None:
    """An unfit row raises from record, is dropped by spawn, and rows queued beside it are kept."""
    auditor = Auditor(store, key=os.urandom(32))
    auditor.spawn("lookup", actor="portal", detail={"i": 1})
    auditor.spawn("lookup", actor="portal", subject="+8613800138000")
    with pytest.raises(AuditValueError):
        await auditor.record("lookup", actor="portal", detail={"number": "13800138000"})
    await auditor.record("lookup", actor="portal", detail={"i": 2})
    await auditor.drain()
    assert [r[3]["detail"] for r in await _rows(store)] == ['{"i":1}', '{"i":2}']
    assert (await store.audit.verify()).ok


async def test_two_auditors_on_one_database_stay_linear(store: Store, other_store: Store) -> None:
    """Two gateways' audit writers committing at once keep one verifiable chain."""
    auditors = [Auditor(s, key=os.urandom(32)) for s in (store, other_store)]
    for i in range(30):
        for n, auditor in enumerate(auditors):
            auditor.spawn("check", actor=f"g{n}", detail={"i": i})
    await asyncio.gather(*(a.drain() for a in auditors))
    result = await store.audit.verify()
    assert (result.ok, result.rows_checked) == (True, 60)


async def test_drain_with_nothing_queued_returns(store: Store) -> None:
    """Draining an idle auditor returns at once, and a later row still gets written."""
    auditor = Auditor(store, key=os.urandom(32))
    await auditor.drain()
    auditor.spawn("check", actor="portal")
    await auditor.drain()
    assert len(await _rows(store)) == 1


async def test_replay_seen_locally_is_refused_without_the_database(store: Store) -> None:
    """A jti this process saw is refused from memory even once the database forgot it."""
    cache = StoreReplayCache(store.replay)
    expires = time.time() + 60
    assert await cache.remember("k1", expires)
    # The database entry is gone (purged as if expired): only the local front remembers.
    await store.replay.purge_expired(now=datetime.fromtimestamp(expires + 1).astimezone())
    assert not await cache.remember("k1", expires)
    assert await StoreReplayCache(store.replay).remember("k1", expires)


async def test_replay_front_is_bounded_and_the_database_still_refuses(
    store: Store, other_store: Store
) -> None:
    """Entries pushed out of the bounded front are still refused by the shared database."""
    cache = StoreReplayCache(store.replay, local_entries=2)
    expires = time.time() + 60
    for jti in ("a", "b", "c"):
        assert await cache.remember(jti, expires)
    assert not await cache.remember("a", expires)
    assert not await StoreReplayCache(other_store.replay).remember("c", expires)
    assert not await StoreReplayCache(store.replay, local_entries=0).remember("b", expires)
