"""Gateway.Unbind and GetUnbind against real SDK providers, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import dataclasses
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from onecert.gateway._attribution import Attribution
from onecert.gateway._handles import HandleClaims, HandleSealer
from onecert.gateway.store import Ticket
from onecert.sdk import Binding, BindingKind
from onecert.sdk._keys import SigningKey
from onecert.v1 import common_pb2, gateway_pb2
from tests.unbind.unbind_support import Accounts, UnbindWorld


def _done_once_after(attempts: int, ticket: Ticket, accounts: Accounts) -> None:
    """The ticket ended DONE after ``attempts`` calls, each carrying the ticket id as its
    request id, and the provider applied the unbind once."""
    assert ticket.state.value == "DONE"
    assert ticket.attempts == attempts
    assert [c.request_id for c in accounts.calls] == [ticket.ticket_id] * attempts
    assert accounts.applied == {ticket.ticket_id: 1}


async def test_unbind_is_delivered_once_and_the_receipt_tells_it(env: UnbindWorld) -> None:
    """An unbind is committed at once, reaches the provider once with a warrant for the
    ticket, is applied once, and the receipt shows the provider's answer and its time."""
    accounts = await env.provider("pay")
    gateway = await env.gateway()
    handle = await env.left_behind_handle(gateway)
    before = time.time()

    answer = await env.unbind(gateway, handle)

    assert answer.created
    assert answer.ticket_id.startswith("ut_")
    assert answer.state in (gateway_pb2.TICKET_STATE_QUEUED, gateway_pb2.TICKET_STATE_DONE)
    ticket = await env.wait_final(answer.ticket_id)
    assert ticket.state.value == "DONE"
    assert [c.request_id for c in accounts.calls] == [answer.ticket_id]
    assert accounts.applied == {answer.ticket_id: 1}
    assert accounts.detached == {"pay-left-1"}
    (call,) = accounts.calls
    assert call.msisdn == env.FORMER
    assert call.reason.value == "owner_request"
    (info,) = accounts.infos
    assert info.purpose == "unbind"
    assert info.query_id == answer.ticket_id

    receipt = await env.receipt(gateway, answer.ticket_id)
    assert receipt.ticket_id == answer.ticket_id
    assert receipt.provider_id == "pay"
    assert receipt.provider_name == "Pay Inc"
    assert receipt.reason == common_pb2.UNBIND_REASON_OWNER_REQUEST
    assert receipt.state == gateway_pb2.TICKET_STATE_DONE
    assert receipt.attempts == 1
    assert receipt.provider_outcome == common_pb2.UNBIND_OUTCOME_DONE
    assert receipt.last_error == ""
    assert not receipt.HasField("next_attempt_at")
    created = receipt.created_at.ToDatetime().timestamp()
    answered = receipt.answered_at.ToDatetime().timestamp()
    assert before - 1 <= created <= answered <= time.time() + 1
    ttl = receipt.expires_at.ToDatetime() - receipt.created_at.ToDatetime()
    assert ttl == timedelta(seconds=env.FAST.ticket_ttl_s)


async def test_the_same_binding_from_two_lookups_is_one_ticket(env: UnbindWorld) -> None:
    """Two lookups give two different handles for the same account; unbinding both
    gives one ticket (created only the first time), delivered once."""
    accounts = await env.provider("pay")
    gateway = await env.gateway(workers=0)  # nothing delivered while the test looks
    first = await env.left_behind_handle(gateway)
    second = await env.left_behind_handle(gateway)
    assert first != second

    one = await env.unbind(gateway, first)
    two = await env.unbind(gateway, second)
    again = await env.unbind(gateway, first)

    assert one.created
    assert not two.created
    assert not again.created
    assert one.ticket_id == two.ticket_id == again.ticket_id
    assert await env.ticket_count() == 1
    assert accounts.calls == []

    delivering = await env.gateway()
    await env.wait_final(one.ticket_id)
    assert accounts.applied == {one.ticket_id: 1}
    assert (await env.receipt(delivering, one.ticket_id)).attempts == 1


