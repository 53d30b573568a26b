"""Fixtures for observability: the harness federation with a Prometheus-like
scraper (:mod:`tests.observability.observability_support`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from onecert.gateway.testing import Federation, FederationKeys
from tests.observability.observability_support import ObservedFederation


@pytest.fixture(autouse=True)
def _logs(logs_to_stderr: None) -> None:
    """Gateway logs go to stderr for every test here."""


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[ObservedFederation]:
    async with Federation(FederationKeys.create(tmp_path / "keys"), tmp_path) as federation:
        yield ObservedFederation(federation)
