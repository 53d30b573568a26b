"""The conformance kit's reading of a binding's time: exact, or an interval (contract L-4)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from onecert.gateway.testing import timed_binding
from onecert.sdk.conformance._provider import _date_problems

NOW = time.time()


def test_a_lower_bound_stands_in_for_bound_at() -> None:
    """A binding with only bound_not_before (a registration date) is dated; one with no
    time, or only an upper bound, is undated, which L-4 reports without failing."""
    lower = timed_binding(bound_not_before=datetime(2020, 1, 1, tzinfo=UTC))
    assert _date_problems(lower, NOW) == ([], True)
    assert _date_problems(timed_binding(), NOW) == ([], False)
    only_upper = timed_binding(bound_not_after=datetime(2020, 1, 1, tzinfo=UTC))
    assert _date_problems(only_upper, NOW) == ([], False)


def test_contradicting_times_are_named() -> None:
    """An empty interval, an exact time outside its bounds, a future start or the epoch is
    a problem."""
    early, late = datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC)
    assert _date_problems(timed_binding(bound_not_before=late, bound_not_after=early), NOW)[0] == [
        "bound_not_before is after bound_not_after"
    ]
    outside = timed_binding(bound_at=early, bound_not_before=late)
    assert _date_problems(outside, NOW)[0] == [
        "bound_at lies outside [bound_not_before, bound_not_after]"
    ]
    future = timed_binding(bound_not_before=datetime(2999, 1, 1, tzinfo=UTC))
    assert _date_problems(future, NOW)[0] == ["bound_not_before is in the future"]
    epoch = timed_binding(bound_at=datetime(1970, 1, 1, tzinfo=UTC))
    assert _date_problems(epoch, NOW)[0] == ["bound_at is the epoch (leave it unset when unknown)"]
