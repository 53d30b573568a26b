"""Fixtures for the registry: a federation over mutual TLS whose providers hold dev
client certificates (so a provider's own calls carry its real certificate), a
store on SQLite or PostgreSQL, and the regulator's stub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from onecert.gateway.store import Store
from onecert.gateway.testing import Federation, FederationKeys
from tests.registry.registry_support import RegistryWorld


@pytest.fixture(autouse=True)
def _logs(logs_to_stderr: None) -> None:
    """Gateway logs go to stderr for every test here."""


@pytest.fixture
async def world(
    federation_keys: FederationKeys, store: Store, tmp_path: Path
) -> AsyncIterator[RegistryWorld]:
    """Mutual TLS everywhere; gateways share ``store``."""
    w = RegistryWorld(Federation(federation_keys, tmp_path, tls=True), store)
    try:
        yield w
    finally:
        await w.fed.close()


@pytest.fixture
async def dev_world(
    federation_keys: FederationKeys, store: Store, tmp_path: Path
) -> AsyncIterator[RegistryWorld]:
    """Development mode (plaintext, the dev admin), for the CLI."""
    w = RegistryWorld(Federation(federation_keys, tmp_path), store)
    try:
        yield w
    finally:
        await w.fed.close()
