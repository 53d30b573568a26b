"""Fixtures for the gateway: the federation of :mod:`onecert.gateway.testing`
(fake carriers and providers on real servers, port 0, with behaviour knobs) in
development mode (``fed``) or over mutual TLS (``tls_fed``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from onecert.gateway.testing import Federation, FederationKeys
from onecert.sdk.devkeys import DevKeys


@pytest.fixture(autouse=True)
def _logs(logs_to_stderr: None) -> None:
    """Gateway logs go to stderr for every test here."""


@pytest.fixture
def keys(tmp_path: Path) -> FederationKeys:
    """Fresh keys, written next to the test's files (as ``onecert keys init`` does)."""
    return FederationKeys.create(tmp_path)


@pytest.fixture
def dev_tls(keys: FederationKeys) -> DevKeys:
    return keys.dev


@pytest.fixture
async def fed(keys: FederationKeys, tmp_path: Path) -> AsyncIterator[Federation]:
    """Development mode: plaintext, no fakes yet."""
    async with Federation(keys, tmp_path) as federation:
        yield federation


@pytest.fixture
async def tls_fed(keys: FederationKeys, tmp_path: Path) -> AsyncIterator[Federation]:
    """Production mode: mutual TLS everywhere on the dev CA."""
    async with Federation(keys, tmp_path, tls=True) as federation:
        yield federation
