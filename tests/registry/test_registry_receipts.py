"""A citizen's unbind receipt keeps naming the provider by its name after the regulator
suspends it (the directory holds active providers only; the registry holds the rest)."""

from __future__ import annotations

from onecert.gateway.testing import CURRENT
from onecert.v1 import gateway_pb2
from tests.registry.registry_support import RegistryWorld


async def test_a_receipt_names_a_suspended_provider_by_its_name(world: RegistryWorld) -> None:
    """GetUnbind for a ticket at a provider suspended since shows the provider's registry
    name, not its id."""
    await world.fed.carrier()
    await world.fed.provider(
        "pay",
        {CURRENT: [world.fed.binding("pay-1", "xiaoyu", world.fed.at(2021, 2))]},
        name="Pay Wallet",
    )
    gateway = await world.gateway()
    messages = await world.fed.lookup(gateway)
    handle = world.fed.result_of(messages, "pay", CURRENT).bindings[0].handle
    ticket = await world.fed.unbind(gateway, handle)
    await world.admin(gateway).SuspendProvider(
        gateway_pb2.SuspendProviderRequest(provider_id="pay", reason="test"), timeout=10
    )
    assert gateway.registry is not None
    await gateway.registry.refresh()
    assert "pay" not in gateway.registry.directory
    receipt = await world.fed.stub(gateway).GetUnbind(
        gateway_pb2.GetUnbindRequest(ticket_id=ticket.ticket_id),
        metadata=world.fed.bearer(world.fed.assertion()),
        timeout=10,
    )
    assert receipt.ticket.provider_id == "pay"
    assert receipt.ticket.provider_name == "Pay Wallet"
