"""Conformance checks for a NumberRegistry (a carrier), played as the gateway."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Awaitable, Sequence

import grpc

from onecert.sdk._idn import is_idn
from onecert.sdk._keys import SigningKey
from onecert.sdk._msisdn import is_e164, mask_msisdn
from onecert.sdk._tls import ClientTLS
from onecert.sdk._warrant import PURPOSE_LOOKUP
from onecert.sdk.conformance._common import (
    Check,
    CheckFailedError,
    CheckSkippedError,
    Metadata,
    Timing,
    bearer,
    deadline_checks,
    expect_empty_list,
    expect_invalid_all,
    expect_ok,
    health_checks,
    known_and_unknown,
    run_suite,
    warrant_check_names,
    warrant_checks,
)
from onecert.sdk.conformance._report import Report
from onecert.sdk.conformance._tokens import Forge
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

# Every check of a carrier run, (rule, name), in report order: what
# `onecert conformance carrier --list` prints.
CARRIER_CHECKS: tuple[tuple[str, str], ...] = (
    ("H-1", "health.overall"),
    ("H-2", "health.service"),
    ("C-1", "list_numbers.known_idns"),
    ("C-2", "list_numbers.unknown_idn"),
    ("C-3", "list_numbers.malformed_idn"),
    *warrant_check_names("list_numbers"),
    ("D-1", "deadline.short"),
    ("D-2", "deadline.abandoned"),
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
        tls, call_timeout, short_deadline, slack, concurrency: as for
            :func:`~onecert.sdk.conformance.check_provider`.

    Raises:
        ValueError: an argument is malformed.
    """
    if not _CARRIER_ID.fullmatch(carrier_id):
        raise ValueError("carrier_id must be 1 to 64 characters of letters, digits, '.', '_', '-'")
    known, unknown = known_and_unknown(
        known_idns,
        unknown_idn,
        valid=is_idn,
        rule="idn must be 64 lowercase hex characters",
        fresh=lambda: secrets.token_hex(32),
    )
    timing = Timing(call_timeout=call_timeout, short_deadline=short_deadline, slack=slack)
    return await run_suite(
        "carrier",
        lambda channel: _CarrierSuite(
            channel=channel,
            timing=timing,
            warrant_key=warrant_key,
            issuer=issuer,
            carrier_id=carrier_id,
            known_idns=known,
            unknown_idn=unknown,
        ),
        catalogue=CARRIER_CHECKS,
        target=target,
        tls=tls,
        timing=timing,
        concurrency=concurrency,
    )


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
        self._forge = Forge(key=warrant_key, issuer=issuer, audience=carrier_id)
        self._known = known_idns
        self._unknown = unknown_idn
        self._probe_idn = known_idns[0] if known_idns else unknown_idn

    def _warrant(self, idn: str) -> Metadata:
        return bearer(self._forge.warrant(idn, PURPOSE_LOOKUP))

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
            Check("C-1", "list_numbers.known_idns", self._known_idns),
            Check("C-2", "list_numbers.unknown_idn", self._unknown_idn),
            Check("C-3", "list_numbers.malformed_idn", self._malformed_idn),
            *warrant_checks(
                rpc="list_numbers",
                forge=lambda: self._forge,
                call=lambda metadata: self._list(self._probe_idn, metadata),
                target=self._probe_idn,
                purpose=PURPOSE_LOOKUP,
            ),
        ]
        short, abandoned = deadline_checks(
            self._channel,
            call=lambda timeout: self._list(
                self._probe_idn, self._warrant(self._probe_idn), timeout=timeout
            ),
            timing=self._timing,
        )
        return [reads, [short], [abandoned]]

    async def _known_idns(self) -> str:
        if not self._known:
            raise CheckSkippedError("no known idn given")

        async def one(idn: str) -> tuple[int, list[str]]:
            label = f"idn {idn[:8]}..."
            response: registry_pb2.ListNumbersResponse = await expect_ok(
                self._list(idn, self._warrant(idn)), what=f"ListNumbers for {label}"
            )
            if not response.tenures:
                return 0, [f"{label}: no tenures listed for an idn said to have some"]
            now = time.time()
            problems = [
                f"{label}: tenure {i}: {p}"
                for i, tenure in enumerate(response.tenures, start=1)
                for p in _tenure_problems(tenure, self._carrier_id, now)
            ]
            return len(response.tenures), problems

        found = await asyncio.gather(*(one(idn) for idn in self._known))
        problems = [p for _, ps in found for p in ps]
        if problems:
            raise CheckFailedError("; ".join(problems))
        return f"{sum(n for n, _ in found)} complete tenures for {len(found)} idns"

    async def _unknown_idn(self) -> str:
        await expect_empty_list(
            self._list(self._unknown, self._warrant(self._unknown)),
            lambda response: response.tenures,
            unknown="an idn meant to be unknown",
            listed="tenures",
        )
        return "empty list"

    async def _malformed_idn(self) -> str:
        count = await expect_invalid_all(
            MALFORMED_IDNS, lambda idn: self._list(idn, self._warrant(idn)), what="idn with "
        )
        return f"INVALID_ARGUMENT for all {count} malformed forms"


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
