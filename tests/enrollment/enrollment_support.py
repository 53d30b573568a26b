"""The gate tests' provider "example-forum": joining it and asking for its activation."""

from __future__ import annotations

from pathlib import Path

from onecert.gateway import GatewayServer
from onecert.gateway._principals import Principal, Role
from onecert.gateway.enrollment.testing import invite_and_join
from onecert.gateway.store import RegistryEntry, RegistryStatus, Store
from onecert.gateway.testing import Federation
from onecert.sdk import JoinResult
from onecert.v1 import gateway_pb2

ID = "example-forum"


async def join_forum(
    gateway: GatewayServer,
    store: Store,
    federation: Federation,
    directory: Path,
    address: str | None,
    *,
    category: str = "other",
) -> JoinResult:
    """The regulator invites ID; it joins naming ``address``, its credentials written to
    ``directory``."""
    return await invite_and_join(
        gateway,
        store,
        federation.keys.dev,
        provider_id=ID,
        directory=directory,
        address=address,
        category=category,
    )


async def registry_entry(store: Store) -> RegistryEntry:
    """ID's entry in the registry (it has one)."""
    entry = await store.registry.get(ID)
    assert entry is not None
    return entry


async def request_activation(
    gateway: GatewayServer, status: RegistryStatus = RegistryStatus.PENDING
) -> gateway_pb2.RequestActivationResponse:
    """ID, by its certificate, asks to be activated: the gate runs against it."""
    assert gateway.enrollment is not None
    return await gateway.enrollment.service.request_activation(Principal(Role.PROVIDER, ID, status))
