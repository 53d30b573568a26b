"""The audit log: a hash chain that finds edited, deleted and cut rows."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import update

from onecert.gateway.store import AuditValueError, Store, looks_like_number
from onecert.gateway.store._audit import row_hash
from onecert.gateway.store._models import audit_log

MSISDN_HASH = hashlib.sha256(b"+8613800138000").hexdigest()


async def _fill(store: Store, t0: datetime, n: int = 5) -> None:
    for i in range(n):
        await store.audit.append(
            kind="lookup",
            actor="portal",
            subject=MSISDN_HASH,
            detail={"providers": i, "outcome": "answered", "dangerous": i % 2 == 0},
            now=t0 + timedelta(seconds=i),
        )


async def _sql(store: Store, statement: str) -> None:
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql(statement)


async def test_appended_rows_chain_and_verify(store: Store, t0: datetime) -> None:
    """Rows get seq 1, 2, ... each holding the hash of the one before, and the chain verifies."""
    assert (await store.audit.verify()).ok
    first = await store.audit.append(kind="unbind", actor="portal", subject=MSISDN_HASH, now=t0)
    second = await store.audit.append(
        kind="notice", actor="carrier:a", subject=MSISDN_HASH, detail={"providers": 4}, now=t0
    )
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == "0" * 64
    assert second.prev_hash == first.row_hash
    assert second.detail == {"providers": 4}
    result = await store.audit.verify()
    assert (result.ok, result.rows_checked, result.first_broken_seq) == (True, 2, None)


async def test_concurrent_appends_from_two_processes_stay_linear(
    store: Store, other_store: Store, t0: datetime
) -> None:
    """Two gateways appending at once produce one gap-free chain."""
    await asyncio.gather(
        *(
            s.audit.append(kind="check", actor=f"p{i}", subject=MSISDN_HASH, now=t0)
            for i in range(12)
            for s in (store, other_store)
        )
    )
    result = await store.audit.verify(batch=5)
    assert (result.ok, result.rows_checked) == (True, 24)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("kind", "'admin'"),
        ("actor", "'someone-else'"),
        ("subject", "'" + "a" * 64 + "'"),
        ("detail", """'{"providers":9}'"""),
        ("prev_hash", "'" + "1" * 64 + "'"),
        ("row_hash", "'" + "2" * 64 + "'"),
    ],
)
async def test_edited_row_is_found(store: Store, t0: datetime, column: str, value: str) -> None:
    """Changing any column of a row with raw SQL is reported at that row."""
    await _fill(store, t0)
    await _sql(store, f"UPDATE audit_log SET {column} = {value} WHERE seq = 3")
    result = await store.audit.verify(batch=2)
    assert not result.ok
    assert result.first_broken_seq == 3
    assert result.rows_checked == 2


async def test_edited_timestamp_is_found(store: Store, t0: datetime) -> None:
    """Moving a row's timestamp is found at that row."""
    await _fill(store, t0)
    async with store.engine.begin() as conn:
        await conn.execute(
            update(audit_log).where(audit_log.c.seq == 4).values(ts=t0 - timedelta(days=1))
        )
    result = await store.audit.verify()
    assert (result.ok, result.first_broken_seq) == (False, 4)


async def test_rehashed_row_is_found_at_the_next(store: Store, t0: datetime) -> None:
    """An edit that also recomputes the row's own hash breaks the link to the next row."""
    await _fill(store, t0)
    row = await store.audit.append(kind="lookup", actor="portal", subject=MSISDN_HASH, now=t0)
    await store.audit.append(kind="lookup", actor="portal", subject=MSISDN_HASH, now=t0)
    forged = row_hash(
        prev_hash=row.prev_hash,
        seq=row.seq,
        ts=row.ts,
        kind=row.kind,
        actor="someone-else",
        subject=row.subject,
        detail="{}",
    )
    async with store.engine.begin() as conn:
        await conn.execute(
            update(audit_log)
            .where(audit_log.c.seq == row.seq)
            .values(actor="someone-else", row_hash=forged)
        )
    result = await store.audit.verify()
    assert (result.ok, result.first_broken_seq) == (False, row.seq + 1)
    assert "prev_hash" in result.reason


