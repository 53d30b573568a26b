"""The whole flow over mutual TLS with the certificates it issues: invite, join, gate,
active (asked in lookups), status, renewal with calls in flight, suspension."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from onecert.gateway import GatewayServer
from onecert.gateway.enrollment import LocalCA, check_csr
from onecert.gateway.enrollment.testing import serve_for_join
from onecert.gateway.store import RegistryStatus, Store
from onecert.gateway.testing import ADMIN_CN, CURRENT, Federation, at
from onecert.sdk import (
    Binding,
    BindingKind,
    CertificateRenewer,
    Provider,
    ProviderCredentials,
    Server,
    UnbindRequest,
    UnbindResult,
)
from onecert.sdk._csr import generate_key, key_pem, make_csr
from onecert.sdk._tls import TLSConfigError
from onecert.sdk.client import GatewayError, ProviderGatewayClient, ProviderStatus
from onecert.v1 import gateway_pb2, gateway_pb2_grpc
from tests.enrollment.enrollment_support import ID, join_forum


def _forum() -> Provider:
    """A forum holding one account on the citizen's current number."""
    provider = Provider(provider_id=ID, name="Example Forum", category="forum")

    @provider.list_bindings
    async def list_bindings(msisdn: str) -> list[Binding]:
        if msisdn != CURRENT:
            return []
        return [
            Binding(
                account_ref="u1", kind=BindingKind.LOGIN, bound_at=at(2021, 3), display_name="lin"
            )
        ]

    @provider.unbind
    async def unbind(request: UnbindRequest) -> UnbindResult:
        return UnbindResult.rejected("no such account")

    return provider


async def _joined(
    gateway: GatewayServer, federation: Federation, store: Store, directory: Path
) -> tuple[Server, ProviderCredentials]:
    server = await serve_for_join(_forum(), federation.keys.dev, directory)
    joined = await join_forum(
        gateway, store, federation, directory, server.address, category="forum"
    )
    return server, joined.credentials


def _client(credentials: ProviderCredentials) -> ProviderGatewayClient:
    return ProviderGatewayClient(credentials.state().gateway_address, tls=credentials.gateway_tls())


async def _asked(federation: Federation, gateway: GatewayServer) -> set[str]:
    messages = await federation.lookup(gateway)
    return {
        r.provider_id
        for r in federation.results(messages)
        if r.outcome == gateway_pb2.CALL_OUTCOME_ANSWERED
    }


