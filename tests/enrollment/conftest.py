"""Fixtures for joining: a gateway on port 0 in production mode (mutual TLS with the dev
CA, which is also the federation CA), its join listener, and a store on SQLite or
PostgreSQL where the regulator's invitations are written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from onecert.gateway import GatewayServer
from onecert.gateway.store import Store
from onecert.gateway.testing import Federation, FederationKeys, enrollment_config


@pytest.fixture(autouse=True)
def _logs(logs_to_stderr: None) -> None:
    """Gateway logs go to stderr for every test here."""


@pytest.fixture(scope="session")
def enroll_keys(tmp_path_factory: pytest.TempPathFactory) -> FederationKeys:
    # "intruder": a certificate of the same CA that is not the gateway's.
    return FederationKeys.create(tmp_path_factory.mktemp("enroll-keys"), clients=["intruder"])


@pytest.fixture
async def federation(enroll_keys: FederationKeys, tmp_path: Path) -> AsyncIterator[Federation]:
    async with Federation(enroll_keys, tmp_path, tls=True) as fed:
        yield fed


@pytest.fixture
async def gateway(federation: Federation, store: Store) -> AsyncIterator[GatewayServer]:
    """A started gateway with [enrollment] and the story's carrier, on the test's store
    (stopped before the store closes)."""
    await federation.carrier()
    config = federation.config(enrollment=enrollment_config(federation.keys))
    server = await federation.gateway(config, server_options={"store": store})
    yield server
    await server.stop(0)
