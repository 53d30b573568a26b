"""The registry's values: entries, statuses and the transitions between them, invitations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from onecert.gateway._config import Named
from onecert.gateway.store._types import DeliveryMode, StoreError

__all__ = [
    "INVITABLE",
    "STATUS_TARGETS",
    "AlreadyExistsError",
    "EntryKind",
    "EntryOrigin",
    "Invitation",
    "RedeemOutcome",
    "RedeemResult",
    "RegistryEntry",
    "RegistryEvent",
    "RegistrySnapshot",
    "RegistryStatus",
    "SeedEntry",
    "SeedReport",
    "TransitionError",
]


class AlreadyExistsError(StoreError):
    """The entry exists in a status that forbids the operation (an active id invited)."""


class TransitionError(StoreError):
    """The entry's status does not allow the change asked for (the message says why)."""


class EntryKind(StrEnum):
    """What a registry entry is."""

    PROVIDER = "provider"
    CARRIER = "carrier"


class RegistryStatus(StrEnum):
    """Where a provider (or carrier) stands in the registry.

    ``invited``: a token was issued, nothing joined yet. ``pending``: joined
    (token redeemed), not yet through the conformance gate. ``active``:
    called by lookups and notices. ``suspended``: neither called nor heard,
    until resumed. ``removed``: never again (an invitation may re-open the id).
    """

    INVITED = "invited"
    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REMOVED = "removed"


class EntryOrigin(StrEnum):
    """Where an entry came from: ``[[providers]]``/``[[carriers]]``, or an invitation."""

    CONFIG = "config"
    ENROLLED = "enrolled"


# set_status(): the statuses each status may be moved to by an admin. Joining
# (invited -> pending) and activation (pending -> active) happen only through
# redeem_token() and record_gate(). Resuming (suspended -> active) lands in
# pending instead when the entry was never activated.
STATUS_TARGETS: Final[Mapping[RegistryStatus, frozenset[RegistryStatus]]] = {
    RegistryStatus.INVITED: frozenset({RegistryStatus.REMOVED}),
    RegistryStatus.PENDING: frozenset({RegistryStatus.SUSPENDED, RegistryStatus.REMOVED}),
    RegistryStatus.ACTIVE: frozenset({RegistryStatus.SUSPENDED, RegistryStatus.REMOVED}),
    RegistryStatus.SUSPENDED: frozenset({RegistryStatus.ACTIVE, RegistryStatus.REMOVED}),
    RegistryStatus.REMOVED: frozenset(),
}

# invite(): the statuses an existing id may be (re-)invited from; an active
# or suspended id is refused (suspended ones are resumed, not re-invited).
INVITABLE: Final = frozenset(
    {RegistryStatus.INVITED, RegistryStatus.PENDING, RegistryStatus.REMOVED}
)


@dataclass(frozen=True)
class RegistryEntry(Named):
    """One provider or carrier as the registry holds it.

    Attributes:
        kind: provider or carrier.
        id: its id (``[a-z0-9._-]{1,64}``).
        name: its display name ("" for none).
        category: a provider's category by its config name ("payment"); None for carriers.
        address: where the gateway dials it; None for a poll-only provider.
        delivery: how it receives notices (push or poll).
        plaintext: dialed without TLS (development only).
        client_cn: the CN of its client certificate, when not its id.
        deadline_s: its own call deadline (None: the ``[fanout]`` default).
        max_concurrency: its own cap on calls in flight (None: the default).
        prefixes: a carrier's number prefixes (empty for providers).
        status: see :class:`RegistryStatus`.
        origin: config-seeded or enrolled.
        created_at: when the entry first appeared.
        invited_at: the last invitation (None for config entries).
        joined_at: when its token was redeemed (None before).
        activated_at: when it first passed the gate or was seeded (None before).
        status_changed_at: when its status last changed.
        status_actor: who changed it last (``admin:regulator``, ``config``, ``gateway``).
        status_reason: why, as the actor said.
        cert_serial: its current certificate's serial (lowercase hex), if issued here.
        cert_not_after: that certificate's expiry.
        gate_passed: the last conformance gate's verdict (None before any).
        gate_failures: what failed at that gate.
        gate_at: when that gate ran.
        version: the registry version of its last change.
    """

    kind: EntryKind
    id: str
    name: str
    category: str | None
    address: str | None
    delivery: DeliveryMode
    plaintext: bool
    client_cn: str | None
    deadline_s: float | None
    max_concurrency: int | None
    prefixes: tuple[str, ...]
    status: RegistryStatus
    origin: EntryOrigin
    created_at: datetime
    invited_at: datetime | None
    joined_at: datetime | None
    activated_at: datetime | None
    status_changed_at: datetime
    status_actor: str
    status_reason: str | None
    cert_serial: str | None
    cert_not_after: datetime | None
    gate_passed: bool | None
    gate_failures: tuple[str, ...]
    gate_at: datetime | None
    version: int


@dataclass(frozen=True)
class RegistrySnapshot:
    """The registry at one version, as replicas apply it.

    ``entries`` holds every entry that is not removed; ``removed`` the
    (kind, id) of those that are, so that a removed provider's certificate
    can be refused with a clear message rather than as unknown.
    """

    version: int
    entries: tuple[RegistryEntry, ...]
    removed: frozenset[tuple[EntryKind, str]] = frozenset()

    def of(self, kind: EntryKind, *statuses: RegistryStatus) -> tuple[RegistryEntry, ...]:
        """The entries of ``kind``, only those in ``statuses`` when any are given."""
        return tuple(
            e for e in self.entries if e.kind is kind and (not statuses or e.status in statuses)
        )


@dataclass(frozen=True)
class Invitation:
    """A provider invited: its entry and the one-time token (shown once, never stored)."""

    entry: RegistryEntry
    token: str
    expires_at: datetime


class RedeemOutcome(StrEnum):
    """How a token redemption ended (anything but REDEEMED changes nothing)."""

    REDEEMED = "redeemed"
    # No such token (never issued, or mistyped).
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"
    # The token was issued for another provider id.
    OTHER_ID = "other_id"
    # Voided by a newer invitation, or by the provider's removal.
    REVOKED = "revoked"
    # The provider is neither invited nor pending (suspended, active, removed).
    NOT_INVITED = "not_invited"


@dataclass(frozen=True)
class RedeemResult:
    """The outcome of :meth:`RegistryRepository.redeem_token`, and the entry after it
    (None when the token or the provider is unknown)."""

    outcome: RedeemOutcome
    entry: RegistryEntry | None = None


@dataclass(frozen=True)
class RegistryEvent:
    """One change in an entry's history."""

    seq: int
    kind: EntryKind
    entry_id: str
    at: datetime
    actor: str
    action: str
    from_status: RegistryStatus | None
    to_status: RegistryStatus | None
    detail: Mapping[str, str | int | bool]


@dataclass(frozen=True)
class SeedEntry:
    """A ``[[providers]]`` or ``[[carriers]]`` block, as the registry is seeded with it."""

    kind: EntryKind
    id: str
    name: str = ""
    category: str | None = None
    address: str | None = None
    delivery: DeliveryMode = DeliveryMode.PUSH
    plaintext: bool = False
    client_cn: str | None = None
    deadline_s: float | None = None
    max_concurrency: int | None = None
    prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeedReport:
    """What seeding changed: ids added, updated, removed (gone from the configuration),
    and ids it left alone because an invitation owns them."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether the registry changed."""
        return bool(self.added or self.updated or self.removed)
