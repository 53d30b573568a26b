"""Conformance checks for a BindingProvider, played as the gateway over gRPC."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import grpc

from onecert.sdk._keys import SigningKey
from onecert.sdk._msisdn import is_e164, mask_msisdn
from onecert.sdk._set import RISC_IDENTIFIER_RECYCLED
from onecert.sdk._tls import ClientTLS
from onecert.sdk._warrant import PURPOSE_LOOKUP, PURPOSE_UNBIND, WARRANT_TYP
from onecert.sdk.conformance._batch import BATCH_RULES, batch_checks
from onecert.sdk.conformance._common import (
    Check,
    CheckFailedError,
    CheckSkippedError,
    Metadata,
    Timing,
    bearer,
    deadline_checks,
    describe_error,
    expect_code,
    expect_empty_list,
    expect_invalid_all,
    expect_ok,
    fresh_id,
    health_checks,
    known_and_unknown,
    run_suite,
    safe,
    warrant_check_names,
    warrant_checks,
)
from onecert.sdk.conformance._report import Report
from onecert.sdk.conformance._tokens import Forge, Signer
from onecert.v1 import common_pb2, provider_pb2, provider_pb2_grpc

SERVICE = "onecert.v1.BindingProvider"
CONTRACT_VERSION = "onecert.v1"
_PROVIDER_ID = re.compile(r"[a-z0-9._-]{1,64}")
# A date may not lie further in the future than clock skew explains (L-4).
_FUTURE_SKEW = 300.0
# How many duplicates of one unbind the kit sends at once (U-5).
_DUPLICATES = 3

# Malformed msisdns: each breaks one E.164 rule (F-1). None is a real number.
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


@dataclass(frozen=True)
class _NoticeCase:
    """A notice the provider must answer with ``code`` (OK: acknowledge it)."""

    rule: str
    name: str
    what: str
    token: Callable[[Forge, str], str]
    code: grpc.StatusCode


def _now() -> int:
    return int(time.time())


_INVALID = grpc.StatusCode.INVALID_ARGUMENT
_UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
_OTHER_EVENT = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"

# Every notice rule, as a table (docs/contract.md E-2 to E-9): a token that is
# not a SET is INVALID_ARGUMENT, a SET that cannot be trusted UNAUTHENTICATED.
NOTICE_CASES: tuple[_NoticeCase, ...] = (
    _NoticeCase(
        "E-2", "not_a_jws", "a token that is not a JWS", lambda f, m: "not-a-set", _INVALID
    ),
    _NoticeCase(
        "E-3",
        "warrant_typ",
        "of type onecert-warrant+jwt",
        lambda f, m: f.notice(m, typ=WARRANT_TYP),
        _INVALID,
    ),
    _NoticeCase(
        "E-3", "no_typ", "without typ", lambda f, m: f.notice(m, drop_header=["typ"]), _INVALID
    ),
    _NoticeCase(
        "E-4",
        "wrong_key_same_kid",
        "signed by another key under the gateway's kid",
        lambda f, m: f.notice(m, signer=Signer(key=f.impostor)),
        _UNAUTHENTICATED,
    ),
    _NoticeCase(
        "E-4",
        "unknown_kid",
        "signed by a key the provider does not know",
        lambda f, m: f.notice(m, signer=Signer(key=f.stranger)),
        _UNAUTHENTICATED,
    ),
    _NoticeCase(
        "E-4",
        "no_kid",
        "without kid",
        lambda f, m: f.notice(m, drop_header=["kid"]),
        _UNAUTHENTICATED,
    ),
    _NoticeCase(
        "E-4",
        "alg_none",
        "unsigned (alg none)",
        lambda f, m: f.notice(m, signer=Signer("none")),
        _UNAUTHENTICATED,
    ),
    _NoticeCase(
        "E-4",
        "hs256_public_key",
        "HS256 keyed with the gateway's public key",
        lambda f, m: f.notice(m, signer=Signer("hs256")),
        _UNAUTHENTICATED,
    ),
    _NoticeCase(
        "E-5",
        "wrong_issuer",
        "issued by another issuer",
        lambda f, m: f.notice(m, change={"iss": f"{f.issuer}-other"}),
        _UNAUTHENTICATED,
    ),
    _NoticeCase(
        "E-6",
        "wrong_audience",
        "addressed to another provider",
        lambda f, m: f.notice(m, change={"aud": f"{f.audience}-other"}),
        _UNAUTHENTICATED,
    ),
    _NoticeCase(
        "E-7",
        "other_event_type",
        "carrying another RISC event",
        lambda f, m: f.notice(
            m,
            change={"events": {_OTHER_EVENT: f.set_claims(m)["events"][RISC_IDENTIFIER_RECYCLED]}},
        ),
        _INVALID,
    ),
    _NoticeCase(
        "E-7",
        "two_events",
        "carrying two events",
        lambda f, m: f.notice(
            m,
            change={
                "events": {
                    **f.set_claims(m)["events"],
                    _OTHER_EVENT: f.set_claims(m)["events"][RISC_IDENTIFIER_RECYCLED],
                }
            },
        ),
        _INVALID,
    ),
    _NoticeCase(
        "E-7",
        "subject_not_a_phone",
        "whose subject is an email address",
        lambda f, m: f.notice(
            m,
            change={
                "events": {
                    RISC_IDENTIFIER_RECYCLED: {
                        "subject": {"format": "email", "email": "someone@example.com"}
                    }
                }
            },
        ),
        _INVALID,
    ),
    _NoticeCase("E-8", "no_toe", "without toe", lambda f, m: f.notice(m, drop=["toe"]), _INVALID),
    _NoticeCase("E-8", "no_jti", "without jti", lambda f, m: f.notice(m, drop=["jti"]), _INVALID),
    _NoticeCase(
        "E-9",
        "old",
        "issued an hour ago",
        lambda f, m: f.notice(m, change={"iat": _now() - 3600}),
        _UNAUTHENTICATED,
    ),
    _NoticeCase(
        "E-9",
        "expired",
        "whose exp passed 60 s ago",
        lambda f, m: f.notice(m, change={"iat": _now() - 100, "exp": _now() - 60}),
        _UNAUTHENTICATED,
    ),
    _NoticeCase(
        "E-9",
        "iat_future",
        "issued 60 s in the future",
        lambda f, m: f.notice(m, change={"iat": _now() + 60}),
        _UNAUTHENTICATED,
    ),
)

# Every check of a provider run, (rule, name), in report order: what
# `onecert conformance provider --list` prints.
PROVIDER_CHECKS: tuple[tuple[str, str], ...] = (
    ("H-1", "health.overall"),
    ("H-2", "health.service"),
    ("P-1", "describe.complete"),
    ("P-2", "describe.provider_id"),
    ("L-1", "list_bindings.known_numbers"),
    ("L-2", "list_bindings.unknown_number"),
    ("L-3", "list_bindings.malformed_msisdn"),
    ("L-4", "list_bindings.dates"),
    *warrant_check_names("list_bindings"),
    *warrant_check_names("unbind"),
    ("U-1", "unbind.malformed_request"),
    ("U-2", "unbind.unknown_account"),
    ("U-3", "unbind.reason_private"),
    ("E-1", "receive_event.valid"),
    *((c.rule, f"receive_event.{c.name}") for c in NOTICE_CASES),
    ("E-10", "receive_event.redelivered"),
    *BATCH_RULES,
    ("U-5", "unbind.concurrent_duplicates"),
    ("U-4", "unbind.idempotent"),
    ("U-6", "unbind.request_id_reused"),
    ("U-7", "unbind.applied"),
    ("D-1", "deadline.short"),
    ("D-2", "deadline.abandoned"),
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
            really unbind, for the idempotency checks (U-4 to U-7); skipped
            without it.
        tls: how to reach the target over TLS; plaintext when None.
        call_timeout: deadline of each ordinary call, in seconds.
        short_deadline: the deadline of the short-deadline check.
        slack: how late past a deadline a call may end, in seconds.
        concurrency: at most this many checks at once.

    Raises:
        ValueError: an argument is malformed (a number not E.164, ...).
    """
    known, unknown = known_and_unknown(
        known_numbers,
        unknown_number,
        valid=is_e164,
        rule="number must be E.164 ('+' then 8 to 15 digits)",
        # +999 is not an assigned country code, so no provider holds such a number.
        fresh=lambda: "+999" + "".join(str(secrets.randbelow(10)) for _ in range(9)),
    )
    if unbind is not None and (not is_e164(unbind[0]) or not unbind[1]):
        raise ValueError("unbind needs an E.164 number and a non-empty account ref")
    if provider_id is not None and not provider_id:
        raise ValueError("provider_id must not be empty")
    timing = Timing(call_timeout=call_timeout, short_deadline=short_deadline, slack=slack)
    return await run_suite(
        "provider",
        lambda channel: _ProviderSuite(
            channel=channel,
            timing=timing,
            warrant_key=warrant_key,
            issuer=issuer,
            provider_id=provider_id,
            known_numbers=known,
            unknown_number=unknown,
            unbind=unbind,
        ),
        catalogue=PROVIDER_CHECKS,
        target=target,
        tls=tls,
        timing=timing,
        concurrency=concurrency,
    )


