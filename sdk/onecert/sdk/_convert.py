"""Protobuf <-> dataclass conversion, and the rules an adapter's answers must follow.

Converting what an adapter returns is also where it is checked: a binding
without an account ref, a naive datetime or a tenure whose state contradicts
its dates never leaves the process. :class:`InvalidResultError` names the
rule broken, never the values (they may be personal data).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from onecert.sdk._msisdn import is_e164, mask_numbers_in_text
from onecert.sdk._types import (
    Binding,
    BindingKind,
    ProviderCategory,
    Tenure,
    TenureState,
    UnbindOutcome,
    UnbindReason,
    UnbindResult,
)
from onecert.v1 import common_pb2, provider_pb2, registry_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

MAX_ACCOUNT_REF = 256
MAX_DISPLAY_NAME = 256
MAX_REASON = 512
# A sanity bound on one answer; an adapter returning more is almost surely
# answering for the wrong key.
MAX_BINDINGS = 10_000
MAX_TENURES = 1_000


class InvalidResultError(Exception):
    """An adapter function returned something the contract does not allow.

    ``what`` is "binding", "unbind result", "tenure" or "event result";
    ``rule`` says which rule was broken and never contains the values.
    """

    def __init__(self, what: str, rule: str) -> None:
        super().__init__(f"adapter returned an invalid {what}: {rule}")
        self.what = what
        self.rule = rule


_E = TypeVar("_E", bound=enum.Enum)
_V = TypeVar("_V", bound=int)
_P = TypeVar("_P")


# Enum <-> proto value, by name: BindingKind.LOGIN <-> BINDING_KIND_LOGIN.
def enum_to_pb(member: enum.Enum, pb_enum: _EnumTypeWrapper[_V], prefix: str) -> _V:
    """The value of ``pb_enum`` named ``prefix`` + the member's name."""
    return pb_enum.Value(prefix + member.name)


def enum_from_pb(
    enum_type: type[_E],
    pb_enum: _EnumTypeWrapper[_V],
    value: _V,
    prefix: str,
    default: _E | None = None,
) -> _E | None:
    """The member of ``enum_type`` named like ``value`` of ``pb_enum`` without ``prefix``.

    ``default`` for a value this SDK does not know (a newer peer's) or has no
    member for (UNSPECIFIED).
    """
    if value not in pb_enum.values():
        return default
    return enum_type.__members__.get(pb_enum.Name(value).removeprefix(prefix), default)


class EnumMap(Generic[_E, _V]):
    """One SDK enum and its protobuf enum, paired by member name.

    ``BindingKind.LOGIN`` is ``BINDING_KIND_LOGIN``: the protobuf value's name
    is ``prefix`` + the member's name.
    """

    def __init__(self, enum_type: type[_E], pb_enum: _EnumTypeWrapper[_V], prefix: str) -> None:
        self._enum_type = enum_type
        self._pb_enum = pb_enum
        self._prefix = prefix

    def to_pb(self, member: _E) -> _V:
        return enum_to_pb(member, self._pb_enum, self._prefix)

    def from_pb_or_none(self, value: _V) -> _E | None:
        """The member, or None for UNSPECIFIED or a value this SDK does not know."""
        return enum_from_pb(self._enum_type, self._pb_enum, value, self._prefix)

    def from_pb(self, value: _V) -> _E:
        """The member; ValueError for UNSPECIFIED or a value this SDK does not know."""
        member = self.from_pb_or_none(value)
        if member is None:
            raise ValueError(f"unknown or unspecified enum value {value}")
        return member


BINDING_KINDS = EnumMap(BindingKind, common_pb2.BindingKind, "BINDING_KIND_")
UNBIND_REASONS = EnumMap(UnbindReason, common_pb2.UnbindReason, "UNBIND_REASON_")
UNBIND_OUTCOMES = EnumMap(UnbindOutcome, common_pb2.UnbindOutcome, "UNBIND_OUTCOME_")
TENURE_STATES = EnumMap(TenureState, common_pb2.TenureState, "TENURE_STATE_")
CATEGORIES = EnumMap(ProviderCategory, common_pb2.ProviderCategory, "PROVIDER_CATEGORY_")


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _aware(value: object, name: str, what: str, *, optional: bool) -> datetime | None:
    if value is None:
        if optional:
            return None
        raise InvalidResultError(what, f"{name} is required")
    if not isinstance(value, datetime):
        raise InvalidResultError(what, f"{name} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidResultError(
            what, f"{name} is a naive datetime; give it a timezone (e.g. tzinfo=UTC)"
        )
    return value


