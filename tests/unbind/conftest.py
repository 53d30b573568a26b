"""Fixtures for unbinding: :class:`tests.unbind.unbind_support.UnbindWorld` on a
SQLite file or a PostgreSQL schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from onecert.gateway.store.testing import Database
from onecert.gateway.testing import Federation, FederationKeys
from tests.unbind.unbind_support import UnbindWorld


@pytest.fixture(autouse=True)
def _logs(logs_to_stderr: None) -> None:
    """Gateway logs go to stderr for every test here."""


@pytest.fixture
async def env(tmp_path: Path, database: Database) -> AsyncIterator[UnbindWorld]:
    """A carrier, no providers yet, and no gateway yet, on ``database``."""
    world = UnbindWorld(Federation(FederationKeys.create(tmp_path / "keys"), tmp_path), database)
    await world.carrier()
    try:
        yield world
    finally:
        await world.close()
