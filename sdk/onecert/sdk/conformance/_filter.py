"""Conformance checks for a routing filter a provider built (docs/contract.md, section R).

A provider in any language builds its snapshot (and additions) itself; the
kit checks the bytes it would publish, offline: the format, the key it is
keyed with, and that every number the provider says it holds is in it::

    report = check_filter(snapshot=data, key=key, key_version=3, numbers=numbers)
    print(report.to_table())

The command line is ``onecert conformance filter``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from onecert.sdk._filter import (
    FilterAdditions,
    FilterFormatError,
    RoutingFilter,
    key_check,
    routing_digest,
)
from onecert.sdk._msisdn import is_e164, mask_msisdn
from onecert.sdk.conformance._common import CheckFailedError, CheckSkippedError
from onecert.sdk.conformance._report import CheckResult, Outcome, Report

__all__ = ["FILTER_CHECKS", "check_filter"]

_T = TypeVar("_T")
_P = TypeVar("_P", RoutingFilter, FilterAdditions)

# How far in the future a created_at may be (the gateway refuses beyond it).
_MAX_SKEW_S = 300

# Every check of a filter run, (rule, name), in report order.
FILTER_CHECKS: tuple[tuple[str, str], ...] = (
    ("R-3", "filter.format"),
    ("R-1", "filter.key"),
    ("R-4", "filter.complete"),
    ("R-3", "additions.format"),
    ("R-5", "additions.keyed_as_snapshot"),
    ("R-5", "additions.complete"),
)


def check_filter(
    *,
    snapshot: bytes,
    key: bytes,
    key_version: int,
    numbers: Sequence[str] = (),
    additions: bytes | None = None,
    added: Sequence[str] = (),
    now: float | None = None,
) -> Report:
    """Check a serialized snapshot (and additions) against section R of the contract.

    Args:
        snapshot: the bytes the provider would publish as ``RoutingSnapshot.filter``.
        key: the routing key of ``key_version`` (from ``GetRoutingKey``).
        key_version: the version the provider was told to key with.
        numbers: numbers bound at the provider when it began reading: each must be in it.
        additions: the bytes it would publish as ``PublishFilterRequest.additions``.
        added: numbers those additions must hold.
        now: Unix time to judge ``created_at`` by (default: the clock).
    """
    clock = time.time() if now is None else now
    snapshots: list[RoutingFilter] = []
    extras: list[FilterAdditions] = []

    def snapshot_format() -> str:
        found = _read(RoutingFilter.from_bytes, snapshot, "a version 1 or 2 snapshot", clock)
        snapshots.append(found)
        return f"format {found.fmt}, m = {found.m} bits, k = {found.k}, count = {found.count}"

    def keyed() -> str:
        found = _first(snapshots, "snapshot")
        if found.key_version != key_version:
            raise CheckFailedError(f"keyed with version {found.key_version}, not {key_version}")
        if found.key_check != key_check(key):
            raise CheckFailedError("the key check is not the key's: keyed with another key")
        return f"version {key_version}, key check matches"

    def complete() -> str:
        found = _first(snapshots, "snapshot")
        return _holds(numbers, lambda n: found.may_contain(routing_digest(key, n)), "filter")

    def additions_format() -> str:
        if additions is None:
            raise CheckSkippedError("no additions given (--additions)")
        extra = _read(FilterAdditions.from_bytes, additions, "version 1 additions", clock)
        extras.append(extra)
        return f"{len(extra.elements)} elements"

    def additions_keyed() -> str:
        extra = _first(extras, "additions")
        found = _first(snapshots, "snapshot")
        if extra.key_version != found.key_version:
            raise CheckFailedError(
                f"keyed with version {extra.key_version}, the snapshot with {found.key_version}"
            )
        if extra.key_check != found.key_check:
            raise CheckFailedError("keyed with another key than the snapshot")
        return f"version {extra.key_version}, as the snapshot"

    def additions_complete() -> str:
        extra = _first(extras, "additions")
        elements = set(extra.elements)
        return _holds(added, lambda n: routing_digest(key, n)[:16] in elements, "additions")

    runs: dict[str, Callable[[], str]] = {
        "filter.format": snapshot_format,
        "filter.key": keyed,
        "filter.complete": complete,
        "additions.format": additions_format,
        "additions.keyed_as_snapshot": additions_keyed,
        "additions.complete": additions_complete,
    }
    results = [_run(rule, name, runs[name]) for rule, name in FILTER_CHECKS]
    return Report("filter", f"routing key version {key_version}", tuple(results))


def _read(parse: Callable[[bytes], _P], data: bytes, what: str, clock: float) -> _P:
    try:
        found = parse(data)
    except FilterFormatError as exc:
        raise CheckFailedError(f"not {what}: {exc}") from None
    if found.created_at > clock + _MAX_SKEW_S:
        raise CheckFailedError("created_at is in the future: the gateway refuses it")
    return found


def _first(items: list[_T], what: str) -> _T:
    if not items:
        raise CheckSkippedError(f"the {what} could not be read")
    return items[0]


def _holds(numbers: Sequence[str], present: Callable[[str], bool], where: str) -> str:
    checked = [n for n in numbers if is_e164(n)]
    if not checked:
        raise CheckSkippedError("no E.164 numbers given to look for")
    missing = [n for n in checked if not present(n)]
    if missing:
        shown = ", ".join(mask_msisdn(n) for n in missing[:3])
        raise CheckFailedError(
            f"{len(missing)} of {len(checked)} numbers are not in the {where} ({shown})"
        )
    return f"all {len(checked)} numbers are in the {where}"


def _run(rule: str, name: str, run: Callable[[], str]) -> CheckResult:
    started = time.monotonic()
    try:
        detail, outcome = run(), Outcome.PASSED
    except CheckFailedError as exc:
        detail, outcome = str(exc), Outcome.FAILED
    except CheckSkippedError as exc:
        detail, outcome = str(exc), Outcome.SKIPPED
    return CheckResult(name, outcome, detail, time.monotonic() - started, rule)
