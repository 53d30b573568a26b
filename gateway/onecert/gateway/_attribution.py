"""Attribution by tenure: whose account is a binding on one of the citizen's numbers?

The rules (DESIGN.md, "Lookup, step by step", 4), for one msisdn and the
citizen's tenures of it. A tenure covers the half-open interval
``[held_from, held_until)``, open-ended while the number is held. The number
is *current* when one of the citizen's tenures of it is current.

=============  ===============================================  ================
number         ``bound_at``                                     attribution
=============  ===============================================  ================
current        inside one of the citizen's tenures              MINE
current        outside them (before the current tenure)         PREVIOUS_HOLDER
current        unknown, or in the future                        PREVIOUS_HOLDER
former         inside one of the citizen's tenures              LEFT_BEHIND
former         outside them (before, between or after)          None (dropped)
former         unknown, or in the future                        None (dropped)
=============  ===============================================  ================

"Inside one of the citizen's tenures" covers a citizen who held the same
number twice: an account bound during their first tenure is still theirs
(MINE while they hold the number again). A binding outside every tenure of a
former number belongs to a previous or next holder: none of the citizen's
business, so never shown and never counted.

A ``bound_at`` later than ``now`` plus :data:`FUTURE_TOLERANCE` is a wrong
clock or a wrong answer; it proves nothing about whose account it is, so it is
treated like an unknown ``bound_at`` (details never revealed). Within the
tolerance it is taken as given, so a provider whose clock runs a little ahead
does not hide a citizen's fresh binding.

Intervals. Many providers know only that the number was bound at or after
``bound_not_before`` (the account's registration) and perhaps at or before
``bound_not_after``; without an upper bound the interval runs to ``now``. A
:class:`BindingTime` is read as the closed interval it allows, and the table
above applies with "inside one of the citizen's tenures" meaning the *whole*
interval lies inside *one* tenure. An interval that straddles a tenure
boundary is treated exactly like an unknown ``bound_at`` (current number:
PREVIOUS_HOLDER, counted only; former number: dropped), and so is one that
lies wholly outside: the two get the same answer. A lower bound is never read
as the binding date: a Discuz account registered while the citizen held the
number may have had it typed in by its next holder, and showing it would
show the next holder's account. No upper bound alone says anything (the
interval would reach back indefinitely), and neither does an empty interval
(``bound_not_after`` before ``bound_not_before``), an exact time outside its
own bounds, or a lower bound beyond the tolerance in the future.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, Literal, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from onecert.v1 import gateway_pb2, provider_pb2, registry_pb2

# How far in the future a bound_at may lie and still count (provider clock skew).
FUTURE_TOLERANCE = timedelta(minutes=5)

B = TypeVar("B")


class Attribution(enum.Enum):
    """Whose account a binding is, judged by the tenure of the number."""

    MINE = gateway_pb2.ATTRIBUTION_MINE
    LEFT_BEHIND = gateway_pb2.ATTRIBUTION_LEFT_BEHIND
    PREVIOUS_HOLDER = gateway_pb2.ATTRIBUTION_PREVIOUS_HOLDER

    @property
    def proto(self) -> int:
        """The ``onecert.v1.Attribution`` value."""
        return int(self._value_)

    @property
    def shown(self) -> bool:
        """Whether the binding's details may be shown to the citizen."""
        return self is not Attribution.PREVIOUS_HOLDER

    @property
    def dangerous(self) -> bool:
        """True for LEFT_BEHIND: someone else may be able to use the account."""
        return self is Attribution.LEFT_BEHIND


def _check_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


