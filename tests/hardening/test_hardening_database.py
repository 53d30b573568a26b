"""Every Gateway RPC while the gateway's PostgreSQL cannot be reached: UNAVAILABLE, truthfully."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import make_url

from onecert.gateway._config import StoreConfig
from onecert.gateway._policy import POLICY
from onecert.gateway._principals import DEV_PRINCIPAL_HEADER
from onecert.gateway.store.testing import Database
from onecert.v1 import common_pb2, gateway_pb2
from tests.hardening.hardening_net import ResettingProxy

if TYPE_CHECKING:
    from tests.hardening.hardening_support import Harness
else:
    Harness = Any

_GATEWAY_SERVICE = "/onecert.v1.Gateway/"


def _principal(who: str) -> tuple[tuple[str, str], ...]:
    return ((DEV_PRINCIPAL_HEADER, who),)


async def _status(invoke: Callable[[], Awaitable[Any]]) -> tuple[grpc.StatusCode, str]:
    try:
        await invoke()
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _registry_calls(stub: Any) -> dict[str, Callable[[], Awaitable[Any]]]:
    """The regulator's registry RPCs, each on a provider that exists."""
    admin = _principal("admin")
    return {
        "InviteProvider": lambda: stub.InviteProvider(
            gateway_pb2.InviteProviderRequest(
                provider_id="newshop", category=common_pb2.PROVIDER_CATEGORY_ECOMMERCE
            ),
            metadata=admin,
            timeout=10,
        ),
        "ListProviders": lambda: stub.ListProviders(
            gateway_pb2.ListProvidersRequest(), metadata=admin, timeout=10
        ),
        "GetProvider": lambda: stub.GetProvider(
            gateway_pb2.GetProviderRequest(provider_id="pay"), metadata=admin, timeout=10
        ),
        "SuspendProvider": lambda: stub.SuspendProvider(
            gateway_pb2.SuspendProviderRequest(provider_id="pay", reason="down"),
            metadata=admin,
            timeout=10,
        ),
        "ResumeProvider": lambda: stub.ResumeProvider(
            gateway_pb2.ResumeProviderRequest(provider_id="pay"), metadata=admin, timeout=10
        ),
        "RemoveProvider": lambda: stub.RemoveProvider(
            gateway_pb2.RemoveProviderRequest(provider_id="pay", reason="down"),
            metadata=admin,
            timeout=10,
        ),
    }


def _enrollment_calls(stub: Any) -> dict[str, Callable[[], Awaitable[Any]]]:
    """A provider's own joining RPCs (status, activation, renewal), as provider "pay"."""
    pay = _principal("provider:pay")
    return {
        "GetEnrollmentStatus": lambda: stub.GetEnrollmentStatus(
            gateway_pb2.GetEnrollmentStatusRequest(), metadata=pay, timeout=10
        ),
        "RequestActivation": lambda: stub.RequestActivation(
            gateway_pb2.RequestActivationRequest(), metadata=pay, timeout=10
        ),
        "RenewCertificate": lambda: stub.RenewCertificate(
            gateway_pb2.RenewCertificateRequest(csr_pem="-----BEGIN CERTIFICATE REQUEST-----"),
            metadata=pay,
            timeout=10,
        ),
    }