def binding_to_pb(binding: object) -> provider_pb2.Binding:
    """Check one :class:`Binding` and convert it."""
    what = "binding"
    if not isinstance(binding, Binding):
        raise InvalidResultError(what, f"expected a Binding, got {type(binding).__name__}")
    ref: object = binding.account_ref
    if not isinstance(ref, str) or not ref:
        raise InvalidResultError(what, "account_ref is empty")
    if len(ref) > MAX_ACCOUNT_REF:
        raise InvalidResultError(what, f"account_ref is longer than {MAX_ACCOUNT_REF} characters")
    if not isinstance(binding.display_name, str):
        raise InvalidResultError(what, "display_name must be a string")
    if len(binding.display_name) > MAX_DISPLAY_NAME:
        raise InvalidResultError(what, f"display_name is longer than {MAX_DISPLAY_NAME} characters")
    if not isinstance(binding.kind, BindingKind):
        raise InvalidResultError(what, "kind must be a BindingKind")
    if not isinstance(binding.unbindable, bool):
        raise InvalidResultError(what, "unbindable must be a bool")
    bound_at = _aware(binding.bound_at, "bound_at", what, optional=True)
    last_used_at = _aware(binding.last_used_at, "last_used_at", what, optional=True)
    not_before = _aware(binding.bound_not_before, "bound_not_before", what, optional=True)
    not_after = _aware(binding.bound_not_after, "bound_not_after", what, optional=True)
    _check_bounds(bound_at, not_before, not_after)
    out = provider_pb2.Binding(
        account_ref=ref,
        display_name=binding.display_name,
        kind=BINDING_KINDS.to_pb(binding.kind),
        unbindable=binding.unbindable,
    )
    if bound_at is not None:
        out.bound_at.CopyFrom(timestamp(bound_at))
    if last_used_at is not None:
        out.last_used_at.CopyFrom(timestamp(last_used_at))
    if not_before is not None:
        out.bound_not_before.CopyFrom(timestamp(not_before))
    if not_after is not None:
        out.bound_not_after.CopyFrom(timestamp(not_after))
    return out


def _check_bounds(
    bound_at: datetime | None, not_before: datetime | None, not_after: datetime | None
) -> None:
    """The binding-time fields must agree: an interval that is empty, or an
    exact time outside its own bounds, says nothing true about the account."""
    what = "binding"
    if not_before is not None and not_after is not None and not_after < not_before:
        raise InvalidResultError(what, "bound_not_after is before bound_not_before")
    if bound_at is None:
        return
    if not_before is not None and bound_at < not_before:
        raise InvalidResultError(what, "bound_at is before bound_not_before")
    if not_after is not None and bound_at > not_after:
        raise InvalidResultError(what, "bound_at is after bound_not_after")


def bindings_to_pb(result: object) -> list[provider_pb2.Binding]:
    """Check what ``list_bindings`` returned (any iterable of :class:`Binding`)."""
    return _each(result, binding_to_pb, "list_bindings", "binding", most=MAX_BINDINGS, per="number")


def _each(
    result: object,
    convert: Callable[[object], _P],
    function: str,
    what: str,
    *,
    most: int,
    per: str,
) -> list[_P]:
    """``convert`` each item ``function`` returned: it must be a list of
    ``what`` (any iterable but a string, bytes or a dict), at most ``most``
    for one ``per``."""
    if isinstance(result, str | bytes | dict) or not isinstance(result, Iterable):
        raise InvalidResultError(what, f"{function} must return a list of {what.title()}")
    out = [convert(item) for item in result]
    if len(out) > most:
        raise InvalidResultError(what, f"more than {most} {what}s for one {per}")
    return out


def binding_from_pb(pb: provider_pb2.Binding) -> Binding:
    return Binding(
        account_ref=pb.account_ref,
        kind=BINDING_KINDS.from_pb(pb.kind),
        bound_at=from_timestamp(pb.bound_at) if pb.HasField("bound_at") else None,
        display_name=pb.display_name,
        last_used_at=from_timestamp(pb.last_used_at) if pb.HasField("last_used_at") else None,
        unbindable=pb.unbindable,
        bound_not_before=(
            from_timestamp(pb.bound_not_before) if pb.HasField("bound_not_before") else None
        ),
        bound_not_after=(
            from_timestamp(pb.bound_not_after) if pb.HasField("bound_not_after") else None
        ),
    )


