"""Joining by invitation over the join listener: real CSRs, real certificates, real TLS."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from onecert.gateway import GatewayServer
from onecert.gateway.store import RegistryStatus, Store
from onecert.gateway.testing import Federation
from onecert.sdk import ProviderCredentials, join
from onecert.sdk._csr import generate_key, make_csr
from onecert.sdk.client import GatewayError, ProviderStatus
from onecert.v1 import enrollment_pb2, enrollment_pb2_grpc

ID = "example-forum"


async def _invite(store: Store, provider_id: str = ID, **options: object) -> str:
    invitation = await store.registry.invite(
        provider_id,
        name="Example Forum",
        category="forum",
        ttl=timedelta(hours=1),
        actor="admin:regulator",
        **options,  # type: ignore[arg-type]  # now=, in the expiry test
    )
    return invitation.token


async def _join(
    gateway: GatewayServer,
    federation: Federation,
    directory: Path,
    token: str,
    *,
    provider_id: str = ID,
    address: str | None = "127.0.0.1:50999",
) -> object:
    assert gateway.enrollment is not None
    return await join(
        gateway=f"127.0.0.1:{gateway.enrollment.port}",
        gateway_ca=federation.keys.dev.ca_cert,
        provider_id=provider_id,
        token=token,
        address=address,
        directory=directory,
    )


async def test_join_issues_a_certificate_for_the_id_and_records_it(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """An invited provider joins: its key stays local (0600), it gets a certificate for
    its id, the registry holds it PENDING with the serial and expiry."""
    token = await _invite(store)
    joined = await join(
        gateway=f"127.0.0.1:{gateway.enrollment.port}",  # type: ignore[union-attr]  # enrollment is configured
        gateway_ca=federation.keys.dev.ca_cert,
        provider_id=ID,
        token=token,
        address="127.0.0.1:50999",
        directory=tmp_path / "creds",
    )
    credentials = ProviderCredentials.at(tmp_path / "creds")
    assert joined.status is ProviderStatus.PENDING
    assert "RequestActivation" in joined.next_step
    assert stat.S_IMODE(credentials.key_file.stat().st_mode) == 0o600
    cert = credentials.certificate()
    assert cert.subject.rfc4514_string() == f"CN={ID}"
    state = credentials.state()
    assert state.gateway_identity == "gateway"
    assert state.gateway_address == f"127.0.0.1:{gateway.port}"
    entry = await store.registry.get(ID)
    assert entry is not None
    assert entry.status is RegistryStatus.PENDING
    assert entry.cert_serial == format(cert.serial_number, "x")
    assert entry.cert_not_after == cert.not_valid_after_utc
    assert entry.address == "127.0.0.1:50999"


async def test_a_token_joins_once(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """A used token is refused UNAUTHENTICATED, saying so."""
    token = await _invite(store)
    await _join(gateway, federation, tmp_path / "first", token)
    with pytest.raises(GatewayError) as refused:
        await _join(gateway, federation, tmp_path / "second", token)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "already used" in refused.value.details
    assert not (tmp_path / "second").exists()


async def test_a_token_for_another_id_is_refused_and_changes_nothing(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """A token of provider A cannot join provider B, and A's token stays usable."""
    token_a = await _invite(store, "site-a")
    await _invite(store, "site-b")
    with pytest.raises(GatewayError) as refused:
        await _join(gateway, federation, tmp_path / "b", token_a, provider_id="site-b")
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "another provider id" in refused.value.details
    entry = await store.registry.get("site-b")
    assert entry is not None
    assert entry.status is RegistryStatus.INVITED
    await _join(gateway, federation, tmp_path / "a", token_a, provider_id="site-a")