@pytest.mark.parametrize(("deleted", "broken"), [(1, 1), (3, 3), (5, 5)])
async def test_deleted_row_is_found(store: Store, t0: datetime, deleted: int, broken: int) -> None:
    """Deleting the first, a middle or the last row is reported with the missing seq."""
    await _fill(store, t0)
    await _sql(store, f"DELETE FROM audit_log WHERE seq = {deleted}")
    result = await store.audit.verify()
    assert not result.ok
    assert result.first_broken_seq == broken
    assert "missing" in result.reason


async def test_cut_tail_with_forged_head_is_found(store: Store, t0: datetime) -> None:
    """Removing the last rows and moving the head back still leaves a mismatch."""
    await _fill(store, t0)
    await _sql(store, "DELETE FROM audit_log WHERE seq >= 4")
    await _sql(store, "UPDATE audit_head SET seq = 3")
    result = await store.audit.verify()
    assert (result.ok, result.first_broken_seq) == (False, 3)


async def test_append_continues_after_verification(store: Store, t0: datetime) -> None:
    """Appends after a verification continue the same chain."""
    await _fill(store, t0, 2)
    assert (await store.audit.verify()).ok
    entry = await store.audit.append(kind="admin", actor="admin:ops", subject="report", now=t0)
    assert entry.seq == 3
    assert (await store.audit.verify()).rows_checked == 3


@pytest.mark.parametrize(
    "detail",
    [
        {"msisdn": "+8613800138000"},
        {"number": "13800138000"},
        {"note": "called tel:+86-13800138000"},
        {"id": "11010519491231002X"},
        {"number": 8613800138000},
        {"Bad-Key": "x"},
        {"list": ["a"]},
        {"long": "x" * 2000},
    ],
)
async def test_raw_numbers_are_refused(
    store: Store, t0: datetime, detail: dict[str, object]
) -> None:
    """Detail values that look like a phone or ID number (or are malformed) are refused."""
    with pytest.raises(AuditValueError) as info:
        await store.audit.append(kind="lookup", actor="portal", subject="s", detail=detail, now=t0)  # type: ignore[arg-type]  # malformed on purpose
    assert "13800138000" not in str(info.value)
    assert (await store.audit.verify()).rows_checked == 0


async def test_actor_and_subject_must_be_hashed(store: Store) -> None:
    """A raw msisdn as actor or subject is refused; digests and ids are accepted."""
    with pytest.raises(AuditValueError, match="subject"):
        await store.audit.append(kind="lookup", actor="portal", subject="+8613800138000")
    with pytest.raises(AuditValueError, match="actor"):
        await store.audit.append(kind="lookup", actor="13800138000", subject="x")
    with pytest.raises(AuditValueError, match="kind"):
        await store.audit.append(kind="Lookup!", actor="portal", subject="x")
    entry = await store.audit.append(
        kind="unbind",
        actor="provider:example-pay",
        subject=MSISDN_HASH,
        detail={"ticket_id": "ut_abc", "when": "2025-03-01T12:00:00+00:00", "count": 9_999_999},
    )
    assert entry.seq == 1


@given(st.binary(min_size=1, max_size=64))
def test_digests_are_not_mistaken_for_numbers(data: bytes) -> None:
    """SHA-256 hex digests pass the phone-number guard."""
    assert not looks_like_number(hashlib.sha256(data).hexdigest())


@given(st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True), st.sampled_from(["", "tel:", "x "]))
def test_e164_numbers_are_caught(number: str, prefix: str) -> None:
    """Every E.164 number, bare or inside text, is caught by the guard."""
    assert looks_like_number(prefix + number)
