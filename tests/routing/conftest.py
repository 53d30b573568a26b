"""Fixtures for routing through real gateways: a federation in development mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from onecert.gateway.testing import Federation, FederationKeys


@pytest.fixture
async def fed(tmp_path: Path, logs_to_stderr: None) -> AsyncIterator[Federation]:
    """Development mode (plaintext, dev principals), fresh keys, no fakes yet."""
    async with Federation(FederationKeys.create(tmp_path), tmp_path) as federation:
        yield federation
