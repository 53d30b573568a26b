"""Schema creation and migration, and the connection settings of each database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, String, column, func, insert, inspect, select, table

from onecert.gateway.store import Store, normalize_url
from onecert.gateway.store._engine import MIGRATION_LOCK
from onecert.gateway.store._models import UTCDateTime, metadata, number_events
from onecert.gateway.store.testing import Database
from tests.store.test_notice_cursors import positions
from tests.store.test_notices import _record as record_notice

_TABLES = {"alembic_version", *metadata.tables}


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_upgrade_from_empty_creates_every_table(database: Database) -> None:
    """An empty database is migrated to the head revision with every table."""
    store = database.open()
    try:
        assert await store.schema_revision() is None
        await store.upgrade()
        assert await store.schema_revision() == Store.head_revision()
        async with store.engine.connect() as conn:
            assert await conn.run_sync(_tables) == _TABLES
    finally:
        await store.close()


async def test_migrated_schema_matches_the_models(store: Store) -> None:
    """The migrations build exactly the schema the code's metadata describes."""
    async with store.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


async def test_upgrade_twice_and_downgrade(store: Store) -> None:
    """Upgrading again changes nothing; downgrading to base drops every table."""
    await store.audit.append(kind="test", actor="a", subject="b")
    await store.upgrade()
    assert (await store.audit.verify()).rows_checked == 1
    await store.downgrade("base")
    async with store.engine.connect() as conn:
        assert await conn.run_sync(_tables) <= {"alembic_version"}
    assert await store.schema_revision() is None
    await store.upgrade()
    assert (await store.audit.verify()).rows_checked == 0


async def test_sqlite_connection_settings(tmp_path: Path) -> None:
    """SQLite runs with WAL, synchronous=FULL, foreign keys and a busy timeout."""
    store = Database.sqlite(tmp_path / "s.db").open(busy_timeout_ms=1234)
    try:
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 1234
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_uses_its_own_schema(pg_url: str) -> None:
    """On PostgreSQL the tables live in the configured schema, not in public."""
    async with Database.postgres(pg_url) as database:
        store = await database.open_upgraded()
        try:
            async with store.engine.connect() as conn:
                schema = (await conn.exec_driver_sql("SELECT current_schema()")).scalar()
                public = await conn.run_sync(
                    lambda c: set(inspect(c).get_table_names(schema="public"))
                )
        finally:
            await store.close()
    assert schema == database.schema
    assert "audit_log" not in public


async def test_naive_datetimes_are_refused(store: Store) -> None:
    """An instant without a time zone is a bug and is refused, not guessed."""
    with pytest.raises(ValueError, match="time-zone-aware"):
        await store.replay.remember("k", datetime(2030, 1, 1))  # noqa: DTZ001 - the point of the test


