"""A provider served by the SDK, called over real gRPC as the gateway calls it."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from onecert.sdk import Binding, BindingKind, Unavailable
from onecert.sdk._keys import SigningKey
from onecert.sdk.testing import FakeGateway, InProcessServer
from onecert.v1 import common_pb2, provider_pb2
from tests.sdk.sdk_fakes import (
    BOUND_AT,
    NUMBER,
    OTHER_NUMBER,
    PROVIDER_ID,
    FakeForum,
    unbind_pb,
)


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _list(
    running: InProcessServer,
    msisdn: str = NUMBER,
    *,
    timeout: float = 5,  # noqa: ASYNC109 - the gRPC deadline, as the stub names it
) -> provider_pb2.ListBindingsResponse:
    """ListBindings for ``msisdn`` with the gateway's warrant for it."""
    response: provider_pb2.ListBindingsResponse = await running.provider_stub().ListBindings(
        provider_pb2.ListBindingsRequest(msisdn=msisdn),
        metadata=running.metadata(msisdn),
        timeout=timeout,
    )
    return response


async def test_describe_answers_without_a_warrant(running: InProcessServer) -> None:
    """Describe needs no warrant and names the provider, its category and the contract."""
    response = await running.provider_stub().Describe(provider_pb2.DescribeRequest(), timeout=5)
    assert response.provider_id == PROVIDER_ID
    assert response.name == "Example Forum"
    assert response.category == common_pb2.PROVIDER_CATEGORY_FORUM
    assert response.contract_version == "onecert.v1"
    assert response.implementation.startswith("onecert-sdk")


async def test_list_bindings_converts_the_adapters_answer(
    running: InProcessServer, forum: FakeForum
) -> None:
    """A known number lists its bindings, with bound_at; the query id reaches the adapter."""
    token = running.gateway.warrant(NUMBER, query_id="q-42")
    response = await running.provider_stub().ListBindings(
        provider_pb2.ListBindingsRequest(msisdn=NUMBER), metadata=_auth(token), timeout=5
    )
    assert sorted(b.account_ref for b in response.bindings) == ["u1", "u2"]
    first = response.bindings[0]
    assert first.kind == common_pb2.BINDING_KIND_LOGIN
    assert first.bound_at.ToSeconds() == int(BOUND_AT.timestamp())
    assert not first.HasField("last_used_at")
    assert first.unbindable
    (info,) = forum.infos
    assert info.query_id == "q-42"
    assert info.purpose == "lookup"
    assert info.audience == PROVIDER_ID


async def test_unknown_number_is_an_empty_list(running: InProcessServer) -> None:
    """A number the provider does not know is an empty answer, not an error."""
    response = await _list(running, OTHER_NUMBER)
    assert list(response.bindings) == []


def _bad_warrants(gateway: FakeGateway) -> dict[str, tuple[tuple[str, str], ...]]:
    stranger = FakeGateway(audience=PROVIDER_ID, key=SigningKey.generate("EdDSA"))
    return {
        "missing": (),
        "not a bearer token": (("authorization", "Basic dXNlcjpwYXNz"),),
        "garbage": _auth("not-a-jwt"),
        "expired": _auth(gateway.warrant(NUMBER, now=time.time() - 120, lifetime=30)),
        "wrong key": _auth(stranger.warrant(NUMBER)),
        "wrong audience": _auth(gateway.warrant(NUMBER, audience="another-provider")),
        "wrong number": _auth(gateway.warrant(OTHER_NUMBER)),
        "wrong issuer": _auth(
            FakeGateway(audience=PROVIDER_ID, issuer="someone-else", key=gateway.key).warrant(
                NUMBER
            )
        ),
    }


