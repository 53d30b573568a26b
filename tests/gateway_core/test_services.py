"""Gateway services called directly, without a server: plain values in, Refusal out."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from onecert.gateway._attribution import Attribution
from onecert.gateway._audit import Auditor
from onecert.gateway._channels import ChannelPool
from onecert.gateway._compliance import ComplianceService
from onecert.gateway._config import CarrierConfig, FanoutConfig, NoticesConfig, ProviderConfig
from onecert.gateway._fanout import FanOut
from onecert.gateway._handles import HandleClaims, HandleSealer
from onecert.gateway._identity import AssertionVerifier
from onecert.gateway._lookup import MAX_CLIENT_REQUEST_ID, LookupService
from onecert.gateway._notices import NoticeService
from onecert.gateway._observers import NullObserver
from onecert.gateway._principals import Principal, Role
from onecert.gateway._refusal import Refusal
from onecert.gateway._unbind import UnbindService
from onecert.gateway.store import Store
from onecert.gateway.store.testing import Database
from onecert.sdk._keys import SigningKey
from onecert.sdk._set import SetIssuer
from onecert.sdk._warrant import WarrantIssuer
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from tests.gateway_core.conftest import FakeClock

NUMBER = "+8613800138000"
PAY = ProviderConfig(id="pay", address="unused:1", name="Example Pay")


class RecordingObserver(NullObserver):
    """Keeps the reasons of refused assertions."""

    def __init__(self) -> None:
        self.rejected: list[str] = []

    def assertion_rejected(self, reason: str) -> None:
        self.rejected.append(reason)


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _lookup_service(verifier: AssertionVerifier, observer: RecordingObserver) -> LookupService:
    key = SigningKey.generate("EdDSA")
    fanout = FanOut(
        carriers=(),
        providers=(),
        fanout=FanoutConfig(),
        channels=ChannelPool(upstream_tls=None, max_message_bytes=1 << 20),
        warrants=WarrantIssuer(key=key, issuer="gw"),
    )
    return LookupService(
        verifier=verifier,
        fanout=fanout,
        sealer=HandleSealer(secrets.token_bytes(32)),
        handle_ttl=600,
        lookup_deadline=5,
        summary_margin=0.1,
        max_concurrent_lookups=2,
        observer=observer,
    )


async def _drain(messages: AsyncIterator[gateway_pb2.LookupResponse]) -> None:
    async for _ in messages:
        pass


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Database.sqlite(tmp_path / "state.db").open_upgraded()
    yield opened
    await opened.close()


@pytest.fixture
def auditor(store: Store) -> Auditor:
    return Auditor(store, key=secrets.token_bytes(32))


@pytest.fixture
def unbind(
    verifier: AssertionVerifier,
    store: Store,
    auditor: Auditor,
    sealer: HandleSealer,
    clock: FakeClock,
) -> UnbindService:
    return UnbindService(
        verifier=verifier,
        sealer=sealer,
        store=store,
        auditor=auditor,
        providers={"pay": PAY},
        ticket_ttl=3600,
        clock=clock,
    )


def _handle(sealer: HandleSealer, sub: str, attribution: Attribution, now: float) -> str:
    return sealer.seal(
        HandleClaims(
            sub=sub,
            provider_id="pay",
            msisdn=NUMBER,
            account_ref="acct-1",
            attribution=attribution,
            expires_at=now + 600,
            query_id="q-1",
        )
    )


async def test_lookup_refuses_before_spending_the_assertion(
    verifier: AssertionVerifier, mint: Callable[..., str]
) -> None:
    """A lookup with no assertion is refused UNAUTHENTICATED (and counted); an over-long
    client_request_id is refused INVALID_ARGUMENT before the assertion is checked, so
    the same assertion then passes and the lookup fails only for want of carriers."""
    observer = RecordingObserver()
    service = _lookup_service(verifier, observer)
    with pytest.raises(Refusal) as missing:
        await _drain(service.lookup(metadata=()))
    assert missing.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert observer.rejected == ["missing"]

    token = mint()
    too_long = "r" * (MAX_CLIENT_REQUEST_ID + 1)
    with pytest.raises(Refusal) as bad:
        await _drain(service.lookup(metadata=_metadata(token), client_request_id=too_long))
    assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(Refusal) as no_carrier:
        await _drain(service.lookup(metadata=_metadata(token), client_request_id="r-1"))
    assert no_carrier.value.code is grpc.StatusCode.UNAVAILABLE
    assert no_carrier.value.reason == "no_carrier"
    assert service.active_lookups == 0


async def test_malformed_handle_leaves_the_assertion_unspent(
    unbind: UnbindService, sealer: HandleSealer, mint: Callable[..., str], clock: FakeClock
) -> None:
    """A malformed handle is refused INVALID_ARGUMENT before the assertion is checked;
    the same assertion then unbinds with a genuine handle, and only then is spent."""
    metadata = _metadata(mint())
    for malformed in ("not a handle!", "AAAA", "A" * 3000):
        with pytest.raises(Refusal) as refused:
            await unbind.unbind(malformed, metadata=metadata)
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT, malformed
        assert refused.value.audit is None, "no citizen is known yet"

    genuine = _handle(sealer, "citizen-42", Attribution.LEFT_BEHIND, clock.now)
    answer = await unbind.unbind(genuine, metadata=metadata)
    assert answer.created
    assert answer.state == gateway_pb2.TICKET_STATE_QUEUED
    with pytest.raises(Refusal) as replayed:
        await unbind.unbind(genuine, metadata=metadata)
    assert replayed.value.code is grpc.StatusCode.UNAUTHENTICATED


async def test_another_citizens_handle_is_refused_with_its_audit_row(
    unbind: UnbindService,
    sealer: HandleSealer,
    mint: Callable[..., str],
    store: Store,
    clock: FakeClock,
) -> None:
    """A well-formed handle sealed for someone else is PERMISSION_DENIED, and the
    refusal carries the ``unbind.refused`` row for the boundary to write."""
    theirs = _handle(sealer, "someone-else", Attribution.MINE, clock.now)
    with pytest.raises(Refusal) as refused:
        await unbind.unbind(theirs, metadata=_metadata(mint()))
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
    note = refused.value.audit
    assert note is not None
    assert note.kind == "unbind.refused"
    assert note.actor.startswith("citizen:")
    assert NUMBER not in repr(note)
    assert await store.tickets.get("ut_" + "a" * 24) is None


async def test_notice_and_compliance_services_refuse_plain_values(
    store: Store, auditor: Auditor, clock: FakeClock
) -> None:
    """A carrier reporting a number outside its prefixes is PERMISSION_DENIED and
    nothing is recorded; a compliance report with an impossible ``since`` is
    INVALID_ARGUMENT; a valid one lists the configured provider."""
    now = datetime.fromtimestamp(clock.now, UTC)
    notices = NoticeService(
        store=store,
        carriers=(CarrierConfig(id="cm", address="unused:1", prefixes=("+86138",)),),
        providers=(PAY,),
        config=NoticesConfig(),
        sets=SetIssuer(key=SigningKey.generate("EdDSA"), issuer="gw"),
        auditor=auditor,
        clock=lambda: now,
    )
    request = gateway_pb2.ReportNumberEventRequest(
        event_id="ev-1", msisdn="+8618000000000", type=gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED
    )
    request.effective_at.FromDatetime(now)
    with pytest.raises(Refusal) as foreign:
        await notices.report_number_event(request, Principal(Role.CARRIER, "cm"))
    assert foreign.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert foreign.value.reason == "foreign_number"

    compliance = ComplianceService(
        store=store, providers=(PAY,), auditor=auditor, clock=lambda: now
    )
    admin = Principal(Role.ADMIN, "regulator")
    bad = gateway_pb2.GetComplianceReportRequest()
    bad.since.nanos = -1
    with pytest.raises(Refusal) as invalid:
        await compliance.get_report(bad, admin)
    assert invalid.value.code is grpc.StatusCode.INVALID_ARGUMENT
    report = await compliance.get_report(gateway_pb2.GetComplianceReportRequest(), admin)
    (line,) = report.providers
    assert line.provider_id == "pay"
    assert line.awaiting_action == line.never_acted == 0, "the refused report recorded nothing"
    await auditor.drain()
