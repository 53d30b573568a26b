"""The values an adapter receives and returns: frozen dataclasses and enums.

They mirror the onecert.v1 messages without being protobufs, so an adapter's
code and its tests never touch generated classes. Enums are string enums:
``BindingKind("login")`` and ``BindingKind.LOGIN`` are the same member, and
the dataclasses accept the plain strings too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar


class BindingKind(enum.StrEnum):
    """How an account uses the number."""

    LOGIN = "login"
    """A login identifier (SMS code login, password reset by SMS)."""
    PAYMENT = "payment"
    """Authorises payments or is tied to a wallet."""
    RECOVERY = "recovery"
    """An account-recovery channel."""
    TWO_FACTOR = "two_factor"
    """Receives second-factor codes."""
    CONTACT = "contact"
    """Only a contact detail."""


class UnbindReason(enum.StrEnum):
    """Why the gateway asks to detach a number."""

    OWNER_REQUEST = "owner_request"
    """The holder (current or former) detaches it from their own account."""
    PREVIOUS_HOLDER_RELEASE = "previous_holder_release"
    """The current holder releases it from a previous holder's account."""
    NUMBER_RECYCLED = "number_recycled"
    """The carrier reported the number given to a new subscriber."""


class UnbindOutcome(enum.StrEnum):
    """A provider's answer to an unbind."""

    DONE = "done"
    """The number is detached. Final."""
    PENDING = "pending"
    """Accepted, not finished; the gateway asks again with the same request id."""
    REJECTED = "rejected"
    """Refused, with a reason. Final."""


class TenureState(enum.StrEnum):
    """Where a number stands for the subscriber in a tenure."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    CANCELLED = "cancelled"
    """In the quiet period, not yet given to anyone else."""
    RECYCLED = "recycled"
    """Given to another subscriber."""


class ProviderCategory(enum.StrEnum):
    """What kind of service a provider runs; shown to citizens."""

    SOCIAL = "social"
    PAYMENT = "payment"
    ECOMMERCE = "ecommerce"
    RIDE_HAILING = "ride_hailing"
    DATING = "dating"
    FORUM = "forum"
    GAMING = "gaming"
    GOVERNMENT = "government"
    OTHER = "other"


_E = TypeVar("_E", bound=enum.StrEnum)


def coerce_enum(enum_type: type[_E], value: _E | str, what: str) -> _E:
    """``value`` as a member of ``enum_type``, accepting the member's string."""
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum_type)
        raise ValueError(f"{what} must be one of {allowed}") from None


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CallInfo:
    """Who asked and how long there is to answer; handed to every adapter function.

    In a unit test, build one directly::

        info = CallInfo(purpose="lookup", query_id="q-1",
                        deadline=datetime.now(UTC) + timedelta(seconds=5))

    Attributes:
        audience: your provider or carrier id, as the gateway's warrant names it.
        purpose: why the gateway asks: "lookup", "unbind", or
            "event" for a recycled-number notice.
        query_id: the gateway's query or ticket id; log it to correlate with
            the gateway.
        warrant_id: the ``jti`` of the warrant (or of the notice) that
            authorised the call.
        deadline: when the gateway stops waiting (UTC), or None without one.
    """

    audience: str = ""
    purpose: str = "lookup"
    query_id: str = ""
    warrant_id: str = ""
    deadline: datetime | None = None

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, (self.deadline - _utcnow()).total_seconds())


@dataclass(frozen=True)
class Binding:
    """One account bound to the number.

    Attributes:
        account_ref: your stable, opaque reference to the account (1 to 256
            characters); the gateway passes it back in :class:`UnbindRequest`.
            Never shown to citizens.
        kind: how the account uses the number (a :class:`BindingKind` or its
            string, e.g. "login").
        bound_at: when the number was bound to the account, exactly
            (timezone-aware). Give it, or the interval below, whenever you
            can: without either the gateway cannot tell whose account it is
            and hides its details. Never put a mere bound here (a
            registration date is not when the number was typed in).
        display_name: the account's name as you show it; masked by the gateway.
        last_used_at: when the account last used the number (timezone-aware).
        unbindable: whether :func:`unbind` can detach the number from it.
        bound_not_before: the number was bound at or after this instant
            (timezone-aware), for example the account's registration. The
            gateway details the account only when the whole interval up to
            ``bound_not_after`` (or now) lies inside the citizen's tenure.
        bound_not_after: the number was bound at or before this instant
            (timezone-aware), for example the row's last change when every
            change of the phone updates it. At or after ``bound_not_before``;
            with ``bound_at``, the bounds must enclose it.
    """

    account_ref: str
    kind: BindingKind
    bound_at: datetime | None
    display_name: str = ""
    last_used_at: datetime | None = None
    unbindable: bool = True
    bound_not_before: datetime | None = None
    bound_not_after: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", coerce_enum(BindingKind, self.kind, "Binding.kind"))