async def test_a_joined_provider_is_activated_and_answers_lookups(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """Pending: not asked, its own RPCs allowed, others refused; after the gate (asked for
    by the provider over mutual TLS with its new certificate) it answers the lookup."""
    server, credentials = await _joined(gateway, federation, store, tmp_path / "creds")
    try:
        assert ID not in await _asked(federation, gateway)
        async with _client(credentials) as client:
            record = await client.enrollment_status()
            assert record.status is ProviderStatus.PENDING
            assert record.certificate_serial == format(credentials.certificate().serial_number, "x")
            with pytest.raises(GatewayError) as refused:
                await client.check_recycled(CURRENT, at(2021))
            assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
            result = await client.request_activation()
            assert result.status is ProviderStatus.ACTIVE, result
            assert "conformant" in result.summary
        assert ID in await _asked(federation, gateway)
    finally:
        await server.shutdown(0)


async def test_renewal_drops_no_call(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """Lookups keep reaching the provider and the provider keeps calling the gateway while
    its certificate is renewed (new key pair) twice: every call answers, and the registry
    holds the newest serial (test_provider_server pins the new handshakes)."""
    server, credentials = await _joined(gateway, federation, store, tmp_path / "creds")
    async with _client(credentials) as client:
        await client.request_activation()
        first = credentials.certificate().serial_number
        stop = asyncio.Event()
        failures: list[str] = []

        async def lookups() -> int:
            done = 0
            while not stop.is_set():
                if ID not in await _asked(federation, gateway):
                    failures.append("a lookup did not reach the provider")
                done += 1
            return done

        async def own_calls() -> int:
            done = 0
            while not stop.is_set():
                try:
                    await client.check_recycled(CURRENT, at(2021))
                except GatewayError as exc:
                    failures.append(f"the provider's call failed: {exc}")
                done += 1
            return done

        running = [asyncio.ensure_future(lookups()), asyncio.ensure_future(own_calls())]
        renewer = CertificateRenewer(credentials, clients=[client])
        for _ in range(2):
            await asyncio.sleep(0.3)
            await renewer.renew()
        await asyncio.sleep(0.3)
        stop.set()
        counts = await asyncio.gather(*running)
    await server.shutdown(0)
    assert failures == []
    assert all(count > 0 for count in counts)
    renewed = credentials.certificate()
    assert renewed.serial_number != first
    entry = await store.registry.get(ID)
    assert entry is not None
    assert entry.cert_serial == format(renewed.serial_number, "x")


async def test_renewal_names_the_caller_only(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """A CSR for another id, made with the provider's own certificate, is INVALID_ARGUMENT."""
    server, credentials = await _joined(gateway, federation, store, tmp_path / "creds")
    try:
        async with _client(credentials) as client:
            with pytest.raises(GatewayError) as refused:
                await client.renew_certificate(make_csr("other-site", generate_key()))
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "CN=example-forum" in refused.value.details
    finally:
        await server.shutdown(0)


async def test_a_suspended_provider_can_neither_renew_nor_activate(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """Suspension refuses the provider's own enrollment calls too (PERMISSION_DENIED)."""
    server, credentials = await _joined(gateway, federation, store, tmp_path / "creds")
    try:
        admin = federation.stub(gateway, client=ADMIN_CN)
        await admin.SuspendProvider(
            gateway_pb2.SuspendProviderRequest(provider_id=ID, reason="test"), timeout=10
        )
        assert gateway.registry is not None
        await gateway.registry.refresh()
        async with _client(credentials) as client:
            for call in (client.request_activation(), client.enrollment_status()):
                with pytest.raises(GatewayError) as refused:
                    await call
                assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
        entry = await store.registry.get(ID)
        assert entry is not None
        assert entry.status is RegistryStatus.SUSPENDED
    finally:
        await server.shutdown(0)


async def test_an_expired_certificate_is_refused_at_the_handshake(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """Past its expiry a provider's certificate opens no connection to the gateway (nor
    could it renew itself): the SDK says it expired, and the handshake fails."""
    server, credentials = await _joined(gateway, federation, store, tmp_path / "creds")
    await server.shutdown(0)
    dev = federation.keys.dev
    loaded = LocalCA.load(dev.ca_cert, dev.ca_key)
    past = LocalCA(
        loaded.certificate,
        serialization.load_pem_private_key(dev.ca_key.read_bytes(), None),  # type: ignore[arg-type]  # the dev CA key is EC
        clock=lambda: datetime.now(UTC) - timedelta(hours=3),
    )
    key = generate_key()
    issued = await past.issue(
        check_csr(make_csr(ID, key), ID), provider_id=ID, lifetime=timedelta(hours=1)
    )
    credentials.save(key=key_pem(key), chain=issued.chain_pem, ca_bundle=issued.ca_bundle_pem)
    # The SDK refuses to use it, naming the expiry ...
    with pytest.raises(TLSConfigError, match="expired"):
        _client(credentials)
    # ... and a client that tries anyway is refused by the gateway's TLS.
    raw = grpc.ssl_channel_credentials(dev.ca_cert.read_bytes(), key_pem(key), issued.chain_pem)
    async with grpc.aio.secure_channel(f"127.0.0.1:{gateway.port}", raw) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway_pb2_grpc.GatewayStub(channel).GetEnrollmentStatus(
                gateway_pb2.GetEnrollmentStatusRequest(), timeout=5
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
