"""Recycled-number notices: Security Event Tokens issued, verified, delivered once."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onecert.sdk import (
    CallInfo,
    Provider,
    RecycledNotice,
    SetError,
    SetIssuer,
    SetVerifier,
    SQLiteIdempotencyStore,
)
from onecert.sdk._keys import SigningKey, parse_jwks
from onecert.sdk._msisdn import is_e164
from onecert.sdk._set import RISC_IDENTIFIER_RECYCLED, SET_TYP
from onecert.sdk.testing import (
    CallError,
    FakeGateway,
    InProcessServer,
    ProviderEnvironment,
    empty_provider,
)
from onecert.v1 import provider_pb2
from tests.sdk.sdk_fakes import NUMBER, PROVIDER_ID, FakeForum

KEY = SigningKey.generate("EdDSA")
ISSUER = SetIssuer(key=KEY, issuer="onecert-gateway")
VERIFIER = SetVerifier(keys=parse_jwks(KEY.jwks()), issuer="onecert-gateway", audience=PROVIDER_ID)
RECYCLED_AT = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def _payload(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return data


def test_issued_set_has_the_rfc_8417_shape() -> None:
    """A SET carries iss, iat, jti, aud, toe and exactly the RISC event for a phone subject."""
    deadline = RECYCLED_AT + timedelta(days=7)
    token = ISSUER.issue(
        audience=PROVIDER_ID, msisdn=NUMBER, recycled_at=RECYCLED_AT, deadline=deadline, jti="n-1"
    )
    claims = _payload(token)
    assert set(claims) == {"iss", "iat", "jti", "aud", "toe", "events"}
    assert "exp" not in claims
    assert claims["toe"] == int(RECYCLED_AT.timestamp())
    assert claims["events"] == {
        RISC_IDENTIFIER_RECYCLED: {
            "subject": {"format": "phone_number", "phone_number": NUMBER},
            "act_by": int(deadline.timestamp()),
        }
    }
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["typ"] == SET_TYP


def test_verified_set_becomes_a_notice() -> None:
    """Verification returns the notice with the number, when it was recycled and the deadline."""
    deadline = RECYCLED_AT + timedelta(days=7)
    notice = VERIFIER.verify(
        ISSUER.issue(
            audience=PROVIDER_ID,
            msisdn=NUMBER,
            recycled_at=RECYCLED_AT,
            deadline=deadline,
            jti="n-2",
        )
    )
    assert notice.jti == "n-2"
    assert notice.msisdn == NUMBER
    assert notice.recycled_at == RECYCLED_AT
    assert notice.act_by == deadline
    assert notice.issued_at is not None


def _forged(claims: dict[str, Any], *, typ: str = SET_TYP) -> str:
    base = {"iss": "onecert-gateway", "aud": PROVIDER_ID, "iat": int(time.time()), "jti": "x"}
    base["toe"] = base["iat"]
    return KEY.sign({**base, **claims}, typ=typ)


@pytest.mark.parametrize(
    ("token", "malformed"),
    [
        ("", True),
        ("a.b.c", True),
        (_forged({"events": {}}, typ="JWT"), True),
        (_forged({}), True),
        (_forged({"events": {"https://example.com/other": {}}}), True),
        (
            _forged(
                {
                    "events": {
                        RISC_IDENTIFIER_RECYCLED: {
                            "subject": {"format": "phone_number", "phone_number": "12345"}
                        }
                    }
                }
            ),
            True,
        ),
        (
            _forged(
                {
                    "events": {
                        RISC_IDENTIFIER_RECYCLED: {
                            "subject": {"format": "email", "email": "a@example.com"}
                        }
                    }
                }
            ),
            True,
        ),
        (
            SetIssuer(key=SigningKey.generate("EdDSA"), issuer="onecert-gateway").issue(
                audience=PROVIDER_ID, msisdn=NUMBER, recycled_at=RECYCLED_AT
            ),
            False,
        ),
        (
            ISSUER.issue(audience="another-provider", msisdn=NUMBER, recycled_at=RECYCLED_AT),
            False,
        ),
        (
            SetIssuer(key=KEY, issuer="someone-else").issue(
                audience=PROVIDER_ID, msisdn=NUMBER, recycled_at=RECYCLED_AT
            ),
            False,
        ),
        (
            ISSUER.issue(
                audience=PROVIDER_ID, msisdn=NUMBER, recycled_at=RECYCLED_AT, now=time.time() + 600
            ),
            False,
        ),
    ],
    ids=[
        "empty",
        "garbage",
        "wrong typ",
        "no events",
        "other event",
        "bad number",
        "not a phone subject",
        "wrong key",
        "wrong audience",
        "wrong issuer",
        "issued in the future",
    ],
)
def test_bad_sets_are_refused(token: str, malformed: bool) -> None:
    """Malformed tokens are told apart (INVALID_ARGUMENT) from untrusted ones (UNAUTHENTICATED)."""
    with pytest.raises(SetError) as err:
        VERIFIER.verify(token)
    assert err.value.malformed is malformed
    assert NUMBER not in err.value.message


@given(st.text(max_size=20))
def test_only_e164_subjects_are_accepted(phone: str) -> None:
    """The subject's phone number must be E.164, whatever else is sent."""
    token = _forged(
        {
            "events": {
                RISC_IDENTIFIER_RECYCLED: {
                    "subject": {"format": "phone_number", "phone_number": phone}
                }
            }
        }
    )
    if is_e164(phone):
        assert VERIFIER.verify(token).msisdn == phone
        return
    with pytest.raises(SetError) as err:
        VERIFIER.verify(token)
    assert err.value.malformed


