"""The machinery shared by the provider and carrier suites.

A check is an async function that returns what it saw, or raises
:class:`CheckFailedError` or :class:`CheckSkippedError`. Every RPC a check makes has a
deadline, and every check has a time budget of its own on top, so an adapter
that hangs produces failed checks and never a hung kit.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onecert.sdk import _channel
from onecert.sdk._msisdn import mask_numbers_in_text, sha256_hex
from onecert.sdk._set import SET_TYP
from onecert.sdk._tls import ClientTLS
from onecert.sdk._warrant import PURPOSE_LOOKUP, PURPOSE_UNBIND
from onecert.sdk.conformance._report import CheckResult, Outcome, Report
from onecert.sdk.conformance._tokens import Forge, Signer
from onecert.v1 import common_pb2

_V = TypeVar("_V")
_M = TypeVar("_M")

Metadata = tuple[tuple[str, str], ...]


class CheckFailedError(Exception):
    """The target broke a rule; the message says which and how."""


class CheckSkippedError(Exception):
    """The check could not run; the message says why."""


@dataclass(frozen=True)
class Check:
    """One named check of one rule of docs/contract.md.

    ``calls`` is how many RPCs it makes one after the other (calls made
    concurrently count once); its time budget is that many call deadlines
    plus the slack.
    """

    rule: str
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


async def expect_invalid_all(
    cases: Sequence[tuple[str, _V]],
    call: Callable[[_V], Awaitable[Any]],
    *,
    what: str,
    also: Callable[[str, _V, grpc.aio.AioRpcError], str | None] | None = None,
) -> int:
    """Call with every malformed ``(description, value)`` at once and require
    INVALID_ARGUMENT of each; ``also`` may find more wrong with a refusal.

    One :class:`CheckFailedError` names every case that went wrong; the number
    of cases is returned when none did. ``what`` prefixes each description.
    """

    async def one(description: str, value: _V) -> str | None:
        label = f"{what}{description}"
        try:
            exc = await expect_code(call(value), grpc.StatusCode.INVALID_ARGUMENT, what=label)
        except CheckFailedError as failure:
            return str(failure)
        return None if also is None else also(label, value, exc)

    found = await asyncio.gather(*(one(description, value) for description, value in cases))
    problems = [p for p in found if p]
    if problems:
        raise CheckFailedError("; ".join(problems))
    return len(cases)


async def expect_empty_list(
    call: Awaitable[_M], items: Callable[[_M], Sized], *, unknown: str, listed: str
) -> None:
    """Require ``call``, about an ``unknown`` ("an unknown idn"), to answer an empty
    list of ``listed`` ("tenures"): not an error, and nothing in it."""
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        raise CheckFailedError(
            f"answered {describe_error(exc)}; {unknown} must be an empty list, not an error"
        ) from exc
    if count := len(items(response)):
        raise CheckFailedError(f"listed {count} {listed} for {unknown}")


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

    return [Check("H-1", "health.overall", overall), Check("H-2", "health.service", of_service)]


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


@dataclass(frozen=True)
class WarrantCase:
    """One way to present a warrant, and whether the target must accept it.

    ``token`` makes the token from the forge, the call's target and the
    purpose the RPC requires; None means no ``authorization`` metadata.
    """

    rule: str
    name: str
    what: str
    token: Callable[[Forge, str, str], str | None]
    accept: bool = False


def _other_purpose(purpose: str) -> str:
    return PURPOSE_UNBIND if purpose == PURPOSE_LOOKUP else PURPOSE_LOOKUP


def _now() -> int:
    return int(time.time())


# Every warrant rule observable on a call, as a table: the same table runs
# against every RPC that takes a warrant (docs/contract.md W-1 to W-17).
WARRANT_CASES: tuple[WarrantCase, ...] = (
    WarrantCase("W-1", "missing", "no authorization metadata", lambda f, t, p: None),
    WarrantCase(
        "W-2", "malformed", "a bearer token that is not a JWS", lambda f, t, p: "not-a-jwt"
    ),
    WarrantCase(
        "W-3",
        "set_typ",
        "of type secevent+jwt (a notice, not a warrant)",
        lambda f, t, p: f.warrant(t, p, typ=SET_TYP),
    ),
    WarrantCase(
        "W-3", "no_typ", "without typ", lambda f, t, p: f.warrant(t, p, drop_header=["typ"])
    ),
    WarrantCase(
        "W-4",
        "unknown_kid",
        "signed by a key the target does not know",
        lambda f, t, p: f.warrant(t, p, signer=Signer(key=f.stranger)),
    ),
    WarrantCase(
        "W-4", "no_kid", "without kid", lambda f, t, p: f.warrant(t, p, drop_header=["kid"])
    ),
    WarrantCase(
        "W-5",
        "alg_none",
        "unsigned (alg none)",
        lambda f, t, p: f.warrant(t, p, signer=Signer("none")),
    ),
    WarrantCase(
        "W-5",
        "hs256_public_key",
        "HS256 keyed with the gateway's public key",
        lambda f, t, p: f.warrant(t, p, signer=Signer("hs256")),
    ),
    WarrantCase(
        "W-6",
        "wrong_key_same_kid",
        "signed by another key under the gateway's kid",
        lambda f, t, p: f.warrant(t, p, signer=Signer(key=f.impostor)),
    ),
    WarrantCase(
        "W-7",
        "wrong_issuer",
        "issued by another issuer",
        lambda f, t, p: f.warrant(t, p, change={"iss": f"{f.issuer}-other"}),
    ),
    WarrantCase(
        "W-8",
        "wrong_audience",
        "addressed to another audience",
        lambda f, t, p: f.warrant(t, p, change={"aud": f"{f.audience}-other"}),
    ),
    WarrantCase(
        "W-8",
        "audience_list_without_id",
        "with an aud array that does not hold the target's id",
        lambda f, t, p: f.warrant(t, p, change={"aud": [f"{f.audience}-other", "onecert-x"]}),
    ),
    WarrantCase(
        "W-8",
        "audience_list_with_id",
        "with an aud array holding the target's id",
        lambda f, t, p: f.warrant(t, p, change={"aud": ["onecert-x", f.audience]}),
        accept=True,
    ),
    WarrantCase(
        "W-9",
        "expired",
        "expired 30 s ago (more than the allowed skew)",
        lambda f, t, p: f.warrant(t, p, change={"iat": _now() - 60, "exp": _now() - 30}),
    ),
    WarrantCase(
        "W-9",
        "not_yet_valid",
        "with nbf 60 s ahead",
        lambda f, t, p: f.warrant(t, p, change={"nbf": _now() + 60}),
    ),
    WarrantCase(
        "W-10",
        "iat_future",
        "issued 60 s in the future",
        lambda f, t, p: f.warrant(t, p, change={"iat": _now() + 60, "exp": _now() + 90}),
    ),
    WarrantCase("W-10", "no_iat", "without iat", lambda f, t, p: f.warrant(t, p, drop=["iat"])),
    WarrantCase(
        "W-11",
        "lifetime_over_60s",
        "living an hour (exp - iat > 60 s)",
        lambda f, t, p: f.warrant(t, p, change={"iat": _now(), "exp": _now() + 3600}),
    ),
    WarrantCase("W-11", "no_exp", "without exp", lambda f, t, p: f.warrant(t, p, drop=["exp"])),
    WarrantCase("W-12", "no_jti", "without jti", lambda f, t, p: f.warrant(t, p, drop=["jti"])),
    WarrantCase(
        "W-13",
        "other_purpose",
        "for the other RPC's purpose",
        lambda f, t, p: f.warrant(t, p, change={"purpose": _other_purpose(p)}),
    ),
    WarrantCase(
        "W-13",
        "unknown_purpose",
        "with the undefined purpose 'conformance'",
        lambda f, t, p: f.warrant(t, p, change={"purpose": "conformance"}),
    ),
    WarrantCase(
        "W-13", "no_purpose", "without purpose", lambda f, t, p: f.warrant(t, p, drop=["purpose"])
    ),
    WarrantCase(
        "W-14",
        "other_target",
        "naming another target",
        lambda f, t, p: f.warrant(t, p, change={"target_sha256": sha256_hex(t + "0")}),
    ),
    WarrantCase(
        "W-14",
        "no_target",
        "without target_sha256",
        lambda f, t, p: f.warrant(t, p, drop=["target_sha256"]),
    ),
    WarrantCase(
        "W-15", "no_qid", "without qid", lambda f, t, p: f.warrant(t, p, drop=["qid"]), accept=True
    ),
    WarrantCase(
        "W-16",
        "unknown_claims",
        "with a claim the contract does not define",
        lambda f, t, p: f.warrant(t, p, change={"x_future": {"a": 1}}),
        accept=True,
    ),
    WarrantCase(
        "W-16",
        "unknown_crit",
        "with a critical header member nobody understands",
        lambda f, t, p: f.warrant(t, p, header={"crit": ["x-future"], "x-future": True}),
    ),
)


def warrant_checks(
    *,
    rpc: str,
    forge: Callable[[], Forge],
    call: Callable[[Metadata], Awaitable[Any]],
    target: str,
    purpose: str,
) -> list[Check]:
    """The checks of every warrant rule against one RPC, from :data:`WARRANT_CASES`.

    Args:
        rpc: the RPC's label in check names ("list_bindings", ...).
        forge: the forge to sign with (called when the check runs, once the
            target's id is known).
        call: makes the RPC with the given metadata; a call that changes
            nothing whatever it is answered.
        target: the msisdn or idn the call is about.
        purpose: the purpose the RPC requires.
    """
    label = rpc.replace("_", " ")

    def one(case: WarrantCase) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            token = case.token(forge(), target, purpose)
            metadata = () if token is None else bearer(token)
            what = f"{label}, warrant {case.what}"
            if case.accept:
                await expect_ok(call(metadata), what=what)
                return "accepted"
            await expect_code(call(metadata), grpc.StatusCode.UNAUTHENTICATED, what=what)
            return "UNAUTHENTICATED"

        return check

    async def reused() -> str:
        # The gateway may send one warrant again with a retry of the same call.
        token = forge().warrant(target, purpose)
        await expect_ok(call(bearer(token)), what=f"{label}, a warrant's first use")
        await expect_ok(call(bearer(token)), what=f"{label}, the same warrant again")
        return "accepted twice"

    checks = [Check(c.rule, f"{rpc}.warrant.{c.name}", one(c)) for c in WARRANT_CASES]
    checks.append(Check("W-17", f"{rpc}.warrant.reused", reused, calls=2))
    return checks


def warrant_check_names(rpc: str) -> list[tuple[str, str]]:
    """(rule, name) of every check :func:`warrant_checks` makes for ``rpc``."""
    names = [(c.rule, f"{rpc}.warrant.{c.name}") for c in WARRANT_CASES]
    return [*names, ("W-17", f"{rpc}.warrant.reused")]


def deadline_checks(
    channel: grpc.aio.Channel,
    *,
    call: Callable[[float], Awaitable[Any]],
    timing: Timing,
    burst: int = 16,
) -> list[Check]:
    """D-1 and D-2: a short deadline is kept, and abandoned calls stop working.

    ``call`` makes one ordinary read (with a good warrant) under the given
    deadline.
    """
    deadline = timing.short_deadline

    async def short() -> str:
        code, elapsed = await timed(call(deadline))
        if elapsed > deadline + timing.slack:
            raise CheckFailedError(f"a call with a {deadline:.2f} s deadline took {elapsed:.2f} s")
        if code not in (
            grpc.StatusCode.OK,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNAVAILABLE,
        ):
            raise CheckFailedError(f"a call with a {deadline:.2f} s deadline answered {code.name}")
        # An adapter that keeps working on an abandoned call (a blocking
        # handler, a worker pool tied up) shows it here.
        if not await serving_within(channel, timing.slack):
            raise CheckFailedError(
                f"the call ended ({code.name}) after {elapsed:.2f} s, but then a health check "
                f"got no answer within {timing.slack:.2f} s: the adapter is still busy "
                "with a call past its deadline"
            )
        return f"{code.name} after {elapsed:.2f} s (deadline {deadline:.2f} s), still responsive"

    async def abandoned() -> str:
        # Calls whose deadline passed must stop holding what the next calls
        # need (workers, connections): after a burst of them, an ordinary
        # call is answered in its ordinary deadline.
        ended = await asyncio.gather(*(timed(call(deadline)) for _ in range(burst)))
        codes = sorted({code.name for code, _ in ended})
        try:
            await call(timing.call_timeout)
        except grpc.aio.AioRpcError as exc:
            raise CheckFailedError(
                f"after {burst} calls with a {deadline:.2f} s deadline ({', '.join(codes)}), "
                f"an ordinary call answered {describe_error(exc)}: the adapter goes on "
                "working on calls whose deadline has passed"
            ) from exc
        return f"{burst} short calls ({', '.join(codes)}), then an ordinary call answered OK"

    return [
        Check("D-1", "deadline.short", short, calls=2),
        Check("D-2", "deadline.abandoned", abandoned, calls=2),
    ]


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


class Suite(Protocol):
    """The checks of one kind of target, over one channel."""

    def phases(self) -> list[list[Check]]:
        """The checks in phases: each phase runs after the previous one ended."""
        ...


def known_and_unknown(
    known: Sequence[str],
    unknown: str | None,
    *,
    valid: Callable[[str], bool],
    rule: str,
    fresh: Callable[[], str],
) -> tuple[tuple[str, ...], str]:
    """The values said to be known, and one said to be unknown (``fresh()``, not a
    known one, when not given), each checked with ``valid``.

    Raises:
        ValueError: a value breaks ``rule`` ("idn must be ..."), or the unknown one is known.
    """
    if not all(valid(value) for value in known):
        raise ValueError(f"every known {rule}")
    if unknown is None:
        unknown = fresh()
        while unknown in known:
            unknown = fresh()
    elif not valid(unknown) or unknown in known:
        raise ValueError(f"the unknown {rule}, and not a known one")
    return tuple(known), unknown


async def run_suite(
    kind: str,
    suite: Callable[[grpc.aio.Channel], Suite],
    *,
    catalogue: Sequence[tuple[str, str]],
    target: str,
    tls: ClientTLS | None,
    timing: Timing,
    concurrency: int,
) -> Report:
    """Open a channel to ``target``, run the phases of ``suite(channel)``, report."""
    async with open_channel(target, tls) as channel:
        phases = suite(channel).phases()
        # The catalogue (what --list prints) and the run must never drift apart.
        assert [(c.rule, c.name) for p in phases for c in p] == list(catalogue)
        results = await run_phases(phases, timing=timing, concurrency=concurrency)
    return Report(kind=kind, target=target, results=tuple(results))


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
        rule=check.rule,
        name=check.name,
        outcome=outcome,
        detail=detail,
        elapsed=time.monotonic() - start,
    )
