"""The regulator's registry RPCs over mutual TLS: invite, list, show, suspend, resume,
remove; precise refusals that change nothing; audit rows for every change."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import select

from onecert.gateway.store._models import audit_log, enrollment_tokens
from onecert.v1 import common_pb2, gateway_pb2
from tests.registry.registry_support import RegistryWorld, code_of

FORUM = common_pb2.PROVIDER_CATEGORY_FORUM
ACTIVE = gateway_pb2.PROVIDER_STATUS_ACTIVE
INVITED = gateway_pb2.PROVIDER_STATUS_INVITED
SUSPENDED = gateway_pb2.PROVIDER_STATUS_SUSPENDED
REMOVED = gateway_pb2.PROVIDER_STATUS_REMOVED


async def test_invite_list_show_suspend_resume_remove(world: RegistryWorld) -> None:
    """Each admin RPC does what it says; the token is returned once and stored as its hash;
    each change is in the provider's history and the audit log."""
    gateway = await world.start("pay")
    admin = world.admin(gateway)
    invitation = await world.invite(gateway, "shop", name="Small Shop")
    assert invitation.enrollment_token.startswith("onecert-enroll-")
    assert invitation.provider.status == INVITED
    assert invitation.provider.origin == gateway_pb2.PROVIDER_ORIGIN_ENROLLED
    async with world.store.engine.connect() as conn:
        hashes = (await conn.execute(select(enrollment_tokens.c.token_hash))).scalars().all()
    assert hashes == [hashlib.sha256(invitation.enrollment_token.encode()).hexdigest()]

    listed = await admin.ListProviders(gateway_pb2.ListProvidersRequest(), timeout=10)
    assert [(p.provider_id, p.status) for p in listed.providers] == [
        ("pay", ACTIVE),
        ("shop", INVITED),
    ]
    only = await admin.ListProviders(gateway_pb2.ListProvidersRequest(status=INVITED), timeout=10)
    assert [p.provider_id for p in only.providers] == ["shop"]

    suspended = await admin.SuspendProvider(
        gateway_pb2.SuspendProviderRequest(provider_id="pay", reason="ignores notices"),
        timeout=10,
    )
    assert suspended.provider.status == SUSPENDED
    assert suspended.provider.status_actor == "admin:regulator"
    resumed = await admin.ResumeProvider(
        gateway_pb2.ResumeProviderRequest(provider_id="pay"), timeout=10
    )
    assert resumed.provider.status == ACTIVE
    removed = await admin.RemoveProvider(
        gateway_pb2.RemoveProviderRequest(provider_id="shop", reason="never joined"), timeout=10
    )
    assert removed.provider.status == REMOVED

    shown = await admin.GetProvider(gateway_pb2.GetProviderRequest(provider_id="pay"), timeout=10)
    assert shown.provider.activated_at.seconds > 0
    assert [c.action for c in shown.history] == ["seed", "suspend", "resume"]
    assert json.loads(shown.history[1].detail)["reason"] == "ignores notices"

    async with world.store.engine.connect() as conn:
        rows = (await conn.execute(select(audit_log.c.kind, audit_log.c.subject))).all()
    changes = [(k, s) for k, s in rows if k.startswith("registry.") and s != "carrier:cm"]
    assert changes == [
        ("registry.seed", "provider:pay"),
        ("registry.invite", "provider:shop"),
        ("registry.suspend", "provider:pay"),
        ("registry.resume", "provider:pay"),
        ("registry.remove", "provider:shop"),
    ]
    assert invitation.enrollment_token not in repr(rows)
    assert (await world.store.audit.verify()).ok
    report = await admin.GetComplianceReport(gateway_pb2.GetComplianceReportRequest(), timeout=10)
    lines = {p.provider_id: p for p in report.providers}
    assert lines["pay"].status == ACTIVE
    assert lines["pay"].onboarded_at.seconds > 0
    assert lines["shop"].status == REMOVED