async def test_release_of_a_previous_holders_account_has_the_release_reason(
    env: UnbindWorld,
) -> None:
    """A release handle (previous holder's account) makes a ticket with reason
    PREVIOUS_HOLDER_RELEASE, and the citizen's own account one with OWNER_REQUEST."""
    accounts = await env.provider("pay")
    gateway = await env.gateway()
    current = env.result(await env.lookup(gateway), "pay", env.CURRENT)
    (release,) = current.release_handles
    (mine,) = current.bindings

    released = await env.unbind(gateway, release)
    owned = await env.unbind(gateway, mine.handle)

    assert released.ticket_id != owned.ticket_id
    await env.wait_final(released.ticket_id)
    await env.wait_final(owned.ticket_id)
    reasons = {c.account_ref: c.reason.value for c in accounts.calls}
    assert reasons == {"pay-prev-1": "previous_holder_release", "pay-mine-1": "owner_request"}
    receipt = await env.receipt(gateway, released.ticket_id)
    assert receipt.reason == common_pb2.UNBIND_REASON_PREVIOUS_HOLDER_RELEASE


async def test_a_provider_down_for_a_while_gets_the_unbind_when_it_returns(
    env: UnbindWorld,
) -> None:
    """While the provider does not listen, attempts fail UNAVAILABLE and are retried
    with backoff; once it listens again on its port it gets the unbind, applied once."""
    accounts = await env.provider("pay")
    gateway = await env.gateway()
    handle = await env.left_behind_handle(gateway)
    await env.stop_provider("pay")

    answer = await env.unbind(gateway, handle)
    ticket = await env.wait_ticket(answer.ticket_id, lambda t: t.attempts >= 3)
    assert ticket.state.value == "QUEUED"
    receipt = await env.receipt(gateway, answer.ticket_id)
    assert receipt.state == gateway_pb2.TICKET_STATE_QUEUED
    assert receipt.last_error.startswith("UNAVAILABLE")
    assert receipt.HasField("next_attempt_at")

    await env.start_provider("pay")
    ticket = await env.wait_final(answer.ticket_id)

    assert ticket.state.value == "DONE"
    assert accounts.applied == {answer.ticket_id: 1}
    assert len(accounts.calls) == 1


async def test_each_attempt_reaches_the_provider_exactly_once(env: UnbindWorld) -> None:
    """A provider that answers UNAVAILABLE twice sees three calls for three attempts,
    and applies the unbind once."""
    accounts = await env.provider("pay", unavailable_first=2)
    gateway = await env.gateway()
    answer = await env.unbind(gateway, await env.left_behind_handle(gateway))

    ticket = await env.wait_final(answer.ticket_id)

    _done_once_after(3, ticket, accounts)


async def test_pending_then_done(env: UnbindWorld) -> None:
    """A PENDING answer keeps the ticket open and asks again with the same request id;
    the later DONE closes it."""
    accounts = await env.provider("pay", pending_first=1)
    gateway = await env.gateway(pending_recheck_s=0.2)
    answer = await env.unbind(gateway, await env.left_behind_handle(gateway))
    ticket = await env.wait_ticket(answer.ticket_id, lambda t: t.state.value != "QUEUED")
    if ticket.state.value == "PENDING":
        receipt = await env.receipt(gateway, answer.ticket_id)
        assert receipt.state == gateway_pb2.TICKET_STATE_PENDING
        assert receipt.provider_outcome == common_pb2.UNBIND_OUTCOME_PENDING
        assert receipt.provider_reason == "manual review"

    ticket = await env.wait_final(answer.ticket_id)

    _done_once_after(2, ticket, accounts)


