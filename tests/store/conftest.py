"""Fixtures: every store test runs on a SQLite file and on a PostgreSQL schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from onecert.gateway.store import Store
from onecert.gateway.store.testing import Database

# A fixed instant; tests pass `now` explicitly so that nothing depends on the clock.
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database: a SQLite file, or a private schema on PostgreSQL."""
    if request.param == "sqlite":
        yield Database.sqlite(tmp_path / "store.db")
        return
    pg_url: str = request.getfixturevalue("pg_url")
    async with Database.postgres(pg_url) as db:
        yield db


@pytest.fixture
async def store(database: Database) -> AsyncIterator[Store]:
    """A store on ``database`` with the schema migrated."""
    store = await database.open_upgraded()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def other_store(store: Store, database: Database) -> AsyncIterator[Store]:
    """A second store on the same database, as a second gateway process would have."""
    other = database.open()
    try:
        yield other
    finally:
        await other.close()


@pytest.fixture
def t0() -> datetime:
    """The tests' reference instant."""
    return T0
