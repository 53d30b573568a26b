"""Fixtures for recycled-number notices: a real gateway on port 0 (mutual TLS with
dev certificates per role, or development mode with dev principals), real SDK
providers, a store on SQLite or PostgreSQL, and a clock the test controls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from onecert.gateway.store import Store
from onecert.gateway.testing import Federation, FederationKeys
from tests.notices.notices_support import T0, Clock, NoticeWorld


@pytest.fixture(autouse=True)
def _logs(logs_to_stderr: None) -> None:
    """Gateway logs go to stderr for every test here."""


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
async def world(
    federation_keys: FederationKeys, store: Store, clock: Clock, tmp_path: Path
) -> AsyncIterator[NoticeWorld]:
    """Everything over mutual TLS, callers identified by their certificates."""
    w = NoticeWorld(Federation(federation_keys, tmp_path, tls=True), store, clock)
    try:
        yield w
    finally:
        await w.close()


@pytest.fixture
async def dev_world(
    federation_keys: FederationKeys, store: Store, clock: Clock, tmp_path: Path
) -> AsyncIterator[NoticeWorld]:
    """Development mode: plaintext, callers named by the dev principal header."""
    w = NoticeWorld(Federation(federation_keys, tmp_path), store, clock)
    try:
        yield w
    finally:
        await w.close()
