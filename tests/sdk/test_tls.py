"""TLS and mutual TLS on the adapter server, and the refusal to serve plaintext by accident."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from onecert.sdk import Provider, Server, ServerTLS
from onecert.sdk._tls import ClientTLS, TLSConfigError
from onecert.sdk.devkeys import DevKeys, init_dev_keys
from onecert.sdk.testing import FakeGateway
from onecert.v1 import provider_pb2, provider_pb2_grpc
from tests.sdk.sdk_fakes import NUMBER


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> DevKeys:
    """A second, unrelated dev CA."""
    return init_dev_keys(tmp_path_factory.mktemp("other-keys"), clients=("gateway",))


async def _describe(address: str, credentials: grpc.ChannelCredentials | None) -> str:
    channel = (
        grpc.aio.secure_channel(address, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(address)
    )
    async with channel:
        stub = provider_pb2_grpc.BindingProviderStub(channel)
        response = await stub.Describe(provider_pb2.DescribeRequest(), timeout=5)
        return response.provider_id


@pytest.fixture
async def tls_server(provider: Provider, dev_keys: DevKeys) -> AsyncIterator[Server]:
    tls = ServerTLS(dev_keys.server_cert, dev_keys.server_key)
    async with Server(provider, gateway_keys=FakeGateway().keys, tls=tls) as server:
        yield server


@pytest.fixture
async def mtls_server(provider: Provider, dev_keys: DevKeys) -> AsyncIterator[Server]:
    tls = ServerTLS(dev_keys.server_cert, dev_keys.server_key, dev_keys.ca_cert)
    async with Server(provider, gateway_keys=FakeGateway().keys, tls=tls) as server:
        yield server


async def test_tls_serves_clients_that_trust_the_ca(tls_server: Server, dev_keys: DevKeys) -> None:
    """With TLS a client trusting the CA is served; a plaintext client is not."""
    creds = ClientTLS(dev_keys.ca_cert).credentials()
    assert await _describe(tls_server.address, creds) == "example-forum"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _describe(tls_server.address, None)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    mtls_server: Server, dev_keys: DevKeys, other_keys: DevKeys
) -> None:
    """With a client CA, only clients presenting a certificate it signed get through."""
    good = ClientTLS(
        dev_keys.ca_cert, dev_keys.client_cert("gateway"), dev_keys.client_key("gateway")
    )
    assert await _describe(mtls_server.address, good.credentials()) == "example-forum"
    anonymous = ClientTLS(dev_keys.ca_cert)
    foreign = ClientTLS(
        dev_keys.ca_cert, other_keys.client_cert("gateway"), other_keys.client_key("gateway")
    )
    for client in (anonymous, foreign):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _describe(mtls_server.address, client.credentials())
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_needs_an_explicit_flag(provider: Provider) -> None:
    """Without tls and without insecure=True the server refuses to start, saying how to fix it."""
    with pytest.raises(ValueError, match="insecure=True"):
        Server(provider, gateway_keys=FakeGateway().keys)


def test_tls_and_insecure_contradict(provider: Provider, dev_keys: DevKeys) -> None:
    """Asking for TLS and plaintext at once is refused."""
    tls = ServerTLS(dev_keys.server_cert, dev_keys.server_key)
    with pytest.raises(ValueError, match="contradict"):
        Server(provider, gateway_keys=FakeGateway().keys, tls=tls, insecure=True)


async def test_missing_certificate_fails_at_start(provider: Provider, tmp_path: Path) -> None:
    """A certificate file that does not exist is a clear error when the server starts."""
    tls = ServerTLS(tmp_path / "nope.pem", tmp_path / "nope.key.pem")
    server = Server(provider, gateway_keys=FakeGateway().keys, tls=tls)
    with pytest.raises(TLSConfigError, match=r"nope\.pem"):
        await server.start()


async def test_gateway_jwks_file_is_read(provider: Provider, tmp_path: Path) -> None:
    """gateway_keys may be the path of the gateway's JWKS file; a bad file fails at construction."""
    gateway = FakeGateway(audience="example-forum")
    path = gateway.write_jwks(tmp_path / "gateway.jwks.json")
    async with Server(provider, gateway_keys=path, insecure=True) as server:
        channel = grpc.aio.insecure_channel(server.address)
        async with channel:
            stub = provider_pb2_grpc.BindingProviderStub(channel)
            response = await stub.ListBindings(
                provider_pb2.ListBindingsRequest(msisdn=NUMBER),
                metadata=gateway.metadata(NUMBER),
                timeout=5,
            )
            assert len(response.bindings) == 2
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="keys"):
        Server(provider, gateway_keys=tmp_path / "bad.json", insecure=True)