async def test_rejected_is_final_with_the_providers_reason(env: UnbindWorld) -> None:
    """A REJECTED answer ends the ticket with the provider's reason in the receipt."""
    await env.provider("pay", reject="account closed in 2019")
    gateway = await env.gateway()
    answer = await env.unbind(gateway, await env.left_behind_handle(gateway))

    await env.wait_final(answer.ticket_id)
    receipt = await env.receipt(gateway, answer.ticket_id)

    assert receipt.state == gateway_pb2.TICKET_STATE_REJECTED
    assert receipt.provider_outcome == common_pb2.UNBIND_OUTCOME_REJECTED
    assert receipt.provider_reason == "account closed in 2019"
    assert receipt.attempts == 1
    assert receipt.HasField("answered_at")


async def test_a_non_retryable_refusal_is_a_dead_letter(env: UnbindWorld) -> None:
    """A provider that refuses the warrant (UNAUTHENTICATED: it trusts another gateway
    key) is not retried: the ticket is FAILED at once with the provider's reason."""
    accounts = await env.provider("pay")
    gateway = await env.gateway()
    handle = await env.left_behind_handle(gateway)
    await env.stop_provider("pay")
    env.providers["pay"].trust = SigningKey.generate("EdDSA")
    await env.start_provider("pay")

    answer = await env.unbind(gateway, handle)
    await env.wait_final(answer.ticket_id)
    receipt = await env.receipt(gateway, answer.ticket_id)

    assert receipt.state == gateway_pb2.TICKET_STATE_FAILED
    assert receipt.attempts == 1
    assert receipt.last_error.startswith("UNAUTHENTICATED")
    assert receipt.provider_outcome == common_pb2.UNBIND_OUTCOME_UNSPECIFIED
    assert accounts.calls == []


async def test_a_ticket_not_delivered_before_it_expires_fails_with_the_last_error(
    env: UnbindWorld,
) -> None:
    """A provider down past the ticket's lifetime: the ticket ends FAILED, saying it
    expired and what the last attempt met; the final state is audited."""
    await env.provider("pay", start=False)
    gateway = await env.gateway(ticket_ttl_s=0.6)
    await env.start_provider("pay")
    handle = await env.left_behind_handle(gateway)
    await env.stop_provider("pay")

    answer = await env.unbind(gateway, handle)
    ticket = await env.wait_final(answer.ticket_id)

    assert ticket.state.value == "FAILED"
    assert ticket.attempts >= 1
    receipt = await env.receipt(gateway, answer.ticket_id)
    assert receipt.state == gateway_pb2.TICKET_STATE_FAILED
    assert "expired" in receipt.last_error
    assert "UNAVAILABLE" in receipt.last_error
    (closed,) = await env.wait_audit("unbind.closed")
    assert closed["subject"] == answer.ticket_id
    assert '"state":"FAILED"' in closed["detail"]


def _flip(handle: str) -> str:
    # A different base64url character in the middle: the ciphertext changes.
    middle = len(handle) // 2
    replacement = "A" if handle[middle] != "A" else "B"
    return handle[:middle] + replacement + handle[middle + 1 :]


