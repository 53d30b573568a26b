"""Schema creation and migration, and the connection settings of each database."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from onecert.gateway.store import Store, normalize_url
from onecert.gateway.store._models import metadata
from onecert.gateway.store.testing import Database

_TABLES = {
    "alembic_version",
    "audit_head",
    "audit_log",
    "deliveries",
    "enrollment_tokens",
    "number_events",
    "rate_limits",
    "registry_entries",
    "registry_head",
    "registry_history",
    "replay_cache",
    "routing_filters",
    "routing_head",
    "unbind_tickets",
}


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