@dataclass(frozen=True)
class TenureView:
    """One of the citizen's tenures of a number, as a carrier reported it.

    Attributes:
        msisdn: the number, E.164.
        carrier_id: the carrier that reported it.
        held_from: when the citizen started to hold it (timezone-aware).
        held_until: when they stopped; None while they hold it.
        state: the ``onecert.v1.TenureState`` value (informational: the
            interval alone decides attribution).

    Raises:
        ValueError: a naive datetime, or ``held_until`` before ``held_from``.
    """

    msisdn: str
    carrier_id: str
    held_from: datetime
    held_until: datetime | None
    state: int

    def __post_init__(self) -> None:
        _check_aware("held_from", self.held_from)
        if self.held_until is not None:
            _check_aware("held_until", self.held_until)
            if self.held_until < self.held_from:
                raise ValueError("a tenure cannot end before it starts")

    @property
    def current(self) -> bool:
        """Whether the citizen still holds the number in this tenure."""
        return self.held_until is None

    def covers(self, instant: datetime) -> bool:
        """Whether ``instant`` lies in ``[held_from, held_until)``."""
        if instant < self.held_from:
            return False
        return self.held_until is None or instant < self.held_until

    @classmethod
    def from_proto(cls, tenure: registry_pb2.Tenure) -> TenureView:
        """A view of a carrier's ``Tenure``.

        Raises:
            ValueError: ``held_from`` absent, a timestamp out of range, or the
                tenure ends before it starts.
        """
        if not tenure.HasField("held_from"):
            raise ValueError("a tenure needs held_from")
        try:
            held_from = tenure.held_from.ToDatetime(tzinfo=UTC)
            held_until = (
                tenure.held_until.ToDatetime(tzinfo=UTC) if tenure.HasField("held_until") else None
            )
        except OverflowError as exc:
            raise ValueError("a tenure timestamp is out of range") from exc
        return cls(
            msisdn=tenure.msisdn,
            carrier_id=tenure.carrier_id,
            held_from=held_from,
            held_until=held_until,
            state=int(tenure.state),
        )