def test_issuer_refuses_what_it_must_not_sign() -> None:
    """The issuer refuses a malformed number and naive datetimes."""
    with pytest.raises(ValueError, match=r"E\.164"):
        ISSUER.issue(audience=PROVIDER_ID, msisdn="138", recycled_at=RECYCLED_AT)
    with pytest.raises(ValueError, match="timezone"):
        ISSUER.issue(
            audience=PROVIDER_ID, msisdn=NUMBER, recycled_at=RECYCLED_AT.replace(tzinfo=None)
        )


async def test_receive_event_calls_the_handler_once_per_jti(
    running: InProcessServer, forum: FakeForum
) -> None:
    """A notice reaches on_recycled once; a redelivery gets the same answer, no second call."""
    token = running.gateway.recycled_notice(NUMBER, recycled_at=RECYCLED_AT, jti="n-10")
    stub = running.provider_stub()
    first = await stub.ReceiveEvent(provider_pb2.ReceiveEventRequest(set=token), timeout=5)
    second = await stub.ReceiveEvent(provider_pb2.ReceiveEventRequest(set=token), timeout=5)
    assert first == second
    assert first.acknowledged
    assert first.acted
    assert first.bindings_removed == 2
    assert forum.calls == ["on_recycled"]
    (notice,) = forum.notices
    assert notice.msisdn == NUMBER
    assert notice.recycled_at == RECYCLED_AT
    assert forum.infos[0].purpose == "event"


async def test_handler_returning_none_acknowledges_without_acting(
    provider: Provider, forum: FakeForum
) -> None:
    """A handler that only records the notice (returns None) is answered acknowledged, not acted."""
    forum.removed_on_notice = None
    env = ProviderEnvironment(provider)
    assert await env.notify_recycled(NUMBER) is None
    assert forum.calls == ["on_recycled"]


async def test_without_a_handler_notices_are_acknowledged(running: InProcessServer) -> None:
    """A provider without on_recycled acknowledges notices and claims no action."""
    bare = empty_provider(PROVIDER_ID, name="Bare")
    env = ProviderEnvironment(bare)
    assert await env.notify_recycled(NUMBER) is None


@pytest.mark.parametrize(
    ("audience", "code"),
    [("another-provider", grpc.StatusCode.UNAUTHENTICATED), (PROVIDER_ID, None)],
)
async def test_receive_event_refuses_untrusted_notices(
    running: InProcessServer, forum: FakeForum, audience: str, code: grpc.StatusCode | None
) -> None:
    """A notice for another provider is UNAUTHENTICATED and never reaches the handler."""
    token = running.gateway.recycled_notice(NUMBER, audience=audience)
    call = running.provider_stub().ReceiveEvent(
        provider_pb2.ReceiveEventRequest(set=token), timeout=5
    )
    if code is None:
        assert (await call).acknowledged
        return
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code
    assert forum.calls == []


