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
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

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
        return int(self.value)

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


def _checked(tenures: Sequence[TenureView]) -> None:
    if not tenures:
        raise ValueError("attribution needs at least one tenure of the number")
    msisdn = tenures[0].msisdn
    if any(t.msisdn != msisdn for t in tenures):
        raise ValueError("attribution takes the tenures of one number only")


def _attribute(
    tenures: Sequence[TenureView], bound_at: datetime | None, now: datetime
) -> Attribution | None:
    current = any(t.current for t in tenures)
    if bound_at is not None:
        _check_aware("bound_at", bound_at)
        if bound_at > now + FUTURE_TOLERANCE:
            bound_at = None
    if bound_at is None:
        return Attribution.PREVIOUS_HOLDER if current else None
    if any(t.covers(bound_at) for t in tenures):
        return Attribution.MINE if current else Attribution.LEFT_BEHIND
    # Outside every tenure of the citizen's: someone else held the number.
    # On a current number that can only be before the current tenure.
    return Attribution.PREVIOUS_HOLDER if current else None


def attribute(
    tenures: Sequence[TenureView], bound_at: datetime | None, *, now: datetime | None = None
) -> Attribution | None:
    """Whose account a binding of one number is; None when it is none of the citizen's business.

    Args:
        tenures: all of the citizen's tenures of this one number (usually one).
        bound_at: when the number was bound to the account (timezone-aware), or
            None when the provider did not say.
        now: the current time; for tests.

    Raises:
        ValueError: no tenures, tenures of several numbers, or a naive ``bound_at``.
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
    bound_at: Callable[[B], datetime | None],
    now: datetime | None = None,
) -> Attributed[B]:
    """Attribute every binding one provider gave for one number.

    Args:
        tenures: all of the citizen's tenures of the number asked about.
        bindings: the provider's answer, in any form; ``bound_at`` reads the
            binding time of one (for ``provider_pb2.Binding`` use
            :func:`proto_bound_at`).
        bound_at: the accessor for a binding's ``bound_at``.
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
    if not binding.HasField("bound_at"):
        return None
    stamp = binding.bound_at
    if stamp.seconds <= 0:
        return None
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        # Beyond what a datetime holds: as unknown as a missing one.
        return None