@dataclass(frozen=True)
class BindingTime:
    """What a provider said about when a number was bound to an account.

    Attributes:
        at: the exact instant, or None.
        not_before: the number was bound at or after this instant, or None.
        not_after: the number was bound at or before this instant, or None.

    Raises:
        ValueError: a naive datetime.
    """

    at: datetime | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("at", "not_before", "not_after"):
            value = getattr(self, name)
            if value is not None:
                _check_aware(name, value)

    def interval(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The closed interval the binding lies in, as far as ``now`` tells; None if unknown.

        Unknown means: nothing said, only an upper bound, bounds that
        contradict each other or the exact time, or a start beyond
        :data:`FUTURE_TOLERANCE` in the future.
        """
        horizon = now + FUTURE_TOLERANCE
        low, high = self.not_before, self.not_after
        if low is not None and high is not None and high < low:
            return None
        if self.at is not None:
            outside = (low is not None and self.at < low) or (high is not None and self.at > high)
            return None if outside else _instant_interval(self.at, now)
        if low is None or low > horizon:
            return None
        # The binding happened by now: an upper bound past now (or none) ends
        # there. A start a little ahead of now (clock skew) is a point.
        end = now if high is None else min(high, now)
        return low, max(low, end)


def _instant_interval(at: datetime, now: datetime) -> tuple[datetime, datetime] | None:
    """The interval of a binding known to the instant: a point, unless beyond
    :data:`FUTURE_TOLERANCE` in the future (then unknown)."""
    return None if at > now + FUTURE_TOLERANCE else (at, at)


def _checked(tenures: Sequence[TenureView]) -> None:
    if not tenures:
        raise ValueError("attribution needs at least one tenure of the number")
    msisdn = tenures[0].msisdn
    if any(t.msisdn != msisdn for t in tenures):
        raise ValueError("attribution takes the tenures of one number only")


def _attribute(
    tenures: Sequence[TenureView], bound: datetime | BindingTime | None, now: datetime
) -> Attribution | None:
    current = any(t.current for t in tenures)
    if bound is None:
        interval = None
    elif isinstance(bound, datetime):
        # As BindingTime(at=bound) would check it, without building one per binding.
        _check_aware("at", bound)
        interval = _instant_interval(bound, now)
    else:
        interval = bound.interval(now)
    if interval is not None:
        low, high = interval
        # One tenure must hold the whole interval: an interval spanning the
        # gap between two of the citizen's tenures may be another holder's.
        if any(t.covers(low) and t.covers(high) for t in tenures):
            return Attribution.MINE if current else Attribution.LEFT_BEHIND
    # Unknown, straddling a tenure boundary, or outside every tenure of the
    # citizen's: possibly someone else's. Counted on a current number (as a
    # previous holder's), none of the citizen's business on a former one.
    return Attribution.PREVIOUS_HOLDER if current else None


def attribute(
    tenures: Sequence[TenureView],
    bound_at: datetime | BindingTime | None,
    *,
    now: datetime | None = None,
) -> Attribution | None:
    """Whose account a binding of one number is; None when it is none of the citizen's business.

    Args:
        tenures: all of the citizen's tenures of this one number (usually one).
        bound_at: when the number was bound to the account (timezone-aware):
            an exact instant, a :class:`BindingTime` (an exact instant or an
            interval), or None when the provider did not say.
        now: the current time; for tests.

    Raises:
        ValueError: no tenures, tenures of several numbers, or a naive datetime.
    """
    _checked(tenures)
    return _attribute(tenures, bound_at, datetime.now(UTC) if now is None else now)


@dataclass(frozen=True)
class Shown(Generic[B]):
    """A binding the citizen may see, with its attribution (MINE or LEFT_BEHIND)."""

    attribution: Attribution
    binding: B


@dataclass(frozen=True)
class Attributed(Generic[B]):
    """One provider's bindings of one number, sorted by whose they are.

    Attributes:
        shown: the citizen's own accounts, LEFT_BEHIND first then MINE, each
            class in the provider's order. Show these, masked, with handles.
        previous_holder: accounts of previous holders of a current number. Show
            only their count; make one release handle per entry.
        dropped: how many bindings were none of the citizen's business (a
            former number's other holders). Never show or count them anywhere;
            the number exists for accounting checks and logs.
    """

    shown: tuple[Shown[B], ...]
    previous_holder: tuple[B, ...]
    dropped: int

    @property
    def mine(self) -> int:
        return sum(1 for s in self.shown if s.attribution is Attribution.MINE)

    @property
    def left_behind(self) -> int:
        return sum(1 for s in self.shown if s.attribution is Attribution.LEFT_BEHIND)

    @property
    def previous_holder_count(self) -> int:
        return len(self.previous_holder)


def classify(
    tenures: Sequence[TenureView],
    bindings: Iterable[B],
    *,
    bound_at: Callable[[B], datetime | BindingTime | None],
    now: datetime | None = None,
) -> Attributed[B]:
    """Attribute every binding one provider gave for one number.

    Args:
        tenures: all of the citizen's tenures of the number asked about.
        bindings: the provider's answer, in any form; ``bound_at`` reads the
            binding time of one (for ``provider_pb2.Binding`` use
            :func:`proto_binding_time`, which reads the interval too).
        bound_at: the accessor for a binding's time: an exact instant, a
            :class:`BindingTime`, or None.
        now: the current time; for tests.

    Raises:
        ValueError: as :func:`attribute`.
    """
    _checked(tenures)
    instant = datetime.now(UTC) if now is None else now
    left_behind: list[Shown[B]] = []
    mine: list[Shown[B]] = []
    previous: list[B] = []
    dropped = 0
    for binding in bindings:
        attribution = _attribute(tenures, bound_at(binding), instant)
        if attribution is Attribution.LEFT_BEHIND:
            left_behind.append(Shown(attribution, binding))
        elif attribution is Attribution.MINE:
            mine.append(Shown(attribution, binding))
        elif attribution is Attribution.PREVIOUS_HOLDER:
            previous.append(binding)
        else:
            dropped += 1
    return Attributed(shown=(*left_behind, *mine), previous_holder=tuple(previous), dropped=dropped)


def proto_bound_at(binding: provider_pb2.Binding) -> datetime | None:
    """A provider ``Binding``'s ``bound_at`` in UTC, or None when absent.

    A timestamp at or before the epoch, or too large for a datetime, counts as
    absent: the contract says an unknown instant is left out, never sent as
    the epoch.
    """
    return _proto_instant(binding, "bound_at")


def proto_binding_time(binding: provider_pb2.Binding) -> BindingTime:
    """A provider ``Binding``'s ``bound_at``, ``bound_not_before`` and ``bound_not_after``.

    Each is read as :func:`proto_bound_at` reads ``bound_at``: absent, at or
    before the epoch, or out of range, it is left out. Leaving a bound out
    only widens the interval, so it never makes an account shown that would
    not be shown otherwise.
    """
    return BindingTime(
        at=_proto_instant(binding, "bound_at"),
        not_before=_proto_instant(binding, "bound_not_before"),
        not_after=_proto_instant(binding, "bound_not_after"),
    )


def proto_binding_when(binding: provider_pb2.Binding) -> datetime | BindingTime | None:
    """What :func:`proto_binding_time` reads, as :func:`classify` takes it, built
    only as far as the binding says: the bare instant (or None) when it has no
    bounds, as most answers have not."""
    if binding.HasField("bound_not_before") or binding.HasField("bound_not_after"):
        return proto_binding_time(binding)
    return _proto_instant(binding, "bound_at")


def _proto_instant(
    binding: provider_pb2.Binding,
    name: Literal["bound_at", "bound_not_before", "bound_not_after"],
) -> datetime | None:
    if not binding.HasField(name):
        return None
    stamp: Timestamp = getattr(binding, name)
    if stamp.seconds <= 0:
        return None
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        # Beyond what a datetime holds: as unknown as a missing one.
        return None
