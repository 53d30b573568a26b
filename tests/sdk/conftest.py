"""Fixtures for the SDK's tests: a fake provider served on a real port, dev keys."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from onecert.sdk import Carrier, Provider
from onecert.sdk.devkeys import DevKeys, init_dev_keys
from onecert.sdk.testing import FakeGateway, InProcessServer, serve_in_process
from tests.sdk.sdk_fakes import CARRIER_ID, PROVIDER_ID, FakeForum, FakeMobile


@pytest.fixture
def forum() -> FakeForum:
    return FakeForum()


@pytest.fixture
def provider(forum: FakeForum) -> Provider:
    return Provider(
        provider_id=PROVIDER_ID, name="Example Forum", category="forum", implementation=forum
    )


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway(audience=PROVIDER_ID)


@pytest.fixture
async def running(provider: Provider, gateway: FakeGateway) -> AsyncIterator[InProcessServer]:
    """The fake forum behind a real gRPC server on 127.0.0.1."""
    async with serve_in_process(provider, gateway=gateway) as served:
        yield served


@pytest.fixture
def mobile() -> FakeMobile:
    return FakeMobile()


@pytest.fixture
def carrier(mobile: FakeMobile) -> Carrier:
    return Carrier(carrier_id=CARRIER_ID, implementation=mobile)


@pytest.fixture(scope="session")
def dev_keys(tmp_path_factory: pytest.TempPathFactory) -> DevKeys:
    """A dev keys directory (CA, server and client certificates, gateway JWKS)."""
    return init_dev_keys(tmp_path_factory.mktemp("sdk-keys"), clients=("gateway", "stranger"))
