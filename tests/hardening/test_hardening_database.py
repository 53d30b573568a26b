"""Every Gateway RPC while the gateway's PostgreSQL cannot be reached: UNAVAILABLE, truthfully,
and nothing written.

The RPCs are read from the service descriptor, so a new RPC fails these tests
until it is given a call here and an answer without its database.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select
from sqlalchemy.engine import make_url

from onecert.gateway import GatewayServer
from onecert.gateway._config import GatewayConfig, StoreConfig
from onecert.gateway.store._models import metadata
from onecert.gateway.store.testing import Database, PrivatePostgres
from onecert.v1 import common_pb2, gateway_pb2
from tests.hardening.hardening_net import ResettingProxy
from tests.hardening.hardening_support import principal, status_of

if TYPE_CHECKING:
    from tests.hardening.hardening_support import Harness
else:
    Harness = Any

# Every RPC of the service, as the contract defines it (not as the policy
# table or the servicer happen to list them).
GATEWAY_RPCS = frozenset(m.name for m in gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods)
# What needs no database, and what it answers then (documented in
# docs/reliability.md): the routing key comes from the gateway's key file.
NEEDS_NO_DATABASE = {"GetRoutingKey": (grpc.StatusCode.OK, "")}
EVENT_ID = "ev-down"

Answers = dict[str, tuple[grpc.StatusCode, str]]


# One request per unary RPC that takes a principal, by the caller it allows: each
# names something that exists, and each would write if the database were there.
_WHEN = Timestamp(seconds=1_700_000_000)
_UNARY_REQUESTS: dict[str, tuple[str, Message]] = {
    "ReportNumberEvent": (
        "carrier:cm",
        gateway_pb2.ReportNumberEventRequest(
            event_id=EVENT_ID,
            msisdn="+8613800138001",
            type=gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED,
            effective_at=_WHEN,
        ),
    ),
    "CheckRecycled": (
        "provider:pay",
        gateway_pb2.CheckRecycledRequest(msisdn="+8613800138001", specified_date=_WHEN),
    ),
    "PollEvents": ("provider:poller", gateway_pb2.PollEventsRequest(return_immediately=True)),
    "ConfirmEventAction": (
        "provider:poller",
        gateway_pb2.ConfirmEventActionRequest(jti="jti-down", bindings_removed=1),
    ),
    "GetComplianceReport": ("admin", gateway_pb2.GetComplianceReportRequest()),
    "GetRoutingKey": ("provider:pay", gateway_pb2.GetRoutingKeyRequest()),
    "PublishFilter": (
        "provider:pay",
        gateway_pb2.PublishFilterRequest(opt_out=gateway_pb2.RoutingOptOut()),
    ),
    # The regulator's registry RPCs, each on a provider that exists.
    "InviteProvider": (
        "admin",
        gateway_pb2.InviteProviderRequest(
            provider_id="newshop", category=common_pb2.PROVIDER_CATEGORY_ECOMMERCE
        ),
    ),
    "ListProviders": ("admin", gateway_pb2.ListProvidersRequest()),
    "GetProvider": ("admin", gateway_pb2.GetProviderRequest(provider_id="pay")),
    "SuspendProvider": (
        "admin",
        gateway_pb2.SuspendProviderRequest(provider_id="pay", reason="down"),
    ),
    "ResumeProvider": ("admin", gateway_pb2.ResumeProviderRequest(provider_id="pay")),
    "RemoveProvider": (
        "admin",
        gateway_pb2.RemoveProviderRequest(provider_id="pay", reason="down"),
    ),
    # A provider's own joining RPCs (status, activation, renewal), as provider "pay".
    "GetEnrollmentStatus": ("provider:pay", gateway_pb2.GetEnrollmentStatusRequest()),
    "RequestActivation": ("provider:pay", gateway_pb2.RequestActivationRequest()),
    "RenewCertificate": (
        "provider:pay",
        gateway_pb2.RenewCertificateRequest(csr_pem="-----BEGIN CERTIFICATE REQUEST-----"),
    ),
}
_ENROLLMENT_RPCS = frozenset({"GetEnrollmentStatus", "RequestActivation", "RenewCertificate"})


def _every_rpc(
    hz: Harness, gateway: GatewayServer, handle: str, ticket_id: str
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of each Gateway RPC by a caller it allows, each of which would write
    if the database were there (``handle`` opens a ticket, the event a notice)."""
    stub = hz.stub(gateway)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "Lookup": lambda: hz.lookup(gateway),
        "Unbind": lambda: hz.unbind(gateway, handle),
        "GetUnbind": lambda: stub.GetUnbind(
            gateway_pb2.GetUnbindRequest(ticket_id=ticket_id),
            metadata=hz.bearer(hz.assertion()),
            timeout=10,
        ),
    }
    for name, (caller, request) in _UNARY_REQUESTS.items():
        calls[name] = functools.partial(
            getattr(stub, name), request, metadata=principal(caller), timeout=10
        )
    assert set(calls) == GATEWAY_RPCS, "a Gateway RPC has no call here"
    return calls


