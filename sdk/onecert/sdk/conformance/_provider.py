"""Conformance checks for a BindingProvider, played as the gateway over gRPC."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc

from onecert.sdk._keys import SigningKey
from onecert.sdk._msisdn import is_e164, mask_msisdn
from onecert.sdk._set import SetIssuer
from onecert.sdk._tls import ClientTLS
from onecert.sdk._warrant import WarrantIssuer
from onecert.sdk.conformance._common import (
    PURPOSE,
    BadWarrant,
    Check,
    CheckFailedError,
    CheckSkippedError,
    Metadata,
    Timing,
    bad_warrants,
    bearer,
    describe_error,
    expect_code,
    expect_ok,
    fault_names,
    fresh_id,
    health_checks,
    impostor_key,
    open_channel,
    run_phases,
    safe,
    serving_within,
    timed,
)
from onecert.sdk.conformance._report import Report
from onecert.v1 import common_pb2, provider_pb2, provider_pb2_grpc

SERVICE = "onecert.v1.BindingProvider"
CONTRACT_VERSION = "onecert.v1"
_PROVIDER_ID = re.compile(r"[a-z0-9._-]{1,64}")
# A binding may not claim to be bound further in the future than clock skew explains.
_FUTURE_SKEW = 300.0

# Notices the provider must refuse (UNAUTHENTICATED), by check name.
_SET_FAULTS = {
    "wrong_key_same_kid": "signed by another key under the gateway's kid",
    "unknown_kid": "signed by a key the provider does not know",
    "wrong_issuer": "issued by another issuer",
    "wrong_audience": "addressed to another provider",
}

# Malformed msisdns: each breaks one E.164 rule. None of them is a real number.
MALFORMED_MSISDNS = (
    ("empty", ""),
    ("no leading '+'", "8613800000000"),
    ("spaces", "+86 138 0000 0000"),
    ("dashes", "+86-138-0000-0000"),
    ("leading zero", "+0138000000000"),
    ("too short", "+1380000"),
    ("too long", "+1380000000000000"),
    ("a letter", "+86138000O0000"),
    ("a URI", "tel:+8613800000000"),
)


async def check_provider(
    *,
    target: str,
    warrant_key: SigningKey,
    issuer: str = "onecert-gateway",
    provider_id: str | None = None,
    known_numbers: Sequence[str] = (),
    unknown_number: str | None = None,
    unbind: tuple[str, str] | None = None,
    tls: ClientTLS | None = None,
    call_timeout: float = 5.0,
    short_deadline: float = 0.5,
    slack: float = 1.0,
    concurrency: int = 8,
) -> Report:
    """Play the gateway against the BindingProvider at ``target`` and report.

    Only gRPC and the generated stubs are used, so the target may be written
    in any language. Unbinds are sent only for the ``unbind`` account and for
    account refs that cannot exist.

    Args:
        target: "host:port" of the provider.
        warrant_key: the key the provider trusts as the gateway's (its kid
            must be in the provider's JWKS).
        issuer: the gateway id the provider expects as ``iss``.
        provider_id: the provider's id (the warrant audience); taken from
            Describe when not given, checked against it when given.
        known_numbers: E.164 numbers with at least one binding each.
        unknown_number: an E.164 number with no binding; a random one under
            the unassigned +999 prefix when not given.
        unbind: (msisdn, account_ref) of a test account the provider may
            really unbind, for the idempotency checks; skipped without it.
        tls: how to reach the target over TLS; plaintext when None.
        call_timeout: deadline of each ordinary call, in seconds.
        short_deadline: the deadline of the short-deadline check.
        slack: how late past a deadline a call may end, in seconds.
        concurrency: at most this many checks at once.

    Raises:
        ValueError: an argument is malformed (a number not E.164, ...).
    """
    for number in known_numbers:
        if not is_e164(number):
            raise ValueError("every known number must be E.164 ('+' then 8 to 15 digits)")
    if unknown_number is None:
        unknown_number = _random_unknown_number(known_numbers)
    elif not is_e164(unknown_number) or unknown_number in known_numbers:
        raise ValueError("the unknown number must be E.164 and not one of the known numbers")
    if unbind is not None and (not is_e164(unbind[0]) or not unbind[1]):
        raise ValueError("unbind needs an E.164 number and a non-empty account ref")
    if provider_id is not None and not provider_id:
        raise ValueError("provider_id must not be empty")
    timing = Timing(call_timeout=call_timeout, short_deadline=short_deadline, slack=slack)
    async with open_channel(target, tls) as channel:
        suite = _ProviderSuite(
            channel=channel,
            timing=timing,
            warrant_key=warrant_key,
            issuer=issuer,
            provider_id=provider_id,
            known_numbers=tuple(known_numbers),
            unknown_number=unknown_number,
            unbind=unbind,
        )
        results = await run_phases(suite.phases(), timing=timing, concurrency=concurrency)
    return Report(kind="provider", target=target, results=tuple(results))


def _random_unknown_number(known: Sequence[str]) -> str:
    # +999 is not an assigned country code, so no provider holds such a number.
    while True:
        number = "+999" + "".join(str(secrets.randbelow(10)) for _ in range(9))
        if number not in known:
            return number


class _ProviderSuite:
    def __init__(
        self,
        *,
        channel: grpc.aio.Channel,
        timing: Timing,
        warrant_key: SigningKey,
        issuer: str,
        provider_id: str | None,
        known_numbers: tuple[str, ...],
        unknown_number: str,
        unbind: tuple[str, str] | None,
    ) -> None:
        self._channel = channel
        self._stub = provider_pb2_grpc.BindingProviderStub(channel)
        self._timing = timing
        self._key = warrant_key
        self._warrants = WarrantIssuer(key=warrant_key, issuer=issuer)
        self._issuer = issuer
        self._given_id = provider_id
        self._described: provider_pb2.DescribeResponse | None = None
        self._known = known_numbers
        self._unknown = unknown_number
        self._unbind = unbind
        self._first_unbind: provider_pb2.UnbindResponse | None = None
        self._bad: dict[str, BadWarrant] | None = None
        # Calls whose only fault should be the one under test use a known
        # number: an adapter that skips the warrant check for numbers it has
        # no data on would pass with an unknown one.
        self._probe_number = known_numbers[0] if known_numbers else unknown_number

    # ------------------------------------------------------------ plumbing

    @property
    def _audience(self) -> str:
        if self._given_id:
            return self._given_id
        if self._described is not None and _PROVIDER_ID.fullmatch(self._described.provider_id):
            return self._described.provider_id
        raise CheckSkippedError(
            "no provider id to address warrants to: Describe gave no valid id "
            "and no provider id was given"
        )

    def _warrant(self, target: str) -> Metadata:
        token = self._warrants.issue(
            audience=self._audience, target=target, purpose=PURPOSE, query_id=fresh_id("conf")
        )
        return bearer(token)

    def _list(
        self, msisdn: str, metadata: Metadata, timeout: float | None = None
    ) -> Awaitable[provider_pb2.ListBindingsResponse]:
        return self._stub.ListBindings(
            provider_pb2.ListBindingsRequest(msisdn=msisdn),
            metadata=metadata,
            timeout=timeout or self._timing.call_timeout,
        )

    def _unbind_call(
        self, request: provider_pb2.UnbindRequest, metadata: Metadata
    ) -> Awaitable[provider_pb2.UnbindResponse]:
        return self._stub.Unbind(request, metadata=metadata, timeout=self._timing.call_timeout)

    def _missing_account(self, msisdn: str | None = None) -> provider_pb2.UnbindRequest:
        # An account ref no provider can have: a broken adapter that accepts
        # a bad warrant still changes nothing.
        return provider_pb2.UnbindRequest(
            request_id=fresh_id("conformance"),
            msisdn=msisdn or self._probe_number,
            account_ref=fresh_id("onecert-conformance-no-such-account"),
            reason=common_pb2.UNBIND_REASON_OWNER_REQUEST,
        )

    def _faults(self) -> dict[str, BadWarrant]:
        # Built on first use, once Describe has told the audience.
        if self._bad is None:
            self._bad = bad_warrants(
                key=self._key,
                issuer=self._issuer,
                audience=self._audience,
                other_target=self._unknown,
                target_label="number",
            )
        return self._bad

    # -------------------------------------------------------------- checks

    def phases(self) -> list[list[Check]]:
        """The checks in phases: each phase runs after the previous one ended."""
        first = [
            *health_checks(self._channel, service=SERVICE, timing=self._timing),
            Check("describe.complete", self._describe_complete),
        ]
        reads = [Check("describe.provider_id", self._describe_provider_id, calls=0)]
        reads += [
            Check(f"list_bindings.known_number[{i}]", self._known_number(number))
            for i, number in enumerate(self._known, start=1)
        ]
        if not self._known:
            reads.append(Check("list_bindings.known_number", self._no_known_numbers, calls=0))
        reads += [
            Check("list_bindings.unknown_number", self._unknown_number),
            Check("list_bindings.malformed_msisdn", self._malformed_msisdn),
        ]
        faults = fault_names("number")
        reads += [Check(f"list_bindings.warrant.{f}", self._refused_list(f)) for f in faults]
        reads += [Check(f"unbind.warrant.{f}", self._refused_unbind(f)) for f in faults]
        reads += [
            Check("unbind.unknown_account", self._unknown_account),
            Check("unbind.malformed_request", self._malformed_unbind),
            Check("receive_event.valid", self._event_valid),
            *(Check(f"receive_event.{f}", self._event_refused(f)) for f in _SET_FAULTS),
            Check("receive_event.not_a_set", self._event_not_a_set),
        ]
        # The only check that changes the provider's data runs after every
        # read, so the reads see the data as it was.
        writes = [Check("unbind.idempotent", self._idempotent, calls=2)]
        after = [Check("unbind.applied", self._applied)]
        # Alone at the end, so nothing else the kit does slows the target down.
        deadline = [Check("deadline.short", self._short_deadline, calls=2)]
        return [first, reads, writes, after, deadline]

    async def _describe_complete(self) -> str:
        response: provider_pb2.DescribeResponse = await expect_ok(
            self._stub.Describe(provider_pb2.DescribeRequest(), timeout=self._timing.call_timeout),
            what="Describe (without a warrant)",
        )
        self._described = response
        problems = []
        if not _PROVIDER_ID.fullmatch(response.provider_id):
            problems.append("provider_id must be 1 to 64 characters of [a-z0-9._-]")
        if not response.name.strip():
            problems.append("name is empty")
        if response.category not in common_pb2.ProviderCategory.values() or (
            response.category == common_pb2.PROVIDER_CATEGORY_UNSPECIFIED
        ):
            problems.append("category is not set")
        if response.contract_version != CONTRACT_VERSION:
            problems.append(
                f"contract_version is {response.contract_version!r}, not {CONTRACT_VERSION!r}"
            )
        if problems:
            raise CheckFailedError("; ".join(problems))
        category = common_pb2.ProviderCategory.Name(response.category).removeprefix(
            "PROVIDER_CATEGORY_"
        )
        implementation = response.implementation or "no implementation string"
        return f"{response.provider_id}: {response.name!r}, {category}, {implementation}"

    async def _describe_provider_id(self) -> str:
        if self._given_id is None:
            raise CheckSkippedError("no provider id given to compare with")
        if self._described is None:
            raise CheckSkippedError("Describe failed (see describe.complete)")
        if self._described.provider_id != self._given_id:
            raise CheckFailedError(
                f"Describe says {self._described.provider_id!r}, expected {self._given_id!r}"
            )
        return self._given_id

    async def _no_known_numbers(self) -> str:
        raise CheckSkippedError("no known number given")

    def _known_number(self, msisdn: str) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            label = mask_msisdn(msisdn)
            response: provider_pb2.ListBindingsResponse = await expect_ok(
                self._list(msisdn, self._warrant(msisdn)), what=f"ListBindings {label}"
            )
            if not response.bindings:
                raise CheckFailedError(
                    f"{label}: no bindings listed for a number said to have some"
                )
            problems = []
            now = time.time()
            for i, binding in enumerate(response.bindings, start=1):
                problems += [f"binding {i}: {p}" for p in _binding_problems(binding, now)]
            if problems:
                raise CheckFailedError(f"{label}: " + "; ".join(problems))
            count = len(response.bindings)
            return f"{label}: {count} binding{'s' if count > 1 else ''}, complete"

        return check

    async def _unknown_number(self) -> str:
        label = mask_msisdn(self._unknown)
        try:
            response = await self._list(self._unknown, self._warrant(self._unknown))
        except grpc.aio.AioRpcError as exc:
            raise CheckFailedError(
                f"{label}: answered {describe_error(exc)}; an unknown number must be "
                "an empty list, not an error"
            ) from exc
        if response.bindings:
            raise CheckFailedError(
                f"{label}: listed {len(response.bindings)} bindings for a number meant to be "
                "unknown (choose another unknown number)"
            )
        return f"{label}: empty list"

    async def _malformed_msisdn(self) -> str:
        async def one(what: str, msisdn: str) -> str | None:
            # The warrant names exactly the malformed value, so the only
            # thing wrong with the call is the number itself.
            call = self._list(msisdn, self._warrant(msisdn))
            try:
                exc = await expect_code(call, grpc.StatusCode.INVALID_ARGUMENT, what=what)
            except CheckFailedError as failure:
                return str(failure)
            digits = re.sub(r"\D", "", msisdn)
            if digits and digits in re.sub(r"\D", "", exc.details() or ""):
                return f"{what}: the error message repeats the number"
            return None

        found = await asyncio.gather(*(one(what, value) for what, value in MALFORMED_MSISDNS))
        problems = [p for p in found if p]
        if problems:
            raise CheckFailedError("; ".join(problems))
        return f"INVALID_ARGUMENT for all {len(MALFORMED_MSISDNS)} malformed forms"

    def _refused_list(self, fault: str) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            bad = self._faults()[fault]
            call = self._list(self._probe_number, bad.metadata(self._probe_number))
            await expect_code(
                call, grpc.StatusCode.UNAUTHENTICATED, what=f"ListBindings, warrant {bad.what}"
            )
            return "UNAUTHENTICATED"

        return check

    def _refused_unbind(self, fault: str) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            bad = self._faults()[fault]
            request = self._missing_account()
            call = self._unbind_call(request, bad.metadata(request.msisdn))
            await expect_code(
                call, grpc.StatusCode.UNAUTHENTICATED, what=f"Unbind, warrant {bad.what}"
            )
            return "UNAUTHENTICATED"

        return check

    async def _unknown_account(self) -> str:
        request = self._missing_account()
        try:
            response = await self._unbind_call(request, self._warrant(request.msisdn))
        except grpc.aio.AioRpcError as exc:
            raise CheckFailedError(
                f"answered {describe_error(exc)}; an unknown account must be answered "
                "REJECTED, not an error"
            ) from exc
        if response.outcome != common_pb2.UNBIND_OUTCOME_REJECTED:
            raise CheckFailedError(f"answered {_outcome(response)}; expected REJECTED")
        if not response.reason.strip():
            raise CheckFailedError("answered REJECTED without a reason")
        return f"REJECTED ({safe(response.reason)})"

    async def _malformed_unbind(self) -> str:
        # Each request is valid but for one field.
        no_id, long_id, no_account, no_reason, bad_number = (
            self._missing_account() for _ in range(5)
        )
        no_id.request_id = ""
        long_id.request_id = "r" * 129
        no_account.account_ref = ""
        no_reason.reason = common_pb2.UNBIND_REASON_UNSPECIFIED
        bad_number.msisdn = "8613800000000"
        cases = (
            ("no request_id", no_id),
            ("a request_id over 128 characters", long_id),
            ("no account_ref", no_account),
            ("no reason", no_reason),
            ("an msisdn not E.164", bad_number),
        )

        async def one(what: str, req: provider_pb2.UnbindRequest) -> str | None:
            call = self._unbind_call(req, self._warrant(req.msisdn))
            try:
                await expect_code(
                    call, grpc.StatusCode.INVALID_ARGUMENT, what=f"Unbind with {what}"
                )
            except CheckFailedError as failure:
                return str(failure)
            return None

        found = await asyncio.gather(*(one(what, req) for what, req in cases))
        problems = [p for p in found if p]
        if problems:
            raise CheckFailedError("; ".join(problems))
        return f"INVALID_ARGUMENT for all {len(cases)} malformed requests"

    async def _idempotent(self) -> str:
        if self._unbind is None:
            raise CheckSkippedError(
                "needs a test account the provider may unbind (--unbind NUMBER:ACCOUNT_REF)"
            )
        msisdn, account_ref = self._unbind
        request = provider_pb2.UnbindRequest(
            request_id=fresh_id("conformance-idempotency"),
            msisdn=msisdn,
            account_ref=account_ref,
            reason=common_pb2.UNBIND_REASON_OWNER_REQUEST,
        )
        first: provider_pb2.UnbindResponse = await expect_ok(
            self._unbind_call(request, self._warrant(msisdn)), what="first Unbind"
        )
        self._first_unbind = first
        if first.outcome not in (
            common_pb2.UNBIND_OUTCOME_DONE,
            common_pb2.UNBIND_OUTCOME_PENDING,
            common_pb2.UNBIND_OUTCOME_REJECTED,
        ):
            raise CheckFailedError(f"first Unbind answered {_outcome(first)}")
        second: provider_pb2.UnbindResponse = await expect_ok(
            self._unbind_call(request, self._warrant(msisdn)),
            what="the same Unbind again (same request_id)",
        )
        if first.outcome == common_pb2.UNBIND_OUTCOME_PENDING:
            # A pending unbind may have finished by the second delivery.
            return f"first PENDING, then {_outcome(second)}"
        if second != first:
            raise CheckFailedError(
                f"the same request_id was answered differently: first {_answer(first)}, "
                f"then {_answer(second)}"
            )
        return f"{_outcome(first)} twice, identical answers"

    async def _applied(self) -> str:
        if self._unbind is None:
            raise CheckSkippedError("needs --unbind NUMBER:ACCOUNT_REF")
        first = self._first_unbind
        if first is None:
            raise CheckSkippedError("the unbind did not run (see unbind.idempotent)")
        if first.outcome != common_pb2.UNBIND_OUTCOME_DONE:
            raise CheckSkippedError(f"the unbind was answered {_outcome(first)}, not DONE")
        msisdn, account_ref = self._unbind
        response: provider_pb2.ListBindingsResponse = await expect_ok(
            self._list(msisdn, self._warrant(msisdn)), what="ListBindings after the unbind"
        )
        if any(b.account_ref == account_ref for b in response.bindings):
            raise CheckFailedError("the account is still listed after Unbind answered DONE")
        return "the account is no longer listed"

    def _receive(self, token: str) -> Awaitable[provider_pb2.ReceiveEventResponse]:
        # A SET carries its own signature: no warrant goes with it.
        return self._stub.ReceiveEvent(
            provider_pb2.ReceiveEventRequest(set=token), timeout=self._timing.call_timeout
        )

    def _notice(self, *, key: SigningKey | None = None, **overrides: str) -> str:
        # The notice is about the unknown number: a provider that acts on it
        # has nothing to remove.
        issuer = SetIssuer(key=key or self._key, issuer=overrides.get("issuer", self._issuer))
        return issuer.issue(
            audience=overrides.get("audience", self._audience),
            msisdn=self._unknown,
            recycled_at=dt.datetime.now(dt.UTC),
            jti=fresh_id("conformance-notice"),
        )

    async def _event_valid(self) -> str:
        response: provider_pb2.ReceiveEventResponse = await expect_ok(
            self._receive(self._notice()), what="ReceiveEvent with a valid notice"
        )
        if not response.acknowledged:
            raise CheckFailedError("a valid notice was answered without acknowledged = true")
        return "acknowledged"

    def _event_refused(self, fault: str) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            if fault == "wrong_key_same_kid":
                token = self._notice(key=impostor_key(self._key))
            elif fault == "unknown_kid":
                token = self._notice(key=SigningKey.generate(self._key.alg))
            elif fault == "wrong_issuer":
                token = self._notice(issuer=f"{self._issuer}-other")
            else:
                token = self._notice(audience=f"{self._audience}-other")
            await expect_code(
                self._receive(token),
                grpc.StatusCode.UNAUTHENTICATED,
                what=f"ReceiveEvent, notice {_SET_FAULTS[fault]}",
            )
            return "UNAUTHENTICATED"

        return check

    async def _event_not_a_set(self) -> str:
        await expect_code(
            self._receive("not-a-security-event-token"),
            grpc.StatusCode.INVALID_ARGUMENT,
            what="ReceiveEvent with a token that is not a JWT",
        )
        return "INVALID_ARGUMENT"

    async def _short_deadline(self) -> str:
        deadline = self._timing.short_deadline
        msisdn = self._probe_number
        code, elapsed = await timed(self._list(msisdn, self._warrant(msisdn), timeout=deadline))
        if elapsed > deadline + self._timing.slack:
            raise CheckFailedError(f"a call with a {deadline:.2f} s deadline took {elapsed:.2f} s")
        if code not in (
            grpc.StatusCode.OK,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNAVAILABLE,
        ):
            raise CheckFailedError(f"a call with a {deadline:.2f} s deadline answered {code.name}")
        # An adapter that keeps working on an abandoned call (a blocking
        # handler, a worker pool tied up) shows it here.
        if not await serving_within(self._channel, self._timing.slack):
            raise CheckFailedError(
                f"the call ended ({code.name}) after {elapsed:.2f} s, but then a health check "
                f"got no answer within {self._timing.slack:.2f} s: the adapter is still busy "
                "with a call past its deadline"
            )
        return f"{code.name} after {elapsed:.2f} s (deadline {deadline:.2f} s), still responsive"


def _binding_problems(binding: provider_pb2.Binding, now: float) -> list[str]:
    problems = []
    if not binding.account_ref:
        problems.append("no account_ref")
    elif len(binding.account_ref) > 256:
        problems.append("account_ref longer than 256 characters")
    if binding.kind == common_pb2.BINDING_KIND_UNSPECIFIED or (
        binding.kind not in common_pb2.BindingKind.values()
    ):
        problems.append("kind not set")
    # An exact time, or at least the lower bound of an interval: without
    # either the gateway cannot tell whose account it is.
    if not binding.HasField("bound_at") and not binding.HasField("bound_not_before"):
        problems.append("no bound_at or bound_not_before")
    stamps = {
        name: float(getattr(binding, name).ToSeconds())
        for name in ("bound_at", "bound_not_before", "bound_not_after")
        if binding.HasField(name)
    }
    problems.extend(
        f"{name} is in the future"
        for name in ("bound_at", "bound_not_before")
        if stamps.get(name, 0.0) > now + _FUTURE_SKEW
    )
    low, high = stamps.get("bound_not_before"), stamps.get("bound_not_after")
    exact = stamps.get("bound_at")
    if low is not None and high is not None and high < low:
        problems.append("bound_not_after is before bound_not_before")
    elif exact is not None and (
        (low is not None and exact < low) or (high is not None and exact > high)
    ):
        problems.append("bound_at lies outside bound_not_before..bound_not_after")
    return problems


def _outcome(response: provider_pb2.UnbindResponse) -> str:
    if response.outcome in common_pb2.UnbindOutcome.values():
        return common_pb2.UnbindOutcome.Name(response.outcome).removeprefix("UNBIND_OUTCOME_")
    return f"outcome {response.outcome}"


def _answer(response: provider_pb2.UnbindResponse) -> str:
    parts = [_outcome(response)]
    if response.reason:
        parts.append(repr(safe(response.reason)))
    if response.HasField("decided_at"):
        parts.append(f"decided_at {response.decided_at.ToJsonString()}")
    return " ".join(parts)
