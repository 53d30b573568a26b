"""Every identity failure is refused before any carrier or provider is contacted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable
from typing import TYPE_CHECKING

import grpc
import pytest

from onecert.gateway._identity import AssertionIssuer
from onecert.sdk._keys import SigningKey
from onecert.v1 import gateway_pb2

if TYPE_CHECKING:
    from onecert.gateway.testing import Federation

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _bad_signature(fed: Federation) -> list[tuple[str, str]]:
    # The header and claims of one assertion with the signature of another.
    one, other = fed.assertion().split("."), fed.assertion().split(".")
    return _bearer(".".join([one[0], one[1], other[2]]))


def _foreign_key(fed: Federation) -> list[tuple[str, str]]:
    forger = AssertionIssuer(key=SigningKey.generate("ES256"), issuer=fed.ISSUER)
    return _bearer(forger.mint(sub=fed.CITIZEN_SUB, idn=fed.IDN, audience=fed.GATEWAY_ID))


CASES: list[tuple[str, Callable[[Federation], list[tuple[str, str]]], grpc.StatusCode, str]] = [
    ("missing header", lambda fed: [], UNAUTHENTICATED, "no identity assertion"),
    (
        "other scheme",
        lambda fed: [("authorization", f"Basic {fed.assertion()}")],
        UNAUTHENTICATED,
        "Bearer",
    ),
    ("garbage token", lambda fed: _bearer("not-a-jwt"), UNAUTHENTICATED, "not a well-formed"),
    ("bad signature", _bad_signature, UNAUTHENTICATED, "signature does not verify"),
    ("untrusted key", _foreign_key, UNAUTHENTICATED, "key the gateway does not trust"),
    (
        "expired",
        lambda fed: _bearer(fed.assertion(now=time.time() - 600, lifetime=120)),
        UNAUTHENTICATED,
        "expired",
    ),
    (
        "wrong audience",
        lambda fed: _bearer(fed.assertion(audience="another-gateway")),
        UNAUTHENTICATED,
        "another audience",
    ),
    (
        "too long a lifetime",
        lambda fed: _bearer(fed.assertion(lifetime=3600)),
        UNAUTHENTICATED,
        "lives longer",
    ),
    (
        "wrong typ",
        lambda fed: _bearer(fed.assertion(headers={"typ": "JWT"})),
        UNAUTHENTICATED,
        "typ",
    ),
    (
        "assurance too low",
        lambda fed: _bearer(fed.assertion(acr="low")),
        PERMISSION_DENIED,
        "too low",
    ),
]


@pytest.mark.parametrize(
    ("metadata", "code", "message"),
    [pytest.param(m, c, msg, id=name) for name, m, c, msg in CASES],
)
async def test_identity_failure_is_refused_before_fan_out(
    fed: Federation,
    metadata: Callable[[Federation], list[tuple[str, str]]],
    code: grpc.StatusCode,
    message: str,
) -> None:
    """The call ends with the identity error's status and message, and no carrier
    or provider is called."""
    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    await fed.provider("pay", {})
    gateway = await fed.gateway()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fed.lookup(gateway, metadata=metadata(fed))
    assert info.value.code() == code
    assert message in (info.value.details() or "")
    assert fed.upstream_calls() == 0


async def test_replayed_assertion_is_refused_before_fan_out(fed: Federation) -> None:
    """An assertion used once is refused the second time, with no further calls."""
    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    await fed.provider("pay", {})
    gateway = await fed.gateway()
    token = fed.assertion()
    await fed.lookup(gateway, assertion=token)
    calls = fed.upstream_calls()
    assert calls == 3
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fed.lookup(gateway, assertion=token)
    assert info.value.code() == UNAUTHENTICATED
    assert "already used" in (info.value.details() or "")
    assert fed.upstream_calls() == calls


async def test_carriers_are_asked_for_the_assertions_idn(fed: Federation) -> None:
    """The idn from the verified assertion is what carriers are asked about."""
    carrier = await fed.carrier("cm", {fed.OTHER_IDN: fed.story_tenures()})
    gateway = await fed.gateway()
    messages = await fed.lookup(gateway, assertion=fed.assertion(idn=fed.OTHER_IDN))
    assert carrier.record.targets == [fed.OTHER_IDN]
    assert len(messages[0].started.numbers) == 2


async def _collect(
    call: AsyncIterable[gateway_pb2.LookupResponse], into: list[gateway_pb2.LookupResponse]
) -> None:
    async for message in call:
        into.append(message)  # noqa: PERF401 - keeps what arrived before the call fails


async def test_replay_to_another_replica_reveals_nothing(fed: Federation) -> None:
    """A replica that never saw an assertion still refuses its replay (the shared store
    remembers it): UNAUTHENTICATED before any message, with no provider asked and no
    audit row; at most the carrier call made while the jti was being recorded."""
    carrier = await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    provider = await fed.provider("pay", {})
    first = await fed.gateway(store="sqlite")
    second = await fed.gateway(store="sqlite")
    token = fed.assertion()
    await fed.lookup(first, assertion=token)
    provider_calls, carrier_calls = provider.record.calls, carrier.record.calls
    assert second.store is not None
    rows = (await second.store.audit.verify()).rows_checked
    stub = fed.stub(second)
    call = stub.Lookup(gateway_pb2.LookupRequest(), metadata=_bearer(token), timeout=10)
    messages: list[gateway_pb2.LookupResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _collect(call, messages)
    assert info.value.code() == UNAUTHENTICATED
    assert "already used" in (info.value.details() or "")
    assert messages == []
    assert provider.record.calls == provider_calls
    assert carrier.record.calls <= carrier_calls + 1
    assert (await second.store.audit.verify()).rows_checked == rows


async def test_replay_after_a_restart_is_refused(fed: Federation) -> None:
    """An assertion spent before the gateway restarted is refused after it: the spend
    was durable before the first lookup revealed anything."""
    await fed.carrier("cm", {fed.IDN: fed.story_tenures()})
    await fed.provider("pay", {})
    before = await fed.gateway(store="sqlite")
    token = fed.assertion()
    await fed.lookup(before, assertion=token)
    await before.stop(0)
    after = await fed.gateway(store="sqlite")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fed.lookup(after, assertion=token)
    assert info.value.code() == UNAUTHENTICATED