async def test_receive_event_refuses_what_is_not_a_set(
    running: InProcessServer, forum: FakeForum
) -> None:
    """A warrant (or anything else) sent as a notice is INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.provider_stub().ReceiveEvent(
            provider_pb2.ReceiveEventRequest(set=running.gateway.warrant(NUMBER)), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert forum.calls == []


async def test_handler_failure_is_retried(provider: Provider, forum: FakeForum) -> None:
    """A handler that fails is INTERNAL and not remembered, so the redelivery calls it again."""
    env = ProviderEnvironment(provider)
    token = env.gateway.recycled_notice(NUMBER, jti="n-20")
    forum.error = RuntimeError("boom")
    with pytest.raises(CallError) as err:
        await env.notify_recycled(NUMBER, token=token)
    assert err.value.code is grpc.StatusCode.INTERNAL
    forum.error = None
    assert await env.notify_recycled(NUMBER, token=token) == 2
    assert [n.resumed for n in forum.notices] == [False, True]


async def test_notice_claimed_before_the_handler_is_resumed_after_a_restart(
    provider: Provider, forum: FakeForum, tmp_path: Path
) -> None:
    """While on_recycled runs, the answer store already holds a claim for the notice; a
    process that dies then (here: the store reopened by a new environment, the claim left
    without an answer) gets the notice again marked resumed, and records its answer."""
    store = SQLiteIdempotencyStore(tmp_path / "answers.db")
    seen: list[str | None] = []
    on_recycled = forum.on_recycled

    async def looking(notice: RecycledNotice, info: CallInfo) -> int | None:
        seen.append(await store.get("event:n-30"))
        return await on_recycled(notice, info)

    forum.on_recycled = looking  # type: ignore[method-assign]  # observe the store mid-call
    provider = Provider(
        provider_id=PROVIDER_ID, name="Forum", category="forum", implementation=forum
    )
    env = ProviderEnvironment(provider, idempotency=store)
    token = env.gateway.recycled_notice(NUMBER, jti="n-30")
    assert await env.notify_recycled(NUMBER, token=token) == 2
    assert json.loads(seen[0] or "{}")["outcome"] == "claimed"
    # As if the process had died after acting, before the answer was recorded.
    await store.put("event:n-30", seen[0] or "")
    again = ProviderEnvironment(
        provider, idempotency=SQLiteIdempotencyStore(tmp_path / "answers.db"), gateway=env.gateway
    )
    assert await again.notify_recycled(NUMBER, token=token) == 2
    assert [n.resumed for n in forum.notices] == [False, True]
    assert await again.notify_recycled(NUMBER, token=token) == 2
    assert len(forum.notices) == 2


@pytest.mark.parametrize("bad", [True, -1, 2**32, "3"])
async def test_handler_result_is_checked(provider: Provider, forum: FakeForum, bad: object) -> None:
    """on_recycled must return None or a count of bindings; anything else is INTERNAL."""
    forum.removed_on_notice = bad  # type: ignore[assignment]  # deliberately wrong
    env = ProviderEnvironment(provider)
    with pytest.raises(CallError) as err:
        await env.notify_recycled(NUMBER)
    assert err.value.code is grpc.StatusCode.INTERNAL


def test_gateway_double_signs_with_its_own_key() -> None:
    """FakeGateway's notices verify against its published keys."""
    gateway = FakeGateway(audience=PROVIDER_ID)
    verifier = SetVerifier(keys=gateway.keys, issuer=gateway.issuer, audience=PROVIDER_ID)
    assert verifier.verify(gateway.recycled_notice(NUMBER)).msisdn == NUMBER


def test_an_old_set_is_refused_as_untrusted_and_an_old_malformed_one_as_malformed() -> None:
    """A well-formed SET issued more than 300 s ago is UNAUTHENTICATED (contract E-9); one
    that is also not a proper SET is still reported malformed (INVALID_ARGUMENT)."""
    old = int(time.time()) - 3600
    with pytest.raises(SetError) as err:
        VERIFIER.verify(
            ISSUER.issue(audience=PROVIDER_ID, msisdn=NUMBER, recycled_at=RECYCLED_AT, now=old)
        )
    assert err.value.reason == "expired"
    assert not err.value.malformed
    with pytest.raises(SetError) as err:
        VERIFIER.verify(_forged({"iat": old, "events": {"https://example.com/other": {}}}))
    assert err.value.malformed


async def test_a_batch_is_answered_per_notice(running: InProcessServer, forum: FakeForum) -> None:
    """ReceiveEvents checks and handles each SET on its own: refused ones get the status
    ReceiveEvent would have failed with, the others are acknowledged, a notice repeated
    in the batch is acted on once, and one result comes back per SET, in order."""
    gateway = running.gateway
    good = gateway.recycled_notice(NUMBER, recycled_at=RECYCLED_AT, jti="n-20")
    other = gateway.recycled_notice(NUMBER, recycled_at=RECYCLED_AT, jti="n-21")
    foreign = gateway.recycled_notice(NUMBER, audience="another-provider", jti="n-22")
    sets = [good, "not a token", foreign, gateway.warrant(NUMBER), other, good]
    answer = await running.provider_stub().ReceiveEvents(
        provider_pb2.ReceiveEventsRequest(sets=sets), timeout=5
    )
    outcomes = [
        (r.jti, r.response.acknowledged if r.HasField("response") else r.error_code)
        for r in answer.results
    ]
    assert outcomes == [
        ("n-20", True),
        ("", grpc.StatusCode.INVALID_ARGUMENT.value[0]),
        ("n-22", grpc.StatusCode.UNAUTHENTICATED.value[0]),
        (outcomes[3][0], grpc.StatusCode.INVALID_ARGUMENT.value[0]),
        ("n-21", True),
        ("n-20", True),
    ]
    assert all(r.error_message for r in answer.results if not r.HasField("response"))
    assert NUMBER not in str(answer)
    assert answer.results[0].response == answer.results[5].response
    assert forum.calls == ["on_recycled", "on_recycled"]


@pytest.mark.parametrize("count", [0, 1001])
async def test_a_batch_must_hold_one_to_1000_sets(running: InProcessServer, count: int) -> None:
    """An empty batch, or one of more than 1000 SETs, is INVALID_ARGUMENT as a whole."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.provider_stub().ReceiveEvents(
            provider_pb2.ReceiveEventsRequest(sets=["x"] * count), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