class _ProviderCalls:
    """How the suite calls the adapter under test: stubs, warrants, test requests."""

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
        self._issuer = issuer
        self._given_id = provider_id
        self._described: provider_pb2.DescribeResponse | None = None
        self._known = known_numbers
        self._unknown = unknown_number
        self._unbind = unbind
        self._first_unbind: provider_pb2.UnbindResponse | None = None
        self._unbind_request: provider_pb2.UnbindRequest | None = None
        self._forge: Forge | None = None
        # Calls whose only fault should be the one under test use a known
        # number: an adapter that skips the warrant check for numbers it has
        # no data on would pass with an unknown one.
        self._probe_number = known_numbers[0] if known_numbers else unknown_number

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

    def _tokens(self) -> Forge:
        # Built on first use, once Describe has told the audience.
        if self._forge is None:
            self._forge = Forge(key=self._key, issuer=self._issuer, audience=self._audience)
        return self._forge

    def _warrant(self, target: str, purpose: str = PURPOSE_LOOKUP) -> Metadata:
        return bearer(self._tokens().warrant(target, purpose))

    def _list(
        self, msisdn: str, metadata: Metadata, timeout: float | None = None
    ) -> Awaitable[provider_pb2.ListBindingsResponse]:
        return self._stub.ListBindings(
            provider_pb2.ListBindingsRequest(msisdn=msisdn),
            metadata=metadata,
            timeout=timeout or self._timing.call_timeout,
        )

    def _unbind_call(
        self, request: provider_pb2.UnbindRequest, metadata: Metadata | None = None
    ) -> Awaitable[provider_pb2.UnbindResponse]:
        if metadata is None:
            metadata = self._warrant(request.msisdn, PURPOSE_UNBIND)
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