async def test_bad_requests_are_refused_precisely_and_change_nothing(world: RegistryWorld) -> None:
    """Bad ids, names, categories, ttls and reasons, unknown ids, illegal moves, taken ids
    and callers that are not admins get their own status; the registry does not move."""
    gateway = await world.start("pay")
    admin = world.admin(gateway)
    version = await world.store.registry.version()
    invite = gateway_pb2.InviteProviderRequest
    week_and_a_day = Duration(seconds=8 * 24 * 3600)
    cases: list[tuple[Awaitable[Any], str]] = [
        (admin.InviteProvider(invite(provider_id="Bad Id", category=FORUM)), "INVALID_ARGUMENT"),
        (admin.InviteProvider(invite(provider_id="shop")), "INVALID_ARGUMENT"),
        (
            admin.InviteProvider(invite(provider_id="shop", category=FORUM, name="a\nb")),
            "INVALID_ARGUMENT",
        ),
        (
            admin.InviteProvider(invite(provider_id="shop", category=FORUM, ttl=week_and_a_day)),
            "INVALID_ARGUMENT",
        ),
        (admin.InviteProvider(invite(provider_id="pay", category=FORUM)), "ALREADY_EXISTS"),
        (admin.InviteProvider(invite(provider_id="regulator", category=FORUM)), "ALREADY_EXISTS"),
        (
            admin.SuspendProvider(gateway_pb2.SuspendProviderRequest(provider_id="pay")),
            "INVALID_ARGUMENT",
        ),
        (
            admin.SuspendProvider(
                gateway_pb2.SuspendProviderRequest(provider_id="nobody", reason="x")
            ),
            "NOT_FOUND",
        ),
        (
            admin.ResumeProvider(gateway_pb2.ResumeProviderRequest(provider_id="pay")),
            "FAILED_PRECONDITION",
        ),
        (admin.GetProvider(gateway_pb2.GetProviderRequest(provider_id="nobody")), "NOT_FOUND"),
        (
            admin.ListProviders(gateway_pb2.ListProvidersRequest(status=42)),  # type: ignore[arg-type]  # an unknown enum number on purpose
            "INVALID_ARGUMENT",
        ),
        (
            world.as_provider(gateway, "pay").SuspendProvider(
                gateway_pb2.SuspendProviderRequest(provider_id="pay", reason="x")
            ),
            "PERMISSION_DENIED",
        ),
    ]
    for call, expected in cases:
        code, details = await code_of(call)
        assert code.name == expected, (expected, details)
        assert details
    assert await world.store.registry.version() == version
    pay = await world.store.registry.get("pay")
    assert pay is not None
    assert pay.status.value == "active"


async def test_suspended_provider_is_neither_called_nor_heard(world: RegistryWorld) -> None:
    """A suspended provider is no longer asked in lookups and every provider RPC it makes
    with its certificate is PERMISSION_DENIED; resumed, it is asked and heard again."""
    gateway = await world.start("pay", "chat")
    assert await world.asked(gateway) == {"pay", "chat"}
    admin = world.admin(gateway)
    await admin.SuspendProvider(
        gateway_pb2.SuspendProviderRequest(provider_id="chat", reason="under review"), timeout=10
    )
    chat_calls = world.fed.providers[1][0].record.calls
    assert await world.asked(gateway) == {"pay"}
    assert world.fed.providers[1][0].record.calls == chat_calls
    chat = world.as_provider(gateway, "chat")
    own_calls: dict[str, Awaitable[Any]] = {
        "CheckRecycled": chat.CheckRecycled(
            gateway_pb2.CheckRecycledRequest(msisdn="+8613800138001"), timeout=10
        ),
        "PollEvents": chat.PollEvents(
            gateway_pb2.PollEventsRequest(return_immediately=True), timeout=10
        ),
        "ConfirmEventAction": chat.ConfirmEventAction(
            gateway_pb2.ConfirmEventActionRequest(jti="j", bindings_removed=0), timeout=10
        ),
        "GetRoutingKey": chat.GetRoutingKey(gateway_pb2.GetRoutingKeyRequest(), timeout=10),
        "PublishFilter": chat.PublishFilter(
            gateway_pb2.PublishFilterRequest(opt_out=gateway_pb2.RoutingOptOut()), timeout=10
        ),
    }
    for name, call in own_calls.items():
        code, details = await code_of(call)
        assert code is grpc.StatusCode.PERMISSION_DENIED, name
        assert "suspended" in details, name
    await admin.ResumeProvider(gateway_pb2.ResumeProviderRequest(provider_id="chat"), timeout=10)
    assert await world.asked(gateway) == {"pay", "chat"}
    key = await chat.GetRoutingKey(gateway_pb2.GetRoutingKeyRequest(), timeout=10)
    assert key.key