async def test_every_rpc_answers_unavailable_when_the_database_is_gone(
    hz: Harness, pg_url: str
) -> None:
    """With its PostgreSQL cut off (every connection reset, the port closed), each Gateway
    RPC that needs the database answers UNAVAILABLE saying the database is unavailable:
    never RESOURCE_EXHAUSTED "at capacity", never INTERNAL or UNKNOWN, no traceback; the
    one that needs none (GetRoutingKey) still answers."""
    await hz.carrier()
    await hz.provider("pay")
    await hz.provider("poller")
    async with Database.postgres(pg_url) as database:
        upstream = make_url(database.url)
        proxy = ResettingProxy(f"{upstream.host}:{upstream.port or 5432}")
        address = await proxy.start()
        host, _, port = address.rpartition(":")
        url = upstream.set(host=host, port=int(port)).render_as_string(hide_password=False)
        config = hz.config(
            store=StoreConfig(url=url, schema=database.schema, auto_migrate=True),
            poll_providers=("poller",),
        )
        config = dataclasses.replace(
            config,
            notices=dataclasses.replace(config.notices, workers=0),
            delivery=dataclasses.replace(config.delivery, workers=0),
        )
        gateway = await hz.gateway(config)
        handle = await hz.handle_of(gateway, "pay")
        ticket = await hz.unbind(gateway, handle)
        await proxy.close()  # every connection reset, and nothing listens any more

        stub = hz.stub(gateway)
        when = Timestamp(seconds=1_700_000_000)
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "Lookup": lambda: hz.lookup(gateway),
            "Unbind": lambda: hz.unbind(gateway, handle),
            "GetUnbind": lambda: stub.GetUnbind(
                gateway_pb2.GetUnbindRequest(ticket_id=ticket.ticket_id),
                metadata=hz.bearer(hz.assertion()),
                timeout=10,
            ),
            "ReportNumberEvent": lambda: stub.ReportNumberEvent(
                gateway_pb2.ReportNumberEventRequest(
                    event_id="ev-down",
                    msisdn="+8613800138001",
                    type=gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED,
                    effective_at=when,
                ),
                metadata=_principal("carrier:cm"),
                timeout=10,
            ),
            "CheckRecycled": lambda: stub.CheckRecycled(
                gateway_pb2.CheckRecycledRequest(msisdn="+8613800138001", specified_date=when),
                metadata=_principal("provider:pay"),
                timeout=10,
            ),
            "PollEvents": lambda: stub.PollEvents(
                gateway_pb2.PollEventsRequest(return_immediately=True),
                metadata=_principal("provider:poller"),
                timeout=10,
            ),
            "ConfirmEventAction": lambda: stub.ConfirmEventAction(
                gateway_pb2.ConfirmEventActionRequest(jti="jti-down", bindings_removed=1),
                metadata=_principal("provider:poller"),
                timeout=10,
            ),
            "GetComplianceReport": lambda: stub.GetComplianceReport(
                gateway_pb2.GetComplianceReportRequest(),
                metadata=_principal("admin"),
                timeout=10,
            ),
            "GetRoutingKey": lambda: stub.GetRoutingKey(
                gateway_pb2.GetRoutingKeyRequest(),
                metadata=_principal("provider:pay"),
                timeout=10,
            ),
            "PublishFilter": lambda: stub.PublishFilter(
                gateway_pb2.PublishFilterRequest(opt_out=gateway_pb2.RoutingOptOut()),
                metadata=_principal("provider:pay"),
                timeout=10,
            ),
            **_registry_calls(stub),
            **_enrollment_calls(stub),
        }
        # A new RPC must be added here too: what it answers without its database.
        gateway_rpcs = {n.rpartition("/")[2] for n in POLICY if n.startswith(_GATEWAY_SERVICE)}
        assert set(calls) == gateway_rpcs
        answers = {name: await _status(call) for name, call in calls.items()}
        await gateway.stop(0)
    # The routing key comes from the gateway's key file: it needs no database.
    assert answers.pop("GetRoutingKey") == (grpc.StatusCode.OK, "")
    # This gateway has no [enrollment]: the provider's joining RPCs say so before any
    # database is asked (tests/enrollment cover them on a gateway that has one).
    for name in _enrollment_calls(stub):
        code, details = answers.pop(name)
        assert code is grpc.StatusCode.UNIMPLEMENTED, (name, code, details)
        assert "[enrollment]" in details, (name, details)
    for name, (code, details) in answers.items():
        assert code is grpc.StatusCode.UNAVAILABLE, (name, code, details)
        assert "database is unavailable" in details, (name, details)
        assert "capacity" not in details, (name, details)
        assert "Traceback" not in details, (name, details)
