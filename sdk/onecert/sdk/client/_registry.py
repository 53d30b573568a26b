"""What the regulator reads and writes in the provider registry, as plain values."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from onecert.sdk._convert import enum_from_pb
from onecert.sdk.client._base import time_of
from onecert.v1 import common_pb2, gateway_pb2

__all__ = [
    "GateResult",
    "Invitation",
    "ProviderRecord",
    "ProviderStatus",
    "RegistryChange",
    "category_number",
    "change_from_pb",
    "gate_from_pb",
    "record_from_pb",
    "status_of_pb",
]


class ProviderStatus(enum.StrEnum):
    """Where a provider stands in the registry."""

    INVITED = "invited"
    """A token was issued; the provider has not joined."""
    PENDING = "pending"
    """Joined, not through the conformance gate yet."""
    ACTIVE = "active"
    """Called by lookups and notices; may call the gateway."""
    SUSPENDED = "suspended"
    """Neither called nor heard until resumed."""
    REMOVED = "removed"
    """Never again."""

    @property
    def pb(self) -> gateway_pb2.ProviderStatus.ValueType:
        """The ``onecert.v1.ProviderStatus`` number."""
        return gateway_pb2.ProviderStatus.Value(f"PROVIDER_STATUS_{self.name}")


def status_of_pb(number: gateway_pb2.ProviderStatus.ValueType) -> ProviderStatus | None:
    """The status a ``ProviderStatus`` number stands for (None: unspecified or unknown)."""
    return enum_from_pb(ProviderStatus, gateway_pb2.ProviderStatus, number, "PROVIDER_STATUS_")


def category_number(name: str) -> common_pb2.ProviderCategory.ValueType:
    """``"payment"`` -> ``PROVIDER_CATEGORY_PAYMENT``; ValueError for an unknown name."""
    key = f"PROVIDER_CATEGORY_{name.strip().upper()}"
    if key == "PROVIDER_CATEGORY_UNSPECIFIED" or key not in common_pb2.ProviderCategory.keys():  # noqa: SIM118 - an enum wrapper, not a dict
        raise ValueError(f"unknown category {name!r}")
    return common_pb2.ProviderCategory.Value(key)


def _category_name(number: common_pb2.ProviderCategory.ValueType) -> str:
    try:
        return common_pb2.ProviderCategory.Name(number).removeprefix("PROVIDER_CATEGORY_").lower()
    except ValueError:
        return "other"


@dataclass(frozen=True)
class GateResult:
    """The last conformance run against a joining provider."""

    passed: bool
    failures: tuple[str, ...]
    at: datetime | None


@dataclass(frozen=True)
class ProviderRecord:
    """A provider as the registry holds it (``onecert.v1.ProviderRecord``).

    ``address`` is None for a provider that only polls; ``origin`` is
    ``"config"`` (a ``[[providers]]`` block) or ``"enrolled"`` (an invitation);
    ``activated_at`` is its onboarding date.
    """

    provider_id: str
    name: str
    category: str
    status: ProviderStatus | None
    address: str | None
    delivery: str
    origin: str
    invited_at: datetime | None
    joined_at: datetime | None
    activated_at: datetime | None
    status_changed_at: datetime | None
    status_actor: str
    status_reason: str
    certificate_serial: str
    certificate_not_after: datetime | None
    last_gate: GateResult | None


@dataclass(frozen=True)
class RegistryChange:
    """One change in a provider's history."""

    at: datetime | None
    actor: str
    action: str
    from_status: ProviderStatus | None
    to_status: ProviderStatus | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class Invitation:
    """A provider invited: its record and the one-time token, shown this once."""

    provider: ProviderRecord
    token: str
    expires_at: datetime | None


def record_from_pb(record: gateway_pb2.ProviderRecord) -> ProviderRecord:
    """The record from its protobuf."""
    gate = gate_from_pb(record.last_gate) if record.HasField("last_gate") else None
    origin = gateway_pb2.ProviderOrigin.Name(record.origin).removeprefix("PROVIDER_ORIGIN_")
    return ProviderRecord(
        provider_id=record.provider_id,
        name=record.name,
        category=_category_name(record.category),
        status=status_of_pb(record.status),
        address=record.address or None,
        delivery=record.delivery,
        origin=origin.lower(),
        invited_at=time_of(record, "invited_at"),
        joined_at=time_of(record, "joined_at"),
        activated_at=time_of(record, "activated_at"),
        status_changed_at=time_of(record, "status_changed_at"),
        status_actor=record.status_actor,
        status_reason=record.status_reason,
        certificate_serial=record.certificate_serial,
        certificate_not_after=time_of(record, "certificate_not_after"),
        last_gate=gate,
    )


def gate_from_pb(gate: gateway_pb2.GateResult) -> GateResult:
    """A gate run from its protobuf."""
    return GateResult(passed=gate.passed, failures=tuple(gate.failures), at=time_of(gate, "at"))


def change_from_pb(change: gateway_pb2.RegistryChange) -> RegistryChange:
    """The history entry from its protobuf."""
    try:
        detail = json.loads(change.detail) if change.detail else {}
    except ValueError:
        detail = {"text": change.detail}
    return RegistryChange(
        at=time_of(change, "at"),
        actor=change.actor,
        action=change.action,
        from_status=status_of_pb(change.from_status),
        to_status=status_of_pb(change.to_status),
        detail=detail if isinstance(detail, dict) else {"value": detail},
    )
