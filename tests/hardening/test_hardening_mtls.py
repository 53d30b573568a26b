"""Mutual TLS: a caller without a client certificate, with one from another CA, an
expired or not yet valid one, or one not made for client use, is refused at the
handshake, by the production-mode gateway and by an SDK adapter; a certificate with a
name the gateway does not know gets no further than its role allows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onecert.gateway._principals import DEV_PRINCIPAL_HEADER
from onecert.sdk import Binding, CallInfo, Provider, Server, ServerTLS, UnbindRequest, UnbindResult
from onecert.v1 import gateway_pb2, gateway_pb2_grpc, provider_pb2, provider_pb2_grpc

if TYPE_CHECKING:
    from tests.hardening.hardening_support import Harness, Pki
else:
    Harness = Pki = Any

# Refused at the handshake: each of these never reaches a handler.
REFUSED = ["no certificate", "foreign", "expired", "not-yet-valid", "server-only", "plaintext"]


def _credentials(pki: Pki, client: str) -> grpc.ChannelCredentials | None:
    if client == "plaintext":
        return None
    return pki.credentials(None if client == "no certificate" else client)


def _channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)


@pytest.mark.parametrize("client", REFUSED)
async def test_gateway_refuses_at_the_handshake(tls_hz: Harness, pki: Pki, client: str) -> None:
    """The production-mode gateway refuses the caller before any RPC runs: health
    and Lookup both fail UNAVAILABLE, no carrier or provider is contacted and nothing
    is written."""
    hz = tls_hz
    await hz.carrier()
    await hz.provider("pay")
    gateway = await hz.gateway()
    assert not gateway.config.dev_plaintext
    before = await hz.snapshot(gateway)
    async with _channel(f"127.0.0.1:{gateway.port}", _credentials(pki, client)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        stub = gateway_pb2_grpc.GatewayStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await hz.lookup(gateway, stub=stub, deadline=3)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert gateway.lookup.active_lookups == 0
    assert hz.upstream_calls() == 0
    assert await hz.snapshot(gateway) == before


async def test_gateway_serves_the_portal_certificate(tls_hz: Harness, pki: Pki) -> None:
    """The control case: the portal's certificate from the dev CA gets its lookup."""
    hz = tls_hz
    await hz.carrier()
    await hz.provider("pay")
    gateway = await hz.gateway()
    messages = await hz.lookup(gateway, stub=hz.stub(gateway, pki.credentials("portal")))
    assert messages[-1].summary.total.answered == 2


async def test_unregistered_name_cannot_act_as_a_carrier(tls_hz: Harness, pki: Pki) -> None:
    """A valid certificate whose name is no carrier's is refused on ReportNumberEvent,
    even claiming a carrier in the dev header: the portal's (another role) with
    PERMISSION_DENIED, an intruder's (no role) with UNAUTHENTICATED; the carrier's own
    certificate is served. Nothing is written for the refused."""
    hz = tls_hz
    await hz.carrier("cm")
    gateway = await hz.gateway()
    before = await hz.snapshot(gateway)
    request = gateway_pb2.ReportNumberEventRequest(
        event_id="ev-1",
        msisdn=hz.CURRENT,
        type=gateway_pb2.NUMBER_EVENT_TYPE_CANCELLED,
        effective_at=hz.stamp(hz.at(2024)),
    )
    refusals = (
        ("portal", grpc.StatusCode.PERMISSION_DENIED, "the caller is portal"),
        ("intruder", grpc.StatusCode.UNAUTHENTICATED, "not registered"),
    )
    for name, code, says in refusals:
        stub = hz.stub(gateway, pki.credentials(name))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ReportNumberEvent(
                request, metadata=((DEV_PRINCIPAL_HEADER, "carrier:cm"),), timeout=5
            )
        assert err.value.code() == code, name
        assert says in (err.value.details() or ""), name
    assert await hz.snapshot(gateway) == before
    answer = await hz.stub(gateway, pki.credentials("cm")).ReportNumberEvent(request, timeout=5)
    assert answer.created


async def test_only_the_portal_may_call_lookup(tls_hz: Harness, pki: Pki) -> None:
    """A carrier's or an unknown certificate cannot call Lookup, even with a valid
    citizen assertion."""
    hz = tls_hz
    carrier = await hz.carrier()
    gateway = await hz.gateway()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await hz.lookup(gateway, stub=hz.stub(gateway, pki.credentials("intruder")))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not a portal" in (err.value.details() or "")
    assert carrier.record.calls == 0


# ---------------------------------------------------------------- SDK adapters


class _Accounts:
    def __init__(self) -> None:
        self.calls = 0

    async def list_bindings(self, msisdn: str, info: CallInfo) -> list[Binding]:
        self.calls += 1
        return []

    async def unbind(self, request: UnbindRequest, info: CallInfo) -> UnbindResult:
        self.calls += 1
        return UnbindResult.done()


@pytest.fixture
async def adapter(pki: Pki) -> AsyncIterator[tuple[Server, _Accounts]]:
    """An SDK provider serving mutual TLS on the dev CA."""
    accounts = _Accounts()
    provider = Provider(provider_id="pay", name="Pay", category="payment", implementation=accounts)
    tls = ServerTLS(pki.dev.server_cert, pki.dev.server_key, client_ca_file=pki.dev.ca_cert)
    async with Server(provider, gateway_keys=pki.dev.gateway_jwks, tls=tls, grace=0) as server:
        yield server, accounts


@pytest.mark.parametrize("client", REFUSED)
async def test_sdk_adapter_refuses_at_the_handshake(
    adapter: tuple[Server, _Accounts], pki: Pki, client: str
) -> None:
    """An SDK adapter with a client CA refuses the caller before any RPC runs: even
    Describe (which needs no warrant) fails UNAVAILABLE, and the provider's code never runs."""
    server, accounts = adapter
    async with _channel(server.address, _credentials(pki, client)) as channel:
        stub = provider_pb2_grpc.BindingProviderStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Describe(provider_pb2.DescribeRequest(), timeout=3)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListBindings(
                provider_pb2.ListBindingsRequest(msisdn="+8613800138001"), timeout=3
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert accounts.calls == 0


async def test_sdk_adapter_lets_any_ca_name_in_but_the_warrant_decides(
    adapter: tuple[Server, _Accounts], pki: Pki
) -> None:
    """A valid certificate of the CA with a name other than the gateway's passes the
    handshake (the SDK checks no name: finding) but gets no data: without the
    gateway's warrant ListBindings is UNAUTHENTICATED and the provider's code never runs."""
    server, accounts = adapter
    async with _channel(server.address, pki.credentials("intruder")) as channel:
        stub = provider_pb2_grpc.BindingProviderStub(channel)
        described = await stub.Describe(provider_pb2.DescribeRequest(), timeout=3)
        assert described.provider_id == "pay"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListBindings(
                provider_pb2.ListBindingsRequest(msisdn="+8613800138001"), timeout=3
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert accounts.calls == 0