def test_normalize_url_picks_async_drivers() -> None:
    """Plain sqlite and postgresql URLs get the async drivers; others are refused."""
    assert normalize_url("sqlite:///a.db") == "sqlite+aiosqlite:///a.db"
    assert normalize_url("postgresql://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert normalize_url("postgres://h/db") == "postgresql+asyncpg://h/db"
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("mysql://h/db")


def test_schema_is_for_postgres_only() -> None:
    """A schema with SQLite, or a schema name that is not a plain identifier, is refused."""
    with pytest.raises(ValueError, match="PostgreSQL only"):
        Store.open("sqlite:///x.db", schema="s")
    with pytest.raises(ValueError, match="schema must match"):
        Store.open("postgresql://h/db", schema='x"; DROP TABLE y')


async def test_concurrent_upgrades_from_empty(database: Database) -> None:
    """Gateways starting together on an empty database all succeed; one migrates."""
    stores = [database.open() for _ in range(3)]
    try:
        await asyncio.gather(*(s.upgrade() for s in stores))
        assert {await s.schema_revision() for s in stores} == {Store.head_revision()}
    finally:
        for s in stores:
            await s.close()


@pytest.mark.postgres
async def test_upgrade_creates_a_missing_schema(pg_url: str) -> None:
    """On PostgreSQL, upgrade creates the configured schema when it does not exist."""
    async with Database.postgres(pg_url) as database:
        assert database.schema is not None
        fresh = Database(database.url, database.schema + "_new")
        store = await fresh.open_upgraded()
        try:
            assert await store.schema_revision() == Store.head_revision()
        finally:
            async with store.engine.begin() as conn:
                await conn.exec_driver_sql(f'DROP SCHEMA "{fresh.schema}" CASCADE')
            await store.close()


# The deliveries table as revisions 0001 to r0005 have it (with per-copy push state).
_OLD_DELIVERIES = table(
    "deliveries",
    *(column(name, String()) for name in ("jti", "notice_id", "provider_id", "mode", "state")),
    column("attempts"),
    column("created_at", UTCDateTime()),
    column("next_attempt_at", UTCDateTime()),
)


async def test_the_notice_log_migration_moves_existing_notices_over(database: Database) -> None:
    """Notices and deliveries written before the notice log get their seq in recording
    order, and each provider a cursor just below its first unsettled notice."""
    store = database.open()
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    try:
        await store.upgrade("0003")
        async with store.engine.begin() as conn:
            for i, notice_id in enumerate(["nt_b", "nt_a"]):  # recorded b first
                when = t0 + timedelta(minutes=i)
                await conn.execute(
                    insert(number_events).values(
                        notice_id=notice_id,
                        carrier_id="cm",
                        event_id=notice_id,
                        msisdn="+8613800138000",
                        msisdn_hash="0" * 64,
                        event_type="RECYCLED",
                        effective_at=when,
                        deadline=when + timedelta(days=3),
                        recorded_at=when,
                    )
                )
                for provider_id, state in (("pay", "ACKNOWLEDGED"), ("chat", "PENDING")):
                    await conn.execute(
                        insert(_OLD_DELIVERIES).values(
                            jti=f"{notice_id}-{provider_id}",
                            notice_id=notice_id,
                            provider_id=provider_id,
                            mode="push",
                            state=state if i == 0 else "PENDING",
                            attempts=0,
                            created_at=when,
                            next_attempt_at=when,
                        )
                    )
        await store.upgrade()
        b, a = await store.notices.get("nt_b"), await store.notices.get("nt_a")
        assert b is not None
        assert a is not None
        assert (b.seq, a.seq) == (1, 2)
        assert await positions(store, "pay", "chat") == [(1, 2), (0, 2)]
        (due,) = [c for c in await store.cursors.claim_due(worker_id="w") if c.provider_id == "pay"]
        assert [d.jti for d in await store.cursors.pending(due, limit=10)] == ["nt_a-pay"]
        later, _ = await record_notice(store, t0, "new", providers=[("pay", "push")])
        assert later.seq == 3
        await store.downgrade("0003")
        await store.upgrade()
        ids = ["nt_b", "nt_a", later.notice_id]
        renumbered = [await store.notices.get(notice_id) for notice_id in ids]
        assert sorted(n.seq for n in renumbered if n is not None) == [1, 2, 3]
    finally:
        await store.close()


@pytest.mark.postgres
async def test_statements_time_out_but_a_migration_waits(pg_url: str) -> None:
    """With ``timeout_s``, a statement the server holds longer is a TimeoutError (the
    database counts as unavailable), but a migration waits for the migration lock that
    another gateway holds for longer than that, and then completes."""
    async with Database.postgres(pg_url) as database:
        holder = Store.open(database.url, schema=database.schema)
        store = Store.open(database.url, schema=database.schema, timeout_s=0.5)
        try:
            async with store.engine.connect() as conn:
                with pytest.raises(TimeoutError):
                    await conn.exec_driver_sql("SELECT pg_sleep(2)")
            async with holder.engine.begin() as conn:
                await conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                upgrading = asyncio.create_task(store.upgrade())
                await asyncio.sleep(1.5)  # three times the statement timeout
                assert not upgrading.done()
            await asyncio.wait_for(upgrading, 30)
            assert await store.schema_revision() == Store.head_revision()
        finally:
            await store.close()
            await holder.close()
