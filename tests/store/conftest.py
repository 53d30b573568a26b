"""Fixtures: every store test runs on a SQLite file and on a PostgreSQL schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from onecert.gateway.store import Store
from onecert.gateway.store.testing import Database

# A fixed instant; tests pass `now` explicitly so that nothing depends on the clock.
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


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