class _ProviderSuite(_ProviderCalls):
    """What the suite checks, rule by rule, over :class:`_ProviderCalls`."""

    def phases(self) -> list[list[Check]]:
        """The checks in phases: each phase runs after the previous one ended."""
        first = [
            *health_checks(self._channel, service=SERVICE, timing=self._timing),
            Check("P-1", "describe.complete", self._describe_complete),
        ]
        reads = [
            Check("P-2", "describe.provider_id", self._describe_provider_id, calls=0),
            Check("L-1", "list_bindings.known_numbers", self._known_numbers),
            Check("L-2", "list_bindings.unknown_number", self._unknown_number),
            Check("L-3", "list_bindings.malformed_msisdn", self._malformed_msisdn),
            Check("L-4", "list_bindings.dates", self._dates),
            *warrant_checks(
                rpc="list_bindings",
                forge=self._tokens,
                call=lambda metadata: self._list(self._probe_number, metadata),
                target=self._probe_number,
                purpose=PURPOSE_LOOKUP,
            ),
            *warrant_checks(
                rpc="unbind",
                forge=self._tokens,
                # A fresh request each time, for an account that cannot exist.
                call=lambda metadata: self._unbind_call(self._missing_account(), metadata),
                target=self._probe_number,
                purpose=PURPOSE_UNBIND,
            ),
            Check("U-1", "unbind.malformed_request", self._malformed_unbind),
            Check("U-2", "unbind.unknown_account", self._unknown_account),
            Check("U-3", "unbind.reason_private", self._reason_private),
            Check("E-1", "receive_event.valid", self._event_valid),
            *(Check(c.rule, f"receive_event.{c.name}", self._notice_case(c)) for c in NOTICE_CASES),
            Check("E-10", "receive_event.redelivered", self._event_redelivered, calls=2),
            *batch_checks(
                self._stub,
                lambda: self._tokens().notice(self._unknown),
                self._timing.call_timeout,
            ),
        ]
        # The checks that change the provider's data run after every read,
        # so the reads see the data as it was.
        writes = [Check("U-5", "unbind.concurrent_duplicates", self._concurrent)]
        again = [
            Check("U-4", "unbind.idempotent", self._idempotent),
            Check("U-6", "unbind.request_id_reused", self._request_id_reused),
        ]
        after = [Check("U-7", "unbind.applied", self._applied)]
        # Alone at the end, each in its own phase, so nothing else the kit
        # does slows the target down.
        short, abandoned = deadline_checks(
            self._channel,
            call=lambda timeout: self._list(
                self._probe_number, self._warrant(self._probe_number), timeout=timeout
            ),
            timing=self._timing,
        )
        return [first, reads, writes, again, after, [short], [abandoned]]

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

    async def _known_numbers(self) -> str:
        if not self._known:
            raise CheckSkippedError("no known number given")

        async def one(msisdn: str) -> tuple[str, int, list[str]]:
            label = mask_msisdn(msisdn)
            response: provider_pb2.ListBindingsResponse = await expect_ok(
                self._list(msisdn, self._warrant(msisdn)), what=f"ListBindings {label}"
            )
            if not response.bindings:
                return label, 0, ["no bindings listed for a number said to have some"]
            problems = []
            for i, binding in enumerate(response.bindings, start=1):
                problems += [f"binding {i}: {p}" for p in _binding_problems(binding)]
            return label, len(response.bindings), problems

        found = await asyncio.gather(*(one(m) for m in self._known))
        problems = [f"{label}: {p}" for label, _, ps in found for p in ps]
        if problems:
            raise CheckFailedError("; ".join(problems))
        total = sum(count for _, count, _ in found)
        return f"{total} complete bindings on {len(found)} numbers"

    async def _dates(self) -> str:
        if not self._known:
            raise CheckSkippedError("no known number given")
        now = time.time()
        undated = 0
        problems = []
        for msisdn in self._known:
            label = mask_msisdn(msisdn)
            response: provider_pb2.ListBindingsResponse = await expect_ok(
                self._list(msisdn, self._warrant(msisdn)), what=f"ListBindings {label}"
            )
            for i, binding in enumerate(response.bindings, start=1):
                found, dated = _date_problems(binding, now)
                problems += [f"{label}: binding {i}: {p}" for p in found]
                undated += not dated
        if problems:
            raise CheckFailedError("; ".join(problems))
        if undated:
            # A SHOULD, not a MUST (L-4): said, not failed.
            return (
                f"dates consistent; {undated} binding(s) carry neither bound_at nor "
                "bound_not_before, so the gateway hides their details"
            )
        return "dates consistent; every binding is dated"

    async def _unknown_number(self) -> str:
        label = mask_msisdn(self._unknown)
        await expect_empty_list(
            self._list(self._unknown, self._warrant(self._unknown)),
            lambda response: response.bindings,
            unknown=f"{label} (a number meant to be unknown)",
            listed="bindings",
        )
        return f"{label}: empty list"

    async def _malformed_msisdn(self) -> str:
        def repeated(what: str, msisdn: str, exc: grpc.aio.AioRpcError) -> str | None:
            digits = re.sub(r"\D", "", msisdn)
            if digits and digits in re.sub(r"\D", "", exc.details() or ""):
                return f"{what}: the error message repeats the number"
            return None

        # The warrant names exactly the malformed value, so the only thing
        # wrong with the call is the number itself.
        count = await expect_invalid_all(
            MALFORMED_MSISDNS,
            lambda msisdn: self._list(msisdn, self._warrant(msisdn)),
            what="",
            also=repeated,
        )
        return f"INVALID_ARGUMENT for all {count} malformed forms"

    async def _unknown_account(self) -> str:
        request = self._missing_account()
        try:
            response = await self._unbind_call(request)
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

    async def _reason_private(self) -> str:
        request = self._missing_account()
        response: provider_pb2.UnbindResponse = await expect_ok(
            self._unbind_call(request), what="Unbind of an unknown account"
        )
        digits = re.sub(r"\D", "", response.reason)
        # The subscriber part: the number as written nationally or with a
        # country code, spaced or not.
        if request.msisdn[-8:] in digits:
            raise CheckFailedError("the REJECTED reason contains the phone number")
        if request.account_ref in response.reason:
            raise CheckFailedError("the REJECTED reason repeats the account ref")
        return "the reason names no number and no account"

    async def _malformed_unbind(self) -> str:
        # Each request is valid but for one field.
        no_id, long_id, no_account, long_account, no_reason, bad_number = (
            self._missing_account() for _ in range(6)
        )
        no_id.request_id = ""
        long_id.request_id = "r" * 129
        no_account.account_ref = ""
        long_account.account_ref = "a" * 257
        no_reason.reason = common_pb2.UNBIND_REASON_UNSPECIFIED
        bad_number.msisdn = "8613800000000"
        cases = (
            ("no request_id", no_id),
            ("a request_id over 128 characters", long_id),
            ("no account_ref", no_account),
            ("an account_ref over 256 characters", long_account),
            ("no reason", no_reason),
            ("an msisdn not E.164", bad_number),
        )

        count = await expect_invalid_all(cases, self._unbind_call, what="Unbind with ")
        return f"INVALID_ARGUMENT for all {count} malformed requests"

    def _test_account(self) -> tuple[str, str]:
        if self._unbind is None:
            raise CheckSkippedError(
                "needs a test account the provider may unbind (--unbind NUMBER:ACCOUNT_REF)"
            )
        return self._unbind

    def _first(self) -> tuple[provider_pb2.UnbindRequest, provider_pb2.UnbindResponse]:
        self._test_account()
        if self._unbind_request is None or self._first_unbind is None:
            raise CheckSkippedError("the unbind did not run (see unbind.concurrent_duplicates)")
        return self._unbind_request, self._first_unbind

    async def _concurrent(self) -> str:
        msisdn, account_ref = self._test_account()
        request = provider_pb2.UnbindRequest(
            request_id=fresh_id("conformance-idempotency"),
            msisdn=msisdn,
            account_ref=account_ref,
            reason=common_pb2.UNBIND_REASON_OWNER_REQUEST,
        )
        answers: list[provider_pb2.UnbindResponse] = await asyncio.gather(
            *(
                expect_ok(self._unbind_call(request), what=f"Unbind duplicate {i}")
                for i in range(1, _DUPLICATES + 1)
            )
        )
        unset = [a for a in answers if a.outcome not in _OUTCOMES]
        if unset:
            raise CheckFailedError(f"an Unbind was answered {_outcome(unset[0])}")
        final = [a for a in answers if a.outcome != common_pb2.UNBIND_OUTCOME_PENDING]
        self._unbind_request = request
        self._first_unbind = final[0] if final else answers[0]
        if any(a != final[0] for a in final):
            raise CheckFailedError(
                f"{_DUPLICATES} duplicates of one request_id sent at once were answered "
                "differently: " + ", ".join(_answer(a) for a in answers)
            )
        return f"{_DUPLICATES} duplicates at once: " + ", ".join(_outcome(a) for a in answers)

    async def _idempotent(self) -> str:
        request, first = self._first()
        second: provider_pb2.UnbindResponse = await expect_ok(
            self._unbind_call(request), what="the same Unbind again (same request_id)"
        )
        if first.outcome == common_pb2.UNBIND_OUTCOME_PENDING:
            # A pending unbind may have finished by the next delivery.
            return f"first PENDING, then {_outcome(second)}"
        if second != first:
            raise CheckFailedError(
                f"the same request_id was answered differently: first {_answer(first)}, "
                f"then {_answer(second)}"
            )
        return f"{_outcome(first)} again, identical answer"

    async def _request_id_reused(self) -> str:
        request, _ = self._first()
        other = provider_pb2.UnbindRequest()
        other.CopyFrom(request)
        other.account_ref = fresh_id("onecert-conformance-no-such-account")
        await expect_code(
            self._unbind_call(other),
            grpc.StatusCode.INVALID_ARGUMENT,
            what="Unbind of another account under a request_id already used",
        )
        return "INVALID_ARGUMENT"

    async def _applied(self) -> str:
        msisdn, account_ref = self._test_account()
        _, first = self._first()
        if first.outcome != common_pb2.UNBIND_OUTCOME_DONE:
            raise CheckSkippedError(f"the unbind was answered {_outcome(first)}, not DONE")
        response: provider_pb2.ListBindingsResponse = await expect_ok(
            self._list(msisdn, self._warrant(msisdn)), what="ListBindings after the unbind"
        )
        if any(b.account_ref == account_ref for b in response.bindings):
            raise CheckFailedError("the account is still listed after Unbind answered DONE")
        return "the account is no longer listed"

    def _receive(self, token: str) -> Awaitable[provider_pb2.ReceiveEventResponse]:
        # A SET carries its own signature: no warrant goes with it (E-1).
        return self._stub.ReceiveEvent(
            provider_pb2.ReceiveEventRequest(set=token), timeout=self._timing.call_timeout
        )

    async def _event_valid(self) -> str:
        # Notices are about the unknown number: a provider that acts on one
        # has nothing to remove.
        response: provider_pb2.ReceiveEventResponse = await expect_ok(
            self._receive(self._tokens().notice(self._unknown)),
            what="ReceiveEvent with a valid notice",
        )
        if not response.acknowledged:
            raise CheckFailedError("a valid notice was answered without acknowledged = true")
        return "acknowledged"

    def _notice_case(self, case: _NoticeCase) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            token = case.token(self._tokens(), self._unknown)
            await expect_code(
                self._receive(token), case.code, what=f"ReceiveEvent, notice {case.what}"
            )
            return case.code.name

        return check

    async def _event_redelivered(self) -> str:
        token = self._tokens().notice(self._unknown)
        first: provider_pb2.ReceiveEventResponse = await expect_ok(
            self._receive(token), what="ReceiveEvent with a valid notice"
        )
        second: provider_pb2.ReceiveEventResponse = await expect_ok(
            self._receive(token), what="the same notice again (same jti)"
        )
        if not first.acknowledged or second != first:
            raise CheckFailedError(
                f"the same notice was answered {_event(first)}, then {_event(second)}"
            )
        return f"{_event(first)} twice"


_OUTCOMES = (
    common_pb2.UNBIND_OUTCOME_DONE,
    common_pb2.UNBIND_OUTCOME_PENDING,
    common_pb2.UNBIND_OUTCOME_REJECTED,
)


def _binding_problems(binding: provider_pb2.Binding) -> list[str]:
    problems = []
    if not binding.account_ref:
        problems.append("no account_ref")
    elif len(binding.account_ref) > 256:
        problems.append("account_ref longer than 256 characters")
    if binding.kind == common_pb2.BINDING_KIND_UNSPECIFIED or (
        binding.kind not in common_pb2.BindingKind.values()
    ):
        problems.append("kind not set")
    return problems


_DateField = Literal["bound_at", "last_used_at", "bound_not_before", "bound_not_after"]
_DATES: tuple[_DateField, ...] = ("bound_at", "last_used_at", "bound_not_before", "bound_not_after")


def _date_problems(binding: provider_pb2.Binding, now: float) -> tuple[list[str], bool]:
    """What is wrong with a binding's dates (L-4), and whether it is dated.

    Dated means an exact ``bound_at`` or at least a lower bound: an upper
    bound alone straddles every tenure's start, so it dates nothing.
    """
    problems = []
    when: dict[str, float] = {}
    for name in _DATES:
        if not binding.HasField(name):
            continue
        stamp = getattr(binding, name)
        if stamp.seconds == 0 and stamp.nanos == 0:
            problems.append(f"{name} is the epoch (leave it unset when unknown)")
            continue
        when[name] = stamp.ToDatetime().timestamp()
        if when[name] > now + _FUTURE_SKEW:
            problems.append(f"{name} is in the future")
    low, high = when.get("bound_not_before"), when.get("bound_not_after")
    if low is not None and high is not None and low > high:
        problems.append("bound_not_before is after bound_not_after")
    exact = when.get("bound_at")
    if exact is not None and (
        (low is not None and exact < low) or (high is not None and exact > high)
    ):
        problems.append("bound_at lies outside [bound_not_before, bound_not_after]")
    return problems, "bound_at" in when or "bound_not_before" in when


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


def _event(response: provider_pb2.ReceiveEventResponse) -> str:
    if not response.acknowledged:
        return "not acknowledged"
    if response.acted:
        return f"acknowledged, acted ({response.bindings_removed} removed)"
    return "acknowledged"