async def test_an_expired_token_is_refused(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """A token past its expiry is refused UNAUTHENTICATED, naming the expiry."""
    token = await _invite(store, now=datetime.now(UTC) - timedelta(hours=2))
    with pytest.raises(GatewayError) as refused:
        await _join(gateway, federation, tmp_path / "creds", token)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in refused.value.details


async def test_an_unknown_token_is_refused(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """A made-up token is refused UNAUTHENTICATED."""
    await _invite(store)
    with pytest.raises(GatewayError) as refused:
        await _join(gateway, federation, tmp_path / "creds", "onecert-enroll-guessed")
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED


async def _call_join(
    gateway: GatewayServer, federation: Federation, request: enrollment_pb2.JoinRequest
) -> enrollment_pb2.JoinResponse:
    assert gateway.enrollment is not None
    credentials = grpc.ssl_channel_credentials(federation.keys.dev.ca_cert.read_bytes())
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{gateway.enrollment.port}", credentials
    ) as channel:
        return await enrollment_pb2_grpc.EnrollmentStub(channel).Join(request, timeout=10)


@pytest.mark.parametrize(
    "case",
    [("other-site", "subject must be exactly CN=example-forum"), (ID, None)],
    ids=["wrong-cn", "garbage"],
)
async def test_a_bad_csr_is_refused_and_the_token_stays_usable(
    gateway: GatewayServer,
    federation: Federation,
    store: Store,
    tmp_path: Path,
    case: tuple[str, str | None],
) -> None:
    """A CSR for another name (or not a CSR) is INVALID_ARGUMENT naming the problem; the
    token is not spent, and a good CSR joins with it afterwards."""
    subject, says = case
    token = await _invite(store)
    csr = make_csr(subject, generate_key()).decode() if says else "not a csr"
    request = enrollment_pb2.JoinRequest(
        provider_id=ID, token=token, csr_pem=csr, address="127.0.0.1:50999"
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call_join(gateway, federation, request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (says or "not a PEM certificate signing request") in (refused.value.details() or "")
    entry = await store.registry.get(ID)
    assert entry is not None
    assert entry.status is RegistryStatus.INVITED
    await _join(gateway, federation, tmp_path / "creds", token)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"address": ""}, "address is required with DELIVERY_MODE_PUSH"),
        ({"address": "no port"}, "address must be HOST:PORT"),
        (
            {"delivery": enrollment_pb2.DELIVERY_MODE_POLL, "address": "host:99999"},
            "address must be HOST:PORT",
        ),
        ({"provider_id": "Not An Id"}, "provider_id is required"),
        ({"token": ""}, "token is required"),
    ],
    ids=["push-without-address", "bad-address", "bad-port", "bad-id", "no-token"],
)
async def test_malformed_joins_name_the_field(
    gateway: GatewayServer,
    federation: Federation,
    store: Store,
    fields: dict[str, object],
    says: str,
) -> None:
    """Each malformed field is INVALID_ARGUMENT naming it; nothing is spent."""
    token = await _invite(store)
    values: dict[str, object] = {
        "provider_id": ID,
        "token": token,
        "csr_pem": make_csr(ID, generate_key()).decode(),
        "address": "127.0.0.1:50999",
        "delivery": enrollment_pb2.DELIVERY_MODE_PUSH,
        **fields,
    }
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call_join(gateway, federation, enrollment_pb2.JoinRequest(**values))  # type: ignore[arg-type]  # the fields above
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in (refused.value.details() or "")
    entry = await store.registry.get(ID)
    assert entry is not None
    assert entry.status is RegistryStatus.INVITED


async def test_a_reserved_id_is_refused(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """A provider id that is another caller's certificate name (the portal's) gets no
    certificate: it would let the provider act as the portal."""
    token = await _invite(store, "portal")
    with pytest.raises(GatewayError) as refused:
        await _join(gateway, federation, tmp_path / "creds", token, provider_id="portal")
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED


async def test_the_certificate_chains_to_the_bundle_it_came_with(
    gateway: GatewayServer, federation: Federation, store: Store, tmp_path: Path
) -> None:
    """The CA bundle saved at join verifies the certificate (and the gateway's client one)."""
    token = await _invite(store)
    await _join(gateway, federation, tmp_path / "creds", token, address=None)
    credentials = ProviderCredentials.at(tmp_path / "creds")
    ca = x509.load_pem_x509_certificate(credentials.ca_file.read_bytes())
    credentials.certificate().verify_directly_issued_by(ca)
    gateway_cert = x509.load_pem_x509_certificate(
        federation.keys.dev.client_cert("gateway").read_bytes()
    )
    gateway_cert.verify_directly_issued_by(ca)
    assert credentials.state().delivery == "poll"


async def test_the_join_listener_is_rate_limited(
    federation: Federation, store: Store, tmp_path: Path
) -> None:
    """Past its join rate the unauthenticated listener answers RESOURCE_EXHAUSTED with a
    retry-after-ms hint, before looking at the request."""
    from onecert.gateway.testing import enrollment_config

    config = federation.config(
        enrollment=enrollment_config(federation.keys, joins_per_s=0.01, join_burst=1)
    )
    gateway = await federation.gateway(config, server_options={"store": store})
    try:
        request = enrollment_pb2.JoinRequest(provider_id=ID, token="x", csr_pem="y")
        with pytest.raises(grpc.aio.AioRpcError) as first:
            await _call_join(gateway, federation, request)
        assert first.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as second:
            await _call_join(gateway, federation, request)
        assert second.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        hints = dict(second.value.trailing_metadata() or ())
        assert int(hints["retry-after-ms"]) > 0
    finally:
        await gateway.stop(0)