def _config(hz: Harness, url: str, schema: str | None) -> GatewayConfig:
    """A gateway on ``url`` with no background workers (only the calls write) that
    waits 1 s for its database before it counts as unavailable."""
    config = hz.config(
        store=StoreConfig(url=url, schema=schema, auto_migrate=True, timeout_s=1.0),
        poll_providers=("poller",),
    )
    return dataclasses.replace(
        config,
        notices=dataclasses.replace(config.notices, workers=0),
        delivery=dataclasses.replace(config.delivery, workers=0),
    )


async def _answers(hz: Harness, gateway: GatewayServer, handle: str, ticket_id: str) -> Answers:
    """Every Gateway RPC's status and message, and the health check's answer."""
    answers = {
        name: await status_of(call)
        for name, call in _every_rpc(hz, gateway, handle, ticket_id).items()
    }
    health = health_pb2_grpc.HealthStub(hz.channel(gateway))
    response = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    answers["Health/Check"] = (
        grpc.StatusCode.OK,
        health_pb2.HealthCheckResponse.ServingStatus.Name(response.status),
    )
    return answers


def _assert_truthful(answers: Answers) -> None:
    """UNAVAILABLE saying the database is unavailable, but for what needs none."""
    # The process is up and takes calls (each then says why it cannot answer):
    # health is about the process, not about the database all replicas share.
    assert answers.pop("Health/Check") == (grpc.StatusCode.OK, "SERVING")
    for name, answer in NEEDS_NO_DATABASE.items():
        assert answers.pop(name) == answer, name
    # This gateway has no [enrollment]: the provider's joining RPCs say so before any
    # database is asked (tests/enrollment cover them on a gateway that has one).
    for name in _ENROLLMENT_RPCS:
        code, details = answers.pop(name)
        assert code is grpc.StatusCode.UNIMPLEMENTED, (name, code, details)
        assert "[enrollment]" in details, (name, details)
    for name, (code, details) in answers.items():
        assert code is grpc.StatusCode.UNAVAILABLE, (name, code, details)
        assert "database is unavailable" in details, (name, details)
        assert "capacity" not in details, (name, details)
        assert "Traceback" not in details, (name, details)


async def _rows(gateway: GatewayServer) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the gateway's store."""
    assert gateway.store is not None
    if gateway.auditor is not None:
        await gateway.auditor.drain()
    async with gateway.store.engine.connect() as conn:
        return {
            table.name: sorted(
                (tuple(r) for r in (await conn.execute(select(table))).all()), key=repr
            )
            for table in metadata.sorted_tables
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
        gateway = await hz.gateway(_config(hz, url, database.schema))
        handle = await hz.handle_of(gateway, "pay")
        ticket = await hz.unbind(gateway, handle)
        await proxy.close()  # every connection reset, and nothing listens any more
        answers = await _answers(hz, gateway, handle, ticket.ticket_id)
        await gateway.stop(0)
    _assert_truthful(answers)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["stopped", "frozen"])
async def test_every_rpc_while_the_database_server_is_down_writes_nothing(
    hz: Harness, private_pg: PrivatePostgres, fault: str
) -> None:
    """With its PostgreSQL server shut down under it (its connections closed by the server)
    or frozen (connections open, nothing answers, as behind a network that drops every
    packet), each Gateway RPC answers UNAVAILABLE saying so within the caller's deadline, or
    what needs no database; once the server is back, without a restart of the gateway, not
    one row changed, and the calls that were refused then write afresh: the unbind opens
    its ticket, the event its notice."""
    await hz.carrier()
    await hz.provider("pay")
    await hz.provider("chat")
    await hz.provider("poller")
    async with Database.postgres(private_pg.url) as database:
        gateway = await hz.gateway(_config(hz, database.url, database.schema))
        ticket = await hz.unbind(gateway, await hz.handle_of(gateway, "pay"))
        handle = await hz.handle_of(gateway, "chat")  # not unbound yet
        before = await _rows(gateway)
        down, up = {
            "stopped": (private_pg.stop, private_pg.start),
            "frozen": (private_pg.freeze, private_pg.thaw),
        }[fault]
        down()
        try:
            answers = await _answers(hz, gateway, handle, ticket.ticket_id)
        finally:
            up()
        after = await _rows(gateway)
        unbound = await hz.unbind(gateway, handle)
        reported = await hz.stub(gateway).ReportNumberEvent(
            gateway_pb2.ReportNumberEventRequest(
                event_id=EVENT_ID,
                msisdn="+8613800138001",
                type=gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED,
                effective_at=Timestamp(seconds=1_700_000_000),
            ),
            metadata=principal("carrier:cm"),
            timeout=10,
        )
        assert gateway.store is not None
        verified = await gateway.store.audit.verify()
        await gateway.stop(0)
    _assert_truthful(answers)
    assert after == before
    assert unbound.created
    assert reported.created
    assert verified.ok, verified
