"""The principal resolver follows the registry: every provider by its certificate, with
its status; no provider can take a carrier's, an admin's or another provider's name."""

from __future__ import annotations

from datetime import UTC, datetime

from onecert.gateway._principals import Principal, PrincipalResolver, Role
from onecert.gateway.store import (
    DeliveryMode,
    EntryKind,
    EntryOrigin,
    RegistryEntry,
    RegistrySnapshot,
    RegistryStatus,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _entry(provider_id: str, status: RegistryStatus, client_cn: str | None = None) -> RegistryEntry:
    return RegistryEntry(
        kind=EntryKind.PROVIDER,
        id=provider_id,
        name="",
        category="other",
        address=None,
        delivery=DeliveryMode.POLL,
        plaintext=False,
        client_cn=client_cn,
        deadline_s=None,
        max_concurrency=None,
        prefixes=(),
        status=status,
        origin=EntryOrigin.ENROLLED,
        created_at=T0,
        invited_at=None,
        joined_at=None,
        activated_at=None,
        status_changed_at=T0,
        status_actor="admin:regulator",
        status_reason=None,
        cert_serial=None,
        cert_not_after=None,
        gate_passed=None,
        gate_failures=(),
        gate_at=None,
        version=1,
    )


def test_registry_providers_carry_their_status() -> None:
    """Certificates (and dev names) of registry providers resolve with their status; a
    removed one is still recognised, so it is refused as removed, not as unknown."""
    resolver = PrincipalResolver(
        carriers={"cm": "cm"}, providers={}, admin_cns=("regulator",), dev_principals=True
    )
    snapshot = RegistrySnapshot(
        version=3,
        entries=(
            _entry("pay", RegistryStatus.ACTIVE, client_cn="pay-cert"),
            _entry("chat", RegistryStatus.SUSPENDED),
            # A provider named like the admin's certificate never becomes the admin.
            _entry("regulator", RegistryStatus.ACTIVE),
        ),
        removed=frozenset({(EntryKind.PROVIDER, "gone")}),
    )
    resolver.apply_registry(snapshot)

    def who(cn: str) -> Principal | str:
        return resolver.identify(common_name=cn, metadata=())

    assert who("pay-cert") == Principal(Role.PROVIDER, "pay", RegistryStatus.ACTIVE)
    assert who("chat") == Principal(Role.PROVIDER, "chat", RegistryStatus.SUSPENDED)
    assert who("gone") == Principal(Role.PROVIDER, "gone", RegistryStatus.REMOVED)
    assert who("regulator") == Principal(Role.ADMIN, "regulator")
    assert isinstance(who("pay"), str)
    dev = resolver.identify(
        common_name=None, metadata=(("x-onecert-dev-principal", "provider:chat"),)
    )
    assert dev == Principal(Role.PROVIDER, "chat", RegistryStatus.SUSPENDED)
    assert resolver.reserved_cns() == {"cm", "regulator", "pay-cert"}