@pytest.mark.parametrize(
    "fault",
    [
        "missing",
        "not a bearer token",
        "garbage",
        "expired",
        "wrong key",
        "wrong audience",
        "wrong number",
        "wrong issuer",
    ],
)
async def test_bad_warrant_is_unauthenticated_and_never_reaches_the_adapter(
    running: InProcessServer, forum: FakeForum, fault: str
) -> None:
    """Every kind of bad warrant is UNAUTHENTICATED on both RPCs; the adapter is not called."""
    metadata = _bad_warrants(running.gateway)[fault]
    stub = running.provider_stub()
    with pytest.raises(grpc.aio.AioRpcError) as listed:
        await stub.ListBindings(
            provider_pb2.ListBindingsRequest(msisdn=NUMBER), metadata=metadata, timeout=5
        )
    assert listed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert NUMBER not in (listed.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as unbound:
        await stub.Unbind(
            unbind_pb("r1"),
            metadata=metadata,
            timeout=5,
        )
    assert unbound.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert forum.calls == []


async def test_lookup_warrant_cannot_unbind(running: InProcessServer, forum: FakeForum) -> None:
    """A warrant issued for a lookup is refused for an unbind of the same number."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.provider_stub().Unbind(
            unbind_pb("r1"),
            metadata=running.metadata(NUMBER, purpose="lookup"),
            timeout=5,
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert forum.calls == []


@pytest.mark.parametrize("msisdn", ["", "8613800138000", "+86 138 0013 8000", "+0123456789", "+1"])
async def test_malformed_msisdn_is_invalid_argument_without_echoing_it(
    running: InProcessServer, forum: FakeForum, msisdn: str
) -> None:
    """A number that is not E.164 is INVALID_ARGUMENT, and the message does not repeat it."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _list(running, msisdn)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    if msisdn:
        assert msisdn not in (err.value.details() or "")
    assert forum.calls == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", ""),
        ("request_id", "x" * 129),
        ("msisdn", "13800138000"),
        ("account_ref", ""),
        ("reason", common_pb2.UNBIND_REASON_UNSPECIFIED),
        ("reason", 99),
    ],
)
async def test_unbind_requires_every_field(
    running: InProcessServer, forum: FakeForum, field: str, value: object
) -> None:
    """An unbind without request id, valid number, account or reason is INVALID_ARGUMENT."""
    fields: dict[str, object] = {
        "request_id": "r1",
        "msisdn": NUMBER,
        "account_ref": "u1",
        "reason": common_pb2.UNBIND_REASON_OWNER_REQUEST,
        field: value,
    }
    request = provider_pb2.UnbindRequest(**fields)  # type: ignore[arg-type]  # fields vary by case
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.provider_stub().Unbind(
            request, metadata=running.metadata(NUMBER, purpose="unbind"), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (err.value.details() or "")
    assert forum.calls == []


async def test_adapter_exception_is_internal_and_masked(
    running: InProcessServer, forum: FakeForum
) -> None:
    """An adapter exception is INTERNAL, generic; the log has the traceback, number masked."""
    forum.error = RuntimeError(f"database said no for {NUMBER} (password=hunter2)")
    with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as err:
        await _list(running)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    details = err.value.details() or ""
    assert "hunter2" not in details
    assert "database" not in details
    (failure,) = [entry for entry in logs if entry["event"] == "adapter.failed"]
    assert "RuntimeError" in failure["exception"]
    assert NUMBER not in str(logs)


async def test_unavailable_from_the_adapter_is_unavailable(
    running: InProcessServer, forum: FakeForum
) -> None:
    """An adapter raising Unavailable answers UNAVAILABLE, so the gateway retries later."""
    forum.error = Unavailable("primary database down")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _list(running)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "database" not in (err.value.details() or "")


@pytest.mark.parametrize(
    ("result", "rule"),
    [
        ([Binding(account_ref="", kind=BindingKind.LOGIN, bound_at=BOUND_AT)], "account_ref"),
        (
            [
                Binding(
                    account_ref="u1", kind=BindingKind.LOGIN, bound_at=BOUND_AT.replace(tzinfo=None)
                )
            ],
            "naive",
        ),
        ([{"account_ref": "u1"}], "expected a Binding"),
        (Binding(account_ref="u1", kind=BindingKind.LOGIN, bound_at=None), "list of Binding"),
    ],
)
async def test_invalid_answer_is_internal_and_the_log_names_the_rule(
    running: InProcessServer, forum: FakeForum, result: object, rule: str
) -> None:
    """A broken rule in the adapter's answer is INTERNAL 'invalid binding', logged by rule."""
    forum.result = result
    with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as err:
        await _list(running)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == "adapter returned an invalid binding"
    (entry,) = [e for e in logs if e["event"] == "adapter.invalid_result"]
    assert rule in entry["rule"]


async def test_deadline_reaches_the_adapter_and_is_enforced(
    running: InProcessServer, forum: FakeForum
) -> None:
    """The call's deadline is in CallInfo, and a slow adapter is cut off at it and cancelled."""
    forum.delay = 10.0
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _list(running, timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    (info,) = forum.infos
    remaining = info.time_remaining()
    assert info.deadline is not None
    assert remaining is not None
    assert remaining <= 0.5
    await asyncio.wait_for(forum.cancelled.wait(), 5)


async def test_client_cancellation_cancels_the_adapter(
    running: InProcessServer, forum: FakeForum
) -> None:
    """When the gateway gives up on a call, the adapter's coroutine is cancelled."""
    forum.delay = 10.0
    call = running.provider_stub().ListBindings(
        provider_pb2.ListBindingsRequest(msisdn=NUMBER), metadata=running.metadata(NUMBER)
    )
    await asyncio.wait_for(forum.started.wait(), 5)
    call.cancel()
    await asyncio.wait_for(forum.cancelled.wait(), 5)


async def test_health_and_reflection(running: InProcessServer) -> None:
    """Health is SERVING for server and service; reflection lists the services (grpcurl)."""
    health = running.health_stub()
    for service in ("", "onecert.v1.BindingProvider"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = set()
    async for response in call:
        names |= {s.name for s in response.list_services_response.service}
    assert {"onecert.v1.BindingProvider", "grpc.health.v1.Health"} <= names


async def test_logs_carry_the_query_id_and_never_the_number(running: InProcessServer) -> None:
    """Each call's log lines carry the verified query id and the masked number only."""
    token = running.gateway.warrant(NUMBER, query_id="q-7")
    with capture_logs(processors=[merge_contextvars]) as logs:
        await running.provider_stub().ListBindings(
            provider_pb2.ListBindingsRequest(msisdn=NUMBER), metadata=_auth(token), timeout=5
        )
    assert NUMBER not in str(logs)
    (rpc,) = [e for e in logs if e["event"] == "rpc.finished"]
    assert rpc["rpc"] == "ListBindings"
    assert rpc["code"] == "OK"
    (listed,) = [e for e in logs if e["event"] == "bindings.listed"]
    assert listed["query_id"] == "q-7"
    assert listed["msisdn"].startswith("+861")
    assert "*" in listed["msisdn"]


async def test_failed_calls_are_logged_with_their_status(running: InProcessServer) -> None:
    """The interceptor logs the status of a refused call."""
    with capture_logs(processors=[merge_contextvars]) as logs:
        with pytest.raises(grpc.aio.AioRpcError):
            await running.provider_stub().ListBindings(
                provider_pb2.ListBindingsRequest(msisdn=NUMBER), timeout=5
            )
        # The server logs as its handler ends, which may be just after the
        # client has the refusal: wait for the line rather than race it.
        for _ in range(500):
            if any(e["event"] == "rpc.finished" for e in logs):
                break
            await asyncio.sleep(0.01)
    (rpc,) = [e for e in logs if e["event"] == "rpc.finished"]
    assert rpc["code"] == "UNAUTHENTICATED"
