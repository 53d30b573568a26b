"""The carrier's and the regulator's clients of the gateway, against a fake gateway:
requests as the contract wants them, answers as plain dataclasses, errors as
GatewayError."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from onecert.sdk._convert import timestamp
from onecert.sdk.client import (
    AdminGatewayClient,
    CarrierGatewayClient,
    ComplianceReport,
    GatewayError,
    NumberEventType,
    ProviderCompliance,
    ReportedEvent,
)
from onecert.v1 import gateway_pb2, gateway_pb2_grpc

NUMBER = "+8613800138000"
WHEN = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)


@dataclass
class FakeGateway(gateway_pb2_grpc.GatewayServicer):
    """Records what it is asked and who asked; answers as told or fails with ``fail``."""

    reports: list[gateway_pb2.ReportNumberEventRequest] = field(default_factory=list)
    compliance: list[gateway_pb2.GetComplianceReportRequest] = field(default_factory=list)
    principals: list[str] = field(default_factory=list)
    fail: grpc.StatusCode | None = None

    async def _check(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        metadata = dict(context.invocation_metadata() or ())
        self.principals.append(str(metadata.get("x-onecert-dev-principal", "")))
        if self.fail is not None:
            await context.abort(self.fail, "refused by the fake")

    async def ReportNumberEvent(  # noqa: N802  # gRPC method name
        self,
        request: gateway_pb2.ReportNumberEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.ReportNumberEventResponse:
        await self._check(context)
        self.reports.append(request)
        return gateway_pb2.ReportNumberEventResponse(
            notice_id="nt_1", created=len(self.reports) == 1, providers=7
        )

    async def GetComplianceReport(  # noqa: N802  # gRPC method name
        self,
        request: gateway_pb2.GetComplianceReportRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.GetComplianceReportResponse:
        await self._check(context)
        self.compliance.append(request)
        response = gateway_pb2.GetComplianceReportResponse(
            providers=[
                gateway_pb2.ProviderCompliance(
                    provider_id="pay",
                    provider_name="Pay",
                    notices_delivered=3,
                    notices_acknowledged=3,
                    acted_on_time=2,
                    acted_late=1,
                    unbinds_done=4,
                    unbinds_rejected=1,
                ),
                gateway_pb2.ProviderCompliance(
                    provider_id="idle", notices_delivered=1, never_acted=1, awaiting_action=2
                ),
            ]
        )
        response.providers[0].unbind_median_time.FromTimedelta(timedelta(milliseconds=850))
        response.generated_at.CopyFrom(timestamp(WHEN))
        return response


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[FakeGateway, str]]:
    server = grpc.aio.server()
    # Only the RPCs under test: the generated base answers UNIMPLEMENTED to the rest.
    fake = FakeGateway()  # type: ignore[abstract]  # the stubs mark every RPC abstract
    gateway_pb2_grpc.add_GatewayServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_report_number_event(gateway: tuple[FakeGateway, str]) -> None:
    """report_number_event sends the event id, number, type and times, names the dev
    carrier, and answers the notice id, whether it is new and how many providers."""
    fake, target = gateway
    async with CarrierGatewayClient(target, insecure=True, dev_carrier_id="cm") as client:
        first = await client.report_number_event(
            event_id="ev-1", msisdn=NUMBER, event_type="recycled", effective_at=WHEN
        )
        again = await client.report_number_event(
            event_id="ev-2",
            msisdn=NUMBER,
            event_type=NumberEventType.CANCELLED,
            effective_at=WHEN,
            quiet_period_ends_at=WHEN + timedelta(days=90),
        )
    assert first == ReportedEvent(notice_id="nt_1", created=True, providers=7)
    assert again.created is False
    recycled, cancelled = fake.reports
    assert (recycled.event_id, recycled.msisdn) == ("ev-1", NUMBER)
    assert recycled.type == gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED
    assert recycled.effective_at.ToDatetime(tzinfo=UTC) == WHEN
    assert not recycled.HasField("quiet_period_ends_at")
    assert cancelled.type == gateway_pb2.NUMBER_EVENT_TYPE_CANCELLED
    assert cancelled.quiet_period_ends_at.ToDatetime(tzinfo=UTC) == WHEN + timedelta(days=90)
    assert fake.principals == ["carrier:cm", "carrier:cm"]


@pytest.mark.parametrize(
    ("client", "call", "principal"),
    [
        pytest.param(
            lambda target: CarrierGatewayClient(target, insecure=True),
            lambda client: client.report_number_event(
                event_id="ev-1", msisdn=NUMBER, event_type="recycled", effective_at=WHEN
            ),
            # Without dev_carrier_id no principal is claimed.
            "",
            id="carrier",
        ),
        pytest.param(
            lambda target: AdminGatewayClient(target, insecure=True),
            lambda client: client.compliance_report(),
            "admin",
            id="admin",
        ),
    ],
)
async def test_refusal_is_a_gateway_error(
    gateway: tuple[FakeGateway, str],
    client: Callable[[str], Any],
    call: Callable[[Any], Awaitable[object]],
    principal: str,
) -> None:
    """A refusal comes back as GatewayError with the gateway's status and message."""
    fake, target = gateway
    fake.fail = grpc.StatusCode.PERMISSION_DENIED
    async with client(target) as role_client:
        with pytest.raises(GatewayError) as err:
            await call(role_client)
    assert err.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details == "refused by the fake"
    assert fake.principals == [principal]


async def test_report_number_event_bad_arguments(gateway: tuple[FakeGateway, str]) -> None:
    """An unknown event type or a naive time is a ValueError before anything is sent."""
    fake, target = gateway
    async with CarrierGatewayClient(target, insecure=True) as client:
        with pytest.raises(ValueError, match="event_type"):
            await client.report_number_event(
                event_id="ev-1", msisdn=NUMBER, event_type="stolen", effective_at=WHEN
            )
        with pytest.raises(ValueError, match="timezone-aware"):
            await client.report_number_event(
                event_id="ev-1",
                msisdn=NUMBER,
                event_type="recycled",
                effective_at=WHEN.replace(tzinfo=None),
            )
    assert fake.reports == []


async def test_compliance_report(gateway: tuple[FakeGateway, str]) -> None:
    """compliance_report hands back every provider's counts as plain values, the median
    as a timedelta (None when absent), and passes ``since`` on; in development it
    claims the admin role."""
    fake, target = gateway
    since = WHEN - timedelta(days=7)
    async with AdminGatewayClient(target, insecure=True) as client:
        report = await client.compliance_report(since=since)
        everything = await client.compliance_report()
    assert report == everything
    assert report == ComplianceReport(
        generated_at=WHEN,
        providers=(
            ProviderCompliance(
                provider_id="pay",
                provider_name="Pay",
                notices_delivered=3,
                notices_acknowledged=3,
                acted_on_time=2,
                acted_late=1,
                never_acted=0,
                awaiting_action=0,
                unbinds_done=4,
                unbinds_rejected=1,
                unbinds_failed=0,
                unbind_median_time=timedelta(milliseconds=850),
            ),
            ProviderCompliance(
                provider_id="idle",
                provider_name="idle",
                notices_delivered=1,
                notices_acknowledged=0,
                acted_on_time=0,
                acted_late=0,
                never_acted=1,
                awaiting_action=2,
                unbinds_done=0,
                unbinds_rejected=0,
                unbinds_failed=0,
                unbind_median_time=None,
            ),
        ),
    )
    assert [p.notices for p in report.providers] == [3, 3]
    with_since, without = fake.compliance
    assert with_since.since.ToDatetime(tzinfo=UTC) == since
    assert not without.HasField("since")
    assert fake.principals == ["admin", "admin"]


def test_transport_choices() -> None:
    """Each client needs exactly one of tls and insecure, and claims a dev carrier only
    on an insecure channel."""
    with pytest.raises(ValueError, match="either tls"):
        CarrierGatewayClient("127.0.0.1:1")
    with pytest.raises(ValueError, match="either tls"):
        AdminGatewayClient("127.0.0.1:1")
    with pytest.raises(ValueError, match="insecure development gateways only"):
        CarrierGatewayClient("127.0.0.1:1", dev_carrier_id="cm")