async def test_bad_handles_are_refused_and_write_nothing(env: UnbindWorld) -> None:
    """Malformed, expired, forged, altered and another citizen's handles are refused
    with INVALID_ARGUMENT or PERMISSION_DENIED, and no ticket is written."""
    await env.provider("pay")
    gateway = await env.gateway()
    handle = await env.left_behind_handle(gateway)
    sealer = HandleSealer(env.handle_key)
    claims = HandleClaims(
        sub=env.CITIZEN_SUB,
        provider_id="pay",
        msisdn=env.FORMER,
        account_ref="pay-left-1",
        attribution=Attribution.LEFT_BEHIND,
        expires_at=time.time() - 5,
        query_id="q",
    )
    expired = sealer.seal(claims)
    forged = HandleSealer(bytes(32)).seal(
        HandleClaims(**{**claims.__dict__, "expires_at": time.time() + 600})
    )
    cases = {
        "malformed": ("not a handle!", grpc.StatusCode.INVALID_ARGUMENT),
        "truncated": (
            base64.urlsafe_b64encode(b"\x01abc").decode().rstrip("="),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "empty": ("", grpc.StatusCode.INVALID_ARGUMENT),
        "expired": (expired, grpc.StatusCode.INVALID_ARGUMENT),
        "forged": (forged, grpc.StatusCode.PERMISSION_DENIED),
        "altered": (_flip(handle), grpc.StatusCode.PERMISSION_DENIED),
    }
    for name, (value, code) in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await env.unbind(gateway, value)
        assert refused.value.code() is code, name
        assert env.FORMER not in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await env.unbind(gateway, handle, sub=env.OTHER_SUB)
    assert other.value.code() is grpc.StatusCode.PERMISSION_DENIED

    assert await env.ticket_count() == 0


async def test_a_handle_for_a_provider_no_longer_configured_fails_precondition(
    env: UnbindWorld,
) -> None:
    """A handle naming a provider that left the configuration is refused with
    FAILED_PRECONDITION, and no ticket is written."""
    await env.provider("pay")
    gateway = await env.gateway()
    handle = HandleSealer(env.handle_key).seal(
        HandleClaims(
            sub=env.CITIZEN_SUB,
            provider_id="gone",
            msisdn=env.FORMER,
            account_ref="acct-1",
            attribution=Attribution.LEFT_BEHIND,
            expires_at=time.time() + 600,
            query_id="q",
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await env.unbind(gateway, handle)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert await env.ticket_count() == 0


async def test_unbind_needs_a_valid_fresh_assertion(env: UnbindWorld) -> None:
    """Without an assertion, or with one already used, Unbind is UNAUTHENTICATED."""
    await env.provider("pay")
    gateway = await env.gateway(workers=0)
    handle = await env.left_behind_handle(gateway)
    stub = env.stub(gateway)
    request = gateway_pb2.GatewayUnbindRequest(handle=handle)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.Unbind(request, timeout=5)
    assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
    metadata = env.metadata()
    await stub.Unbind(request, metadata=metadata, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as replayed:
        await stub.Unbind(request, metadata=metadata, timeout=5)
    assert replayed.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_malformed_handle_does_not_spend_the_assertion(env: UnbindWorld) -> None:
    """A handle refused for its form (INVALID_ARGUMENT) leaves the citizen's assertion
    unspent: the same assertion then unbinds with the genuine handle."""
    await env.provider("pay")
    gateway = await env.gateway(workers=0)
    handle = await env.left_behind_handle(gateway)
    stub = env.stub(gateway)
    metadata = env.metadata()
    for malformed in ("not a handle!", handle[:40], "B" + handle[1:], "A" * 3000):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Unbind(
                gateway_pb2.GatewayUnbindRequest(handle=malformed), metadata=metadata, timeout=5
            )
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, malformed
    answer = await stub.Unbind(
        gateway_pb2.GatewayUnbindRequest(handle=handle), metadata=metadata, timeout=5
    )
    assert answer.created
    assert await env.ticket_count() == 1


async def test_assertions_are_remembered_in_the_store_across_gateways(env: UnbindWorld) -> None:
    """Two gateways on one database share the replay cache: an assertion used at one
    is refused at the other."""
    await env.provider("pay")
    first = await env.gateway(workers=0)
    second = await env.gateway(workers=0)
    metadata = env.metadata()
    request = gateway_pb2.GetUnbindRequest(ticket_id="ut_" + "x" * 24)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await env.stub(first).GetUnbind(request, metadata=metadata, timeout=5)
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as replayed:
        await env.stub(second).GetUnbind(request, metadata=metadata, timeout=5)
    assert replayed.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_get_unbind_shows_a_ticket_only_to_its_owner(env: UnbindWorld) -> None:
    """Another citizen asking for a ticket gets NOT_FOUND, exactly as for an unknown
    id; a malformed id is INVALID_ARGUMENT."""
    await env.provider("pay")
    gateway = await env.gateway(workers=0)
    answer = await env.unbind(gateway, await env.left_behind_handle(gateway))

    with pytest.raises(grpc.aio.AioRpcError) as other:
        await env.receipt(gateway, answer.ticket_id, sub=env.OTHER_SUB)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await env.receipt(gateway, "ut_" + "z" * 24)
    assert other.value.code() is unknown.value.code() is grpc.StatusCode.NOT_FOUND
    assert other.value.details() == unknown.value.details()
    for malformed in ("", "nope", "ut_", "ut_" + "!" * 24, "ut_" + "a" * 200):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await env.receipt(gateway, malformed)
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT, malformed
    assert (await env.receipt(gateway, answer.ticket_id)).state == gateway_pb2.TICKET_STATE_QUEUED


async def test_two_gateways_share_delivery_without_duplicates(env: UnbindWorld) -> None:
    """Tickets committed at one gateway are delivered by the workers of two gateways
    on the same database, each ticket exactly once."""
    bindings = {}
    bindings[env.FORMER] = [
        Binding(
            account_ref=f"acct-{i}",
            kind=BindingKind.LOGIN,
            bound_at=datetime(2013, 1, 1 + i, tzinfo=UTC),
        )
        for i in range(8)
    ]
    accounts = await env.provider("pay", bindings, latency=0.05)
    front = await env.gateway(workers=0)
    result = env.result(await env.lookup(front), "pay", env.FORMER)
    tickets = [(await env.unbind(front, b.handle)).ticket_id for b in result.bindings]
    assert len(set(tickets)) == 8

    await env.gateway(workers=2, batch=2)
    await env.gateway(workers=2, batch=2)
    for ticket_id in tickets:
        assert (await env.wait_final(ticket_id)).state.value == "DONE"

    assert sorted(c.request_id for c in accounts.calls) == sorted(tickets)
    assert set(accounts.applied.values()) == {1}


async def test_lookups_and_unbinds_are_audited_with_hashed_identifiers(env: UnbindWorld) -> None:
    """Each lookup, unbind request, refusal and final state is an audit row; no row
    holds a raw number, account reference or citizen id, and the chain verifies."""
    await env.provider("pay")
    gateway = await env.gateway()
    handle = await env.left_behind_handle(gateway)
    second = await env.left_behind_handle(gateway)
    answer = await env.unbind(gateway, handle)
    await env.wait_final(answer.ticket_id)
    with pytest.raises(grpc.aio.AioRpcError):
        await env.unbind(gateway, "")  # refused before the assertion: no citizen to audit
    with pytest.raises(grpc.aio.AioRpcError):
        await env.unbind(gateway, _flip(second))
    await gateway.stop(1)  # drains background audit rows

    rows = await env.audit_rows()
    kinds = [r["kind"] for r in rows]
    assert kinds.count("lookup") == 2
    assert kinds.count("unbind.requested") == 1
    assert kinds.count("unbind.refused") == 1
    assert kinds.count("unbind.closed") == 1
    lookup = next(r for r in rows if r["kind"] == "lookup")
    assert lookup["actor"].startswith("citizen:")
    assert '"numbers":2' in lookup["detail"]
    assert '"outcome":"ok"' in lookup["detail"]
    text = repr(rows)
    for secret in (
        env.CITIZEN_SUB,
        env.FORMER,
        env.FORMER.lstrip("+"),
        env.CURRENT.lstrip("+"),
        "pay-left-1",
        env.IDN,
    ):
        assert secret not in text
    requested = next(r for r in rows if r["kind"] == "unbind.requested")
    closed = next(r for r in rows if r["kind"] == "unbind.closed")
    assert requested["subject"] == closed["subject"] == answer.ticket_id
    assert requested["actor"] == lookup["actor"]
    store = await env.store()
    assert (await store.audit.verify()).ok


async def test_the_gateway_without_a_store_does_not_serve_unbind(env: UnbindWorld) -> None:
    """A gateway configured without [store] answers Unbind and GetUnbind UNIMPLEMENTED."""
    await env.provider("pay")
    gateway = await env.gateway(dataclasses.replace(env.config(), store=None))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await env.unbind(gateway, "x")
    assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED
