"""The machinery shared by the provider and carrier suites.

A check is an async function that returns what it saw, or raises
:class:`CheckFailedError` or :class:`CheckSkippedError`. Every RPC a check makes has a
deadline, and every check has a time budget of its own on top, so an adapter
that hangs produces failed checks and never a hung kit.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onecert.sdk import _channel
from onecert.sdk._keys import SigningKey
from onecert.sdk._msisdn import mask_numbers_in_text
from onecert.sdk._tls import ClientTLS
from onecert.sdk._warrant import WARRANT_TYP, WarrantIssuer
from onecert.sdk.conformance._report import CheckResult, Outcome
from onecert.v1 import common_pb2

PURPOSE = "conformance"
Metadata = tuple[tuple[str, str], ...]


class CheckFailedError(Exception):
    """The target broke a rule; the message says which and how."""


class CheckSkippedError(Exception):
    """The check could not run; the message says why."""


@dataclass(frozen=True)
class Check:
    """One named check.

    ``calls`` is how many RPCs it makes one after the other (calls made
    concurrently count once); its time budget is that many call deadlines
    plus the slack.
    """

    name: str
    run: Callable[[], Awaitable[str]]
    calls: int = 1


@dataclass(frozen=True)
class Timing:
    """Deadlines of a run, in seconds."""

    call_timeout: float
    short_deadline: float
    slack: float

    def __post_init__(self) -> None:
        if self.call_timeout <= 0 or self.short_deadline <= 0 or self.slack <= 0:
            raise ValueError("call_timeout, short_deadline and slack must be positive")


def open_channel(target: str, tls: ClientTLS | None) -> grpc.aio.Channel:
    return _channel.open_channel(target, tls=tls)


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def safe(text: str) -> str:
    """An adapter's error message, with anything like a phone number masked."""
    return mask_numbers_in_text(text)


def describe_error(exc: grpc.aio.AioRpcError) -> str:
    details = exc.details() or ""
    return f"{exc.code().name}: {safe(details)}" if details else exc.code().name


async def expect_code(
    call: Awaitable[Any], expected: grpc.StatusCode, *, what: str
) -> grpc.aio.AioRpcError:
    """Await ``call`` and require it to fail with ``expected``."""
    try:
        answer = await call
    except grpc.aio.AioRpcError as exc:
        if exc.code() != expected:
            raise CheckFailedError(
                f"{what}: answered {describe_error(exc)}; expected {expected.name}"
            ) from exc
        return exc
    raise CheckFailedError(f"{what}: answered OK{_brief(answer)}; expected {expected.name}")


def _brief(answer: Any) -> str:
    # Say enough about an unexpected success to make the failure actionable.
    outcome = getattr(answer, "outcome", None)
    if isinstance(outcome, int) and outcome in common_pb2.UnbindOutcome.values():
        name = common_pb2.UnbindOutcome.Name(common_pb2.UnbindOutcome.ValueType(outcome))
        return f" ({name.removeprefix('UNBIND_OUTCOME_')})"
    return ""


async def expect_ok(call: Awaitable[Any], *, what: str) -> Any:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise CheckFailedError(f"{what}: answered {describe_error(exc)}; expected OK") from exc


def health_checks(channel: grpc.aio.Channel, *, service: str, timing: Timing) -> list[Check]:
    stub = health_pb2_grpc.HealthStub(channel)

    async def check(name: str) -> str:
        request = health_pb2.HealthCheckRequest(service=name)
        label = f"health of {name!r}"
        response = await expect_ok(stub.Check(request, timeout=timing.call_timeout), what=label)
        status = str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise CheckFailedError(f"{label} is {status}; expected SERVING")
        return status

    async def overall() -> str:
        return await check("")

    async def of_service() -> str:
        return await check(service)

    return [Check("health.overall", overall), Check("health.service", of_service)]


