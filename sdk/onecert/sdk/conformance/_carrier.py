"""Conformance checks for a NumberRegistry (a carrier), played as the gateway."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc

from onecert.sdk._idn import is_idn
from onecert.sdk._keys import SigningKey
from onecert.sdk._msisdn import is_e164, mask_msisdn
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
    open_channel,
    run_phases,
    serving_within,
    timed,
)
from onecert.sdk.conformance._report import Report
from onecert.v1 import common_pb2, registry_pb2, registry_pb2_grpc

SERVICE = "onecert.v1.NumberRegistry"
_CARRIER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FUTURE_SKEW = 300.0
_HELD = (common_pb2.TENURE_STATE_ACTIVE, common_pb2.TENURE_STATE_SUSPENDED)

# Malformed idns: each breaks one rule of "64 lowercase hex characters".
MALFORMED_IDNS = (
    ("empty", ""),
    ("upper case", "AB" * 32),
    ("63 characters", "a" * 63),
    ("65 characters", "a" * 65),
    ("not hex", "g" * 64),
    ("spaces", " " + "a" * 62 + " "),
    ("a raw document number", "11010519491231002X"),
)


async def check_carrier(
    *,
    target: str,
    warrant_key: SigningKey,
    carrier_id: str,
    issuer: str = "onecert-gateway",
    known_idns: Sequence[str] = (),
    unknown_idn: str | None = None,
    tls: ClientTLS | None = None,
    call_timeout: float = 5.0,
    short_deadline: float = 0.5,
    slack: float = 1.0,
    concurrency: int = 8,
) -> Report:
    """Play the gateway against the NumberRegistry at ``target`` and report.

    Args:
        target: "host:port" of the carrier.
        warrant_key: the key the carrier trusts as the gateway's.
        carrier_id: the carrier's id: the warrant audience, and the
            ``carrier_id`` every tenure must carry.
        issuer: the gateway id the carrier expects as ``iss``.
        known_idns: idns with at least one tenure each.
        unknown_idn: an idn with no tenure; a random one when not given.
        tls: how to reach the target over TLS; plaintext when None.
        call_timeout: deadline of each ordinary call, in seconds.
        short_deadline: the deadline of the short-deadline check.
        slack: how late past a deadline a call may end, in seconds.
        concurrency: at most this many checks at once.

    Raises:
        ValueError: an argument is malformed.
    """
    if not _CARRIER_ID.fullmatch(carrier_id):
        raise ValueError("carrier_id must be 1 to 64 characters of letters, digits, '.', '_', '-'")
    for idn in known_idns:
        if not is_idn(idn):
            raise ValueError("every known idn must be 64 lowercase hex characters")
    if unknown_idn is None:
        unknown_idn = secrets.token_hex(32)
    elif not is_idn(unknown_idn) or unknown_idn in known_idns:
        raise ValueError("the unknown idn must be 64 lowercase hex characters, not a known one")
    timing = Timing(call_timeout=call_timeout, short_deadline=short_deadline, slack=slack)
    async with open_channel(target, tls) as channel:
        suite = _CarrierSuite(
            channel=channel,
            timing=timing,
            warrant_key=warrant_key,
            issuer=issuer,
            carrier_id=carrier_id,
            known_idns=tuple(known_idns),
            unknown_idn=unknown_idn,
        )
        results = await run_phases(suite.phases(), timing=timing, concurrency=concurrency)
    return Report(kind="carrier", target=target, results=tuple(results))


class _CarrierSuite:
    def __init__(
        self,
        *,
        channel: grpc.aio.Channel,
        timing: Timing,
        warrant_key: SigningKey,
        issuer: str,
        carrier_id: str,
        known_idns: tuple[str, ...],
        unknown_idn: str,
    ) -> None:
        self._channel = channel
        self._stub = registry_pb2_grpc.NumberRegistryStub(channel)
        self._timing = timing
        self._carrier_id = carrier_id
        self._warrants = WarrantIssuer(key=warrant_key, issuer=issuer)
        self._known = known_idns
        self._unknown = unknown_idn
        self._probe_idn = known_idns[0] if known_idns else unknown_idn
        self._faults = bad_warrants(
            key=warrant_key,
            issuer=issuer,
            audience=carrier_id,
            other_target=unknown_idn,
            target_label="idn",
        )

    def _warrant(self, idn: str) -> Metadata:
        token = self._warrants.issue(
            audience=self._carrier_id, target=idn, purpose=PURPOSE, query_id=fresh_id("conf")
        )
        return bearer(token)

    def _list(
        self, idn: str, metadata: Metadata, timeout: float | None = None
    ) -> Awaitable[registry_pb2.ListNumbersResponse]:
        return self._stub.ListNumbers(
            registry_pb2.ListNumbersRequest(idn=idn),
            metadata=metadata,
            timeout=timeout or self._timing.call_timeout,
        )

    def phases(self) -> list[list[Check]]:
        """The checks in phases: each phase runs after the previous one ended."""
        reads = [
            *health_checks(self._channel, service=SERVICE, timing=self._timing),
            *(
                Check(f"list_numbers.known_idn[{i}]", self._known_idn(idn))
                for i, idn in enumerate(self._known, start=1)
            ),
        ]
        if not self._known:
            reads.append(Check("list_numbers.known_idn", self._no_known_idns, calls=0))
        reads += [
            Check("list_numbers.unknown_idn", self._unknown_idn),
            Check("list_numbers.malformed_idn", self._malformed_idn),
        ]
        reads += [
            Check(f"list_numbers.warrant.{f}", self._refused(self._faults[f]))
            for f in fault_names("idn")
        ]
        return [reads, [Check("deadline.short", self._short_deadline, calls=2)]]

    async def _no_known_idns(self) -> str:
        raise CheckSkippedError("no known idn given")

    def _known_idn(self, idn: str) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            label = f"idn {idn[:8]}..."
            response: registry_pb2.ListNumbersResponse = await expect_ok(
                self._list(idn, self._warrant(idn)), what=f"ListNumbers for {label}"
            )
            if not response.tenures:
                raise CheckFailedError(f"{label}: no tenures listed for an idn said to have some")
            problems = []
            now = time.time()
            for i, tenure in enumerate(response.tenures, start=1):
                problems += [
                    f"tenure {i}: {p}" for p in _tenure_problems(tenure, self._carrier_id, now)
                ]
            if problems:
                raise CheckFailedError(f"{label}: " + "; ".join(problems))
            states = sorted(
                {
                    common_pb2.TenureState.Name(t.state).removeprefix("TENURE_STATE_")
                    for t in response.tenures
                }
            )
            count = len(response.tenures)
            return f"{label}: {count} tenure{'s' if count > 1 else ''} ({', '.join(states)})"

        return check

    async def _unknown_idn(self) -> str:
        try:
            response = await self._list(self._unknown, self._warrant(self._unknown))
        except grpc.aio.AioRpcError as exc:
            raise CheckFailedError(
                f"answered {describe_error(exc)}; an unknown idn must be an empty list, "
                "not an error"
            ) from exc
        if response.tenures:
            raise CheckFailedError(
                f"listed {len(response.tenures)} tenures for an idn meant to be unknown"
            )
        return "empty list"

    async def _malformed_idn(self) -> str:
        async def one(what: str, idn: str) -> str | None:
            call = self._list(idn, self._warrant(idn))
            try:
                await expect_code(call, grpc.StatusCode.INVALID_ARGUMENT, what=f"idn with {what}")
            except CheckFailedError as failure:
                return str(failure)
            return None

        found = await asyncio.gather(*(one(what, value) for what, value in MALFORMED_IDNS))
        problems = [p for p in found if p]
        if problems:
            raise CheckFailedError("; ".join(problems))
        return f"INVALID_ARGUMENT for all {len(MALFORMED_IDNS)} malformed forms"

    def _refused(self, bad: BadWarrant) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            call = self._list(self._probe_idn, bad.metadata(self._probe_idn))
            await expect_code(
                call, grpc.StatusCode.UNAUTHENTICATED, what=f"ListNumbers, warrant {bad.what}"
            )
            return "UNAUTHENTICATED"

        return check

    async def _short_deadline(self) -> str:
        deadline = self._timing.short_deadline
        idn = self._probe_idn
        code, elapsed = await timed(self._list(idn, self._warrant(idn), timeout=deadline))
        if elapsed > deadline + self._timing.slack:
            raise CheckFailedError(f"a call with a {deadline:.2f} s deadline took {elapsed:.2f} s")
        if code not in (
            grpc.StatusCode.OK,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNAVAILABLE,
        ):
            raise CheckFailedError(f"a call with a {deadline:.2f} s deadline answered {code.name}")
        if not await serving_within(self._channel, self._timing.slack):
            raise CheckFailedError(
                f"the call ended ({code.name}) after {elapsed:.2f} s, but then a health check "
                f"got no answer within {self._timing.slack:.2f} s: the adapter is still busy "
                "with a call past its deadline"
            )
        return f"{code.name} after {elapsed:.2f} s (deadline {deadline:.2f} s), still responsive"


def _tenure_problems(tenure: registry_pb2.Tenure, carrier_id: str, now: float) -> list[str]:
    problems = []
    if not is_e164(tenure.msisdn):
        problems.append("msisdn is not E.164")
    if tenure.carrier_id != carrier_id:
        problems.append(f"carrier_id is {tenure.carrier_id!r}, not {carrier_id!r}")
    if tenure.state == common_pb2.TENURE_STATE_UNSPECIFIED or (
        tenure.state not in common_pb2.TenureState.values()
    ):
        problems.append("state not set")
    if not tenure.HasField("held_from"):
        problems.append("no held_from")
    elif tenure.held_from.ToDatetime().timestamp() > now + _FUTURE_SKEW:
        problems.append("held_from is in the future")
    held = tenure.state in _HELD
    if held and tenure.HasField("held_until"):
        problems.append("held_until is set on a number still held (ACTIVE or SUSPENDED)")
    if not held and tenure.state and not tenure.HasField("held_until"):
        problems.append("held_until is missing on a number no longer held")
    if (
        tenure.HasField("held_from")
        and tenure.HasField("held_until")
        and tenure.held_until.ToDatetime() <= tenure.held_from.ToDatetime()
    ):
        problems.append("held_until is not after held_from")
    if problems and is_e164(tenure.msisdn):
        problems[0] = f"{mask_msisdn(tenure.msisdn)}: {problems[0]}"
    return problems
