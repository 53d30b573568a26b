"""The principal resolver follows the registry: every provider by its certificate, with
its status; no provider can take a carrier's, an admin's or another provider's name."""

from __future__ import annotations

from onecert.gateway._principals import Principal, PrincipalResolver, Role
from onecert.gateway.store import DeliveryMode, EntryKind, RegistryStatus, SeedEntry, Store


def _seed(provider_id: str, client_cn: str | None = None) -> SeedEntry:
    """A poll-only provider as a ``[[providers]]`` block seeds it (active)."""
    return SeedEntry(
        EntryKind.PROVIDER, provider_id, delivery=DeliveryMode.POLL, client_cn=client_cn
    )


async def test_registry_providers_carry_their_status(store: Store) -> None:
    """Certificates (and dev names) of registry providers resolve with their status; a
    removed one is still recognised, so it is refused as removed, not as unknown."""
    resolver = PrincipalResolver(
        carriers={"cm": "cm"}, providers={}, admin_cns=("regulator",), dev_principals=True
    )
    # "regulator": a provider named like the admin's certificate never becomes the admin.
    providers = [
        _seed("pay", client_cn="pay-cert"),
        _seed("chat"),
        _seed("regulator"),
        _seed("gone"),
    ]
    await store.registry.seed(providers)
    await store.registry.set_status("chat", RegistryStatus.SUSPENDED, actor="admin:regulator")
    await store.registry.set_status("gone", RegistryStatus.REMOVED, actor="admin:regulator")
    resolver.apply_registry(await store.registry.snapshot())

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