async def serving_within(channel: grpc.aio.Channel, seconds: float) -> bool:
    """Whether the target answers a health check SERVING within ``seconds``."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=seconds)
    except grpc.aio.AioRpcError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


async def timed(call: Awaitable[Any]) -> tuple[grpc.StatusCode, float]:
    """Await ``call``; its status code and how long it took."""
    start = time.monotonic()
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), time.monotonic() - start
    return grpc.StatusCode.OK, time.monotonic() - start


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class BadWarrant:
    """A warrant the target must refuse with UNAUTHENTICATED."""

    name: str
    what: str
    # The metadata to send with a call about ``target``.
    metadata: Callable[[str], Metadata]


def impostor_key(key: SigningKey) -> SigningKey:
    """Another private key under ``key``'s kid and algorithm.

    A verifier that trusts the kid without checking the signature accepts
    what it signs.
    """
    return SigningKey(
        private_key=SigningKey.generate(key.alg).private_key, kid=key.kid, alg=key.alg
    )


def fault_names(target_label: str) -> tuple[str, ...]:
    """The names of the :func:`bad_warrants`, known before the audience is."""
    return (
        "missing",
        "malformed",
        "expired",
        "wrong_key_same_kid",
        "unknown_kid",
        "alg_none",
        "wrong_issuer",
        "wrong_audience",
        f"wrong_{target_label}",
    )


def bad_warrants(
    *,
    key: SigningKey,
    issuer: str,
    audience: str,
    other_target: str,
    target_label: str,
) -> dict[str, BadWarrant]:
    """Every way a warrant must be refused, each breaking one rule, by name."""
    good = WarrantIssuer(key=key, issuer=issuer)
    impostor = impostor_key(key)
    stranger = SigningKey.generate(key.alg)

    def signed(
        *,
        signer: SigningKey = key,
        iss: str = issuer,
        aud: str = audience,
        now: float | None = None,
        fixed_target: str | None = None,
    ) -> Callable[[str], Metadata]:
        warrants = WarrantIssuer(key=signer, issuer=iss)

        def make(target: str) -> Metadata:
            token = warrants.issue(
                audience=aud, target=fixed_target or target, purpose=PURPOSE, now=now
            )
            return bearer(token)

        return make

    def unsigned(target: str) -> Metadata:
        # alg "none" with the real kid: a verifier that lets the token pick
        # its algorithm accepts it.
        token = good.issue(audience=audience, target=target, purpose=PURPOSE)
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        header = {"alg": "none", "typ": WARRANT_TYP, "kid": key.kid}
        raw = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        return bearer(raw + ".")

    faults = [
        BadWarrant("missing", "no authorization metadata", lambda _t: ()),
        BadWarrant("malformed", "a bearer token that is not a JWT", lambda _t: bearer("not-a-jwt")),
        BadWarrant("expired", "expired ten minutes ago", signed(now=time.time() - 630)),
        BadWarrant(
            "wrong_key_same_kid",
            "signed by another key under the gateway's kid",
            signed(signer=impostor),
        ),
        BadWarrant(
            "unknown_kid", "signed by a key the target does not know", signed(signer=stranger)
        ),
        BadWarrant("alg_none", "unsigned (alg none)", unsigned),
        BadWarrant("wrong_issuer", "issued by another issuer", signed(iss=f"{issuer}-other")),
        BadWarrant(
            "wrong_audience", "addressed to another audience", signed(aud=f"{audience}-other")
        ),
        BadWarrant(
            f"wrong_{target_label}",
            f"naming another {target_label}",
            signed(fixed_target=other_target),
        ),
    ]
    assert tuple(f.name for f in faults) == fault_names(target_label)
    return {f.name: f for f in faults}


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


async def run_phases(
    phases: Sequence[Sequence[Check]], *, timing: Timing, concurrency: int
) -> list[CheckResult]:
    """Run the checks of each phase concurrently, the phases one after the other.

    Results come back in the order the checks were declared.
    """
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(check: Check) -> CheckResult:
        async with gate:
            return await run_check(check, timing=timing)

    results: list[CheckResult] = []
    for phase in phases:
        results.extend(await asyncio.gather(*(one(c) for c in phase)))
    return results


async def run_check(check: Check, *, timing: Timing) -> CheckResult:
    budget = check.calls * timing.call_timeout + timing.slack
    start = time.monotonic()
    try:
        detail = await asyncio.wait_for(check.run(), timeout=budget)
        outcome = Outcome.PASSED
    except CheckSkippedError as exc:
        outcome, detail = Outcome.SKIPPED, str(exc)
    except CheckFailedError as exc:
        outcome, detail = Outcome.FAILED, str(exc)
    except TimeoutError:
        outcome, detail = Outcome.FAILED, f"no result within the check's budget of {budget:.1f} s"
    except grpc.aio.AioRpcError as exc:
        outcome, detail = Outcome.FAILED, f"unexpected {describe_error(exc)}"
    except Exception as exc:  # noqa: BLE001 - one broken check must not stop the others
        outcome, detail = Outcome.FAILED, f"the check itself failed: {type(exc).__name__}: {exc}"
    return CheckResult(
        name=check.name, outcome=outcome, detail=detail, elapsed=time.monotonic() - start
    )