@dataclass(frozen=True)
class UnbindRequest:
    """The gateway asks to detach ``msisdn`` from one account.

    Attributes:
        request_id: the gateway's idempotency key (the unbind ticket id). The
            SDK already answers a repeated request id with the first final
            answer, so your function sees each one until it answers DONE or
            REJECTED. Record it with your change (in the same transaction)
            if you want your write itself to be idempotent.
        msisdn: the number, E.164.
        account_ref: the account, as your ``list_bindings`` returned it.
        reason: why.
        resumed: True when an earlier call of your function for this
            ``request_id`` started and its answer was never recorded (the
            process was killed, the function failed): that call may have
            applied the unbind. Answer as the first call would have: DONE if
            the number is now detached from the account, never "no such
            account" merely because the earlier call already detached it.
    """

    request_id: str
    msisdn: str
    account_ref: str
    reason: UnbindReason
    resumed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "reason", coerce_enum(UnbindReason, self.reason, "UnbindRequest.reason")
        )


@dataclass(frozen=True)
class UnbindResult:
    """Your answer to an unbind; build it with :meth:`done`, :meth:`rejected`
    or :meth:`pending`.

    Attributes:
        outcome: DONE, PENDING or REJECTED.
        reason: why, required for REJECTED; no personal data (digit runs that
            look like phone numbers are masked before it leaves).
        decided_at: when you applied or refused it (timezone-aware).
    """

    outcome: UnbindOutcome
    reason: str = ""
    decided_at: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "outcome", coerce_enum(UnbindOutcome, self.outcome, "UnbindResult.outcome")
        )

    @classmethod
    def done(cls, *, at: datetime | None = None) -> UnbindResult:
        """The number is detached (at ``at``, default now)."""
        return cls(UnbindOutcome.DONE, "", at or _utcnow())

    @classmethod
    def rejected(cls, reason: str, *, at: datetime | None = None) -> UnbindResult:
        """Refused, for ``reason`` (e.g. "no such account")."""
        return cls(UnbindOutcome.REJECTED, reason, at or _utcnow())

    @classmethod
    def pending(cls, reason: str = "") -> UnbindResult:
        """Accepted but not finished; the gateway asks again later."""
        return cls(UnbindOutcome.PENDING, reason, None)


@dataclass(frozen=True)
class RecycledNotice:
    """The gateway's notice that a number was given to a new subscriber.

    Accounts bound to ``msisdn`` before ``recycled_at`` belong to a previous
    holder: detach the number from them (by ``act_by`` when given).

    Attributes:
        jti: the notice's unique id (the Security Event Token's ``jti``).
        msisdn: the recycled number, E.164.
        recycled_at: when the number went to its new subscriber (UTC).
        act_by: the deadline to act by (UTC), or None.
        issued_at: when the gateway issued the notice (UTC).
        resumed: True when an earlier call of your function for this
            ``jti`` started and its answer was never recorded (the process
            died, or the function raised): it may have acted already, so act
            only on what is still left (removing a number already removed
            changes nothing).
    """

    jti: str
    msisdn: str
    recycled_at: datetime
    act_by: datetime | None = None
    issued_at: datetime | None = None
    resumed: bool = False


@dataclass(frozen=True)
class Tenure:
    """One subscriber's hold on one number (a carrier's answer).

    Attributes:
        msisdn: the number, E.164.
        held_from: when the subscriber started to hold it (timezone-aware).
        held_until: when they stopped (timezone-aware); None while held.
        state: ACTIVE or SUSPENDED while held, CANCELLED or RECYCLED after
            (a :class:`TenureState` or its string).
    """

    msisdn: str
    held_from: datetime
    held_until: datetime | None = None
    state: TenureState = TenureState.ACTIVE

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", coerce_enum(TenureState, self.state, "Tenure.state"))