def unbind_result_to_pb(result: object, *, now: datetime) -> provider_pb2.UnbindResponse:
    """Check what ``unbind`` returned and convert it.

    A final answer without ``decided_at`` is stamped ``now``; digit runs that
    look like phone numbers are masked out of the reason.
    """
    what = "unbind result"
    if not isinstance(result, UnbindResult):
        raise InvalidResultError(
            what, f"unbind must return an UnbindResult, got {type(result).__name__}"
        )
    if not isinstance(result.outcome, UnbindOutcome):
        raise InvalidResultError(what, "outcome must be an UnbindOutcome")
    if not isinstance(result.reason, str):
        raise InvalidResultError(what, "reason must be a string")
    if result.outcome is UnbindOutcome.REJECTED and not result.reason.strip():
        raise InvalidResultError(what, "a REJECTED result needs a reason")
    if len(result.reason) > MAX_REASON:
        raise InvalidResultError(what, f"reason is longer than {MAX_REASON} characters")
    decided_at = _aware(result.decided_at, "decided_at", what, optional=True)
    out = provider_pb2.UnbindResponse(
        outcome=UNBIND_OUTCOMES.to_pb(result.outcome),
        reason=mask_numbers_in_text(result.reason),
    )
    if decided_at is None and result.outcome is not UnbindOutcome.PENDING:
        decided_at = now
    if decided_at is not None:
        out.decided_at.CopyFrom(timestamp(decided_at))
    return out


def unbind_result_from_pb(pb: provider_pb2.UnbindResponse) -> UnbindResult:
    return UnbindResult(
        outcome=UNBIND_OUTCOMES.from_pb(pb.outcome),
        reason=pb.reason,
        decided_at=from_timestamp(pb.decided_at) if pb.HasField("decided_at") else None,
    )


def tenure_to_pb(tenure: object, *, carrier_id: str) -> registry_pb2.Tenure:
    """Check one :class:`Tenure` and convert it, stamped with ``carrier_id``."""
    what = "tenure"
    if not isinstance(tenure, Tenure):
        raise InvalidResultError(what, f"expected a Tenure, got {type(tenure).__name__}")
    msisdn: object = tenure.msisdn
    if not isinstance(msisdn, str) or not is_e164(msisdn):
        raise InvalidResultError(what, "msisdn is not E.164 ('+' then 8 to 15 digits)")
    if not isinstance(tenure.state, TenureState):
        raise InvalidResultError(what, "state must be a TenureState")
    held_from = _aware(tenure.held_from, "held_from", what, optional=False)
    held_until = _aware(tenure.held_until, "held_until", what, optional=True)
    assert held_from is not None
    held = tenure.state in (TenureState.ACTIVE, TenureState.SUSPENDED)
    if held and held_until is not None:
        raise InvalidResultError(what, f"a {tenure.state.name} tenure cannot have held_until")
    if not held and held_until is None:
        raise InvalidResultError(what, f"a {tenure.state.name} tenure needs held_until")
    if held_until is not None and held_until < held_from:
        raise InvalidResultError(what, "held_until is before held_from")
    out = registry_pb2.Tenure(
        msisdn=msisdn, carrier_id=carrier_id, state=TENURE_STATES.to_pb(tenure.state)
    )
    out.held_from.CopyFrom(timestamp(held_from))
    if held_until is not None:
        out.held_until.CopyFrom(timestamp(held_until))
    return out


def tenures_to_pb(result: object, *, carrier_id: str) -> list[registry_pb2.Tenure]:
    """Check what ``list_numbers`` returned (any iterable of :class:`Tenure`)."""
    to_pb = functools.partial(tenure_to_pb, carrier_id=carrier_id)
    return _each(result, to_pb, "list_numbers", "tenure", most=MAX_TENURES, per="idn")


def tenure_from_pb(pb: registry_pb2.Tenure) -> Tenure:
    return Tenure(
        msisdn=pb.msisdn,
        held_from=from_timestamp(pb.held_from),
        held_until=from_timestamp(pb.held_until) if pb.HasField("held_until") else None,
        state=TENURE_STATES.from_pb(pb.state),
    )
