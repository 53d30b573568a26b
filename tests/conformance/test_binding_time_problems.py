"""The conformance kit's reading of a binding's time: exact, or an interval."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from onecert.sdk.conformance._provider import _binding_problems
from onecert.v1 import common_pb2, provider_pb2

NOW = time.time()


def binding(**times: datetime) -> provider_pb2.Binding:
    out = provider_pb2.Binding(account_ref="a1", kind=common_pb2.BINDING_KIND_LOGIN)
    for name, value in times.items():
        getattr(out, name).FromDatetime(value)
    return out


def test_a_lower_bound_stands_in_for_bound_at() -> None:
    """A binding with only bound_not_before (a registration date) passes; one with no time fails."""
    assert _binding_problems(binding(bound_not_before=datetime(2020, 1, 1, tzinfo=UTC)), NOW) == []
    assert _binding_problems(binding(), NOW) == ["no bound_at or bound_not_before"]
    only_upper = binding(bound_not_after=datetime(2020, 1, 1, tzinfo=UTC))
    assert _binding_problems(only_upper, NOW) == ["no bound_at or bound_not_before"]


def test_contradicting_times_are_named() -> None:
    """An empty interval, an exact time outside its bounds, or a future start is a problem."""
    early, late = datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC)
    assert _binding_problems(binding(bound_not_before=late, bound_not_after=early), NOW) == [
        "bound_not_after is before bound_not_before"
    ]
    outside = binding(bound_at=early, bound_not_before=late)
    assert _binding_problems(outside, NOW) == [
        "bound_at lies outside bound_not_before..bound_not_after"
    ]
    future = binding(bound_not_before=datetime(2999, 1, 1, tzinfo=UTC))
    assert _binding_problems(future, NOW) == ["bound_not_before is in the future"]
