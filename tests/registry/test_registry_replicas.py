"""Registry changes reach every replica: two gateways on one PostgreSQL, and the
configuration seeding the registry across restarts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest

from onecert.gateway._config import CheckRecycledConfig, StoreConfig
from onecert.gateway.store import RegistryStatus
from onecert.gateway.store.testing import Database
from onecert.gateway.testing import Federation, FederationKeys
from onecert.v1 import gateway_pb2
from tests.notices.notices_support import eventually
from tests.registry.registry_support import RegistryWorld, code_of

# The registry's promise: a change made anywhere applies everywhere within this.
PROPAGATION_S = 5.0


@pytest.mark.postgres
async def test_two_replicas_follow_activation_and_suspension(
    federation_keys: FederationKeys, pg_url: str, tmp_path: Path
) -> None:
    """A provider activated in the database is called by both replicas within 5 s, and a
    provider suspended at one replica is no longer called by the other within 5 s."""
    async with (
        Database.postgres(pg_url) as database,
        Federation(federation_keys, tmp_path, tls=True) as fed,
    ):
        store = await database.open_upgraded()
        try:
            world = RegistryWorld(fed, store)
            await fed.carrier()
            await world.provider("pay")
            late = await world.provider("late", configured=False)
            config = fed.config(
                store=StoreConfig(url=database.url, schema=database.schema, auto_migrate=True)
            )
            # Each replica opens its own store, as two processes would.
            first = await fed.gateway(config)
            second = await fed.gateway(config)
            invitation = await world.invite(first, "late")
            await store.registry.redeem_token(
                "late",
                invitation.enrollment_token,
                address=world.addresses["late"],
                delivery="push",
            )
            assert await world.asked(first) == await world.asked(second) == {"pay"}

            await store.registry.record_gate("late", passed=True)

            async def both_ask_late() -> bool:
                return "late" in await world.asked(first) and "late" in await world.asked(second)

            await eventually(both_ask_late, within=PROPAGATION_S, what="both replicas ask late")
            await world.admin(first).SuspendProvider(
                gateway_pb2.SuspendProviderRequest(provider_id="late", reason="audit"), timeout=10
            )
            assert "late" not in await world.asked(first)

            async def second_stopped() -> bool:
                return "late" not in await world.asked(second)

            await eventually(second_stopped, within=PROPAGATION_S, what="the other replica stops")
            calls = late.record.calls
            assert await world.asked(first) == await world.asked(second) == {"pay"}
            assert late.record.calls == calls
        finally:
            await store.close()


async def test_seeding_is_idempotent_and_follows_the_configuration(
    world: RegistryWorld,
) -> None:
    """Restarting with the same configuration changes nothing; a renamed provider is
    updated, a provider dropped from the file is removed (and never asked), and an
    admin's suspension of a configured provider survives restarts."""
    gateway = await world.start("pay", "chat", "slow")
    version = await world.store.registry.version()
    await gateway.stop(0)
    again = await world.gateway()
    assert await world.store.registry.version() == version
    assert await world.asked(again) == {"pay", "chat", "slow"}
    await world.admin(again).SuspendProvider(
        gateway_pb2.SuspendProviderRequest(provider_id="slow", reason="review"), timeout=10
    )
    await again.stop(0)

    config = world.fed.config()
    renamed = tuple(
        dataclasses.replace(p, name="Chat Ltd") if p.id == "chat" else p
        for p in config.providers
        if p.id != "pay"
    )
    third = await world.fed.gateway(
        dataclasses.replace(config, providers=renamed), server_options={"store": world.store}
    )
    assert await world.asked(third) == {"chat"}
    entries = {e.id: e for e in await world.store.registry.list()}
    assert entries["chat"].name == "Chat Ltd"
    assert entries["pay"].status is RegistryStatus.REMOVED
    assert entries["pay"].status_actor == "config"
    assert entries["slow"].status is RegistryStatus.SUSPENDED
    actions = [e.action for e in await world.store.registry.history("chat")]
    assert actions == ["seed", "seed"]


async def test_check_recycled_limit_is_one_for_all_replicas(world: RegistryWorld) -> None:
    """Two replicas draw a provider's CheckRecycled calls from one bucket: its burst is
    spent across both, and the next call at either is RESOURCE_EXHAUSTED."""
    await world.fed.carrier()
    await world.provider("pay")
    limit = CheckRecycledConfig(rate_per_s=0.5, burst=2)
    first = await world.gateway(check_recycled=limit)
    second = await world.gateway(check_recycled=limit)
    request = gateway_pb2.CheckRecycledRequest(msisdn="+8613800138001")
    request.specified_date.GetCurrentTime()
    for gateway in (first, second):
        await world.as_provider(gateway, "pay").CheckRecycled(request, timeout=10)
    for gateway in (first, second):
        code, details = await code_of(
            world.as_provider(gateway, "pay").CheckRecycled(request, timeout=10)
        )
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "rate limit" in details