async def test_removal_drains_a_call_in_flight(world: RegistryWorld) -> None:
    """A provider removed while a lookup's call to it runs: that call ends with its answer,
    and no later lookup asks the provider."""
    gateway = await world.start("pay", "slow")
    slow = world.fed.providers[1][0]
    slow.behaviour.latency = 1.0
    lookup = asyncio.create_task(world.fed.lookup(gateway))
    await slow.record.started.wait()
    await world.admin(gateway).RemoveProvider(
        gateway_pb2.RemoveProviderRequest(provider_id="slow", reason="closing down"), timeout=10
    )
    messages = await lookup
    outcomes = {r.outcome for r in world.fed.results(messages) if r.provider_id == "slow"}
    assert outcomes == {gateway_pb2.CALL_OUTCOME_ANSWERED}
    assert not slow.record.cancelled.is_set()
    calls = slow.record.calls
    assert await world.asked(gateway) == {"pay"}
    assert slow.record.calls == calls
    # Its routing filter is forgotten with it.
    assert gateway.routing is not None
    assert "slow" not in gateway.routing.index
    assert "pay" in gateway.routing.index
    code, details = await code_of(
        world.as_provider(gateway, "slow").GetRoutingKey(
            gateway_pb2.GetRoutingKeyRequest(), timeout=10
        )
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "removed" in details


async def test_enrolled_providers_join_the_lookups_and_poll_only_ones_are_never_dialed(
    world: RegistryWorld,
) -> None:
    """An enrolled provider that passed the gate is asked at once; a poll-only one (no
    address) is never asked, yet may poll for notices with its certificate."""
    gateway = await world.start("pay")
    late = await world.provider("late", configured=False)
    await world.enroll(gateway, "late", world.addresses["late"], delivery="push")
    await world.enroll(gateway, "poller", None, delivery="poll")
    assert gateway.registry is not None
    await gateway.registry.refresh()
    assert await world.asked(gateway) == {"pay", "late"}
    assert late.record.calls == 2
    polled = await world.as_provider(gateway, "poller").PollEvents(
        gateway_pb2.PollEventsRequest(return_immediately=True), timeout=10
    )
    assert list(polled.events) == []
    pending = await world.invite(gateway, "shop", category=common_pb2.PROVIDER_CATEGORY_SOCIAL)
    assert pending.provider.status == INVITED
    assert await world.asked(gateway) == {"pay", "late"}


async def test_a_pending_provider_may_not_call_provider_rpcs(world: RegistryWorld) -> None:
    """A provider that joined but has not passed the gate is refused, saying so."""
    gateway = await world.start("pay")
    invitation = await world.invite(gateway, "late")
    await world.store.registry.redeem_token(
        "late", invitation.enrollment_token, address="127.0.0.1:9", delivery="push"
    )
    assert gateway.registry is not None
    await gateway.registry.refresh()
    code, details = await code_of(
        world.as_provider(gateway, "late").GetRoutingKey(
            gateway_pb2.GetRoutingKeyRequest(), timeout=10
        )
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "pending" in details
    assert await world.asked(gateway) == {"pay"}


async def test_notices_go_to_active_providers_only(world: RegistryWorld) -> None:
    """A notice recorded while a provider is suspended gets no delivery for it."""
    gateway = await world.start("pay", "chat")
    await world.admin(gateway).SuspendProvider(
        gateway_pb2.SuspendProviderRequest(provider_id="chat", reason="review"), timeout=10
    )
    request = gateway_pb2.ReportNumberEventRequest(
        event_id="ev-1", msisdn="+8613800138001", type=gateway_pb2.NUMBER_EVENT_TYPE_RECYCLED
    )
    request.effective_at.GetCurrentTime()
    answer = await world.fed.stub(gateway, client="cm").ReportNumberEvent(request, timeout=10)
    deliveries = await world.store.deliveries.for_notice(answer.notice_id)
    assert {d.provider_id for d in deliveries} == {"pay"}
