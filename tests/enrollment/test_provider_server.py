"""A joined provider's server: it answers the gateway's certificate only, and takes a renewed
certificate at the next handshake while calls in flight on the old connection finish."""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from onecert.gateway.enrollment import LocalCA, check_csr
from onecert.gateway.testing import FederationKeys
from onecert.sdk import Binding, Provider, Server, ServerTLS, UnbindRequest, UnbindResult
from onecert.sdk._channel import open_channel
from onecert.sdk._csr import generate_key, key_pem, make_csr, provider_dns_name
from onecert.sdk._server import ServerConfigError
from onecert.sdk._tls import ClientTLS
from onecert.sdk.testing import FakeGateway
from onecert.v1 import provider_pb2, provider_pb2_grpc

ID = "example-forum"
NUMBER = "+8613800138000"


def _provider(
    release: asyncio.Event | None = None, held: int = 0
) -> tuple[Provider, list[str], asyncio.Event]:
    """A provider whose lookups wait for ``release`` (calls held in flight); the event
    returned is set once ``held`` lookups are waiting."""
    provider = Provider(provider_id=ID, name="Example Forum", category="forum")
    seen: list[str] = []
    all_held = asyncio.Event()

    @provider.list_bindings
    async def list_bindings(msisdn: str) -> list[Binding]:
        seen.append(msisdn)
        if len(seen) == held:
            all_held.set()
        if release is not None:
            await release.wait()
        return []

    @provider.unbind
    async def unbind(request: UnbindRequest) -> UnbindResult:
        return UnbindResult.rejected("no such account")

    return provider, seen, all_held


def _as(keys: FederationKeys, client: str, server_name: str | None = None) -> ClientTLS:
    dev = keys.dev
    return ClientTLS(dev.ca_cert, dev.client_cert(client), dev.client_key(client), server_name)


async def _list(
    channel: grpc.aio.Channel, gateway: FakeGateway
) -> provider_pb2.ListBindingsResponse:
    stub = provider_pb2_grpc.BindingProviderStub(channel)
    return await stub.ListBindings(
        provider_pb2.ListBindingsRequest(msisdn=NUMBER),
        metadata=gateway.metadata(NUMBER),
        timeout=10,
    )


@pytest.fixture
def fake_gateway() -> FakeGateway:
    return FakeGateway(audience=ID)


async def test_a_certificate_of_the_ca_that_is_not_the_gateways_is_refused(
    enroll_keys: FederationKeys, fake_gateway: FakeGateway
) -> None:
    """Another provider's certificate from the same CA, with a valid warrant, is
    PERMISSION_DENIED before the adapter runs; the gateway's passes."""
    provider, seen, _ = _provider()
    dev = enroll_keys.dev
    server = Server(
        provider,
        gateway_keys=fake_gateway.keys,
        tls=ServerTLS(dev.server_cert, dev.server_key, dev.ca_cert),
        gateway_identity="gateway",
    )
    async with server:
        async with open_channel(server.address, tls=_as(enroll_keys, "intruder")) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _list(channel, fake_gateway)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "not the gateway's" in (refused.value.details() or "")
        assert seen == []
        async with open_channel(server.address, tls=_as(enroll_keys, "gateway")) as channel:
            await _list(channel, fake_gateway)
        assert seen == [NUMBER]


def test_gateway_identity_needs_mutual_tls(
    enroll_keys: FederationKeys, fake_gateway: FakeGateway
) -> None:
    """Without client certificates there is no identity to check: refused at construction."""
    provider, _, _ = _provider()
    dev = enroll_keys.dev
    with pytest.raises(ServerConfigError, match="mutual TLS"):
        Server(
            provider,
            gateway_keys=fake_gateway.keys,
            tls=ServerTLS(dev.server_cert, dev.server_key),
            gateway_identity="gateway",
        )


async def test_a_renewed_certificate_is_served_without_dropping_calls(
    enroll_keys: FederationKeys, fake_gateway: FakeGateway, tmp_path: Path
) -> None:
    """Calls in flight on a connection made with the old certificate all finish OK after
    the files change; a new connection gets the new certificate (it names the provider,
    which the old one did not)."""
    dev = enroll_keys.dev
    cert, key = tmp_path / "provider.pem", tmp_path / "provider.key.pem"
    shutil.copyfile(dev.server_cert, cert)
    shutil.copyfile(dev.server_key, key)
    release = asyncio.Event()
    provider, _, all_held = _provider(release, held=20)
    server = Server(
        provider,
        gateway_keys=fake_gateway.keys,
        tls=ServerTLS(cert, key, dev.ca_cert, reload=True),
        gateway_identity="gateway",
    )
    async with server:
        old = open_channel(server.address, tls=_as(enroll_keys, "gateway"))
        in_flight = [asyncio.ensure_future(_list(old, fake_gateway)) for _ in range(20)]
        await all_held.wait()
        # The renewal: a new key pair and a certificate for the provider id.
        new_key = generate_key()
        ca = LocalCA.load(dev.ca_cert, dev.ca_key)
        issued = await ca.issue(
            check_csr(make_csr(ID, new_key), ID), provider_id=ID, lifetime=timedelta(hours=1)
        )
        key.write_bytes(key_pem(new_key))
        cert.write_bytes(issued.chain_pem)
        renewed = _as(enroll_keys, "gateway", server_name=provider_dns_name(ID))
        async with open_channel(server.address, tls=renewed) as fresh:
            release.set()
            await _list(fresh, fake_gateway)
        answers = await asyncio.gather(*in_flight, return_exceptions=True)
        await old.close()
    assert all(isinstance(a, provider_pb2.ListBindingsResponse) for a in answers), answers


async def test_a_half_written_pair_is_not_taken(
    enroll_keys: FederationKeys, fake_gateway: FakeGateway, tmp_path: Path
) -> None:
    """A new key whose certificate is not written yet leaves the server on the old pair."""
    dev = enroll_keys.dev
    cert, key = tmp_path / "provider.pem", tmp_path / "provider.key.pem"
    shutil.copyfile(dev.server_cert, cert)
    shutil.copyfile(dev.server_key, key)
    provider, seen, _ = _provider()
    server = Server(
        provider,
        gateway_keys=fake_gateway.keys,
        tls=ServerTLS(cert, key, dev.ca_cert, reload=True),
    )
    async with server:
        key.write_bytes(key_pem(generate_key()))
        async with open_channel(server.address, tls=_as(enroll_keys, "gateway")) as channel:
            await _list(channel, fake_gateway)
    assert seen == [NUMBER]
