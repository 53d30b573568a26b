"""Routing never drops a holder, from the SDK's filter through the store to a second replica,
for lookups and for recycled-number notices alike."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onecert.gateway._config import NoticesConfig, ProviderConfig, RoutingConfig
from onecert.gateway._notices import NoticeService
from onecert.gateway._principals import Principal, Role
from onecert.gateway.routing import FilterSealer, RoutingKeyring, RoutingService
from onecert.gateway.store import Store
from onecert.sdk.routing import FilterAdditions, build_filter
from onecert.v1 import gateway_pb2
from tests.routing.routing_support import source

POOL = [f"+86136{i:08d}" for i in range(0, 60 * 7919, 7919)]
PROVIDERS = ["a", "b", "c", "d"]
KEY = bytes(range(32))
FILTER_KEY = bytes(range(32, 64))
_runs = itertools.count()

# What a provider does: never publish, publish a snapshot (plus additions), or opt out.
_plan = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(["none", "snapshot", "opt_out"]),
        "snapshot": st.sets(st.sampled_from(POOL), max_size=20),
        "added": st.sets(st.sampled_from(POOL), max_size=5),
        "stale": st.booleans(),
    }
)


def _service(store: Store) -> RoutingService:
    return RoutingService(
        keyring=RoutingKeyring({1: KEY}, active=1),
        store=store,
        sealer=FilterSealer(FILTER_KEY),
        providers=PROVIDERS,
        config=RoutingConfig(),
    )


async def _publish(service: RoutingService, provider_id: str, plan: dict[str, object]) -> set[str]:
    """Carry out ``plan`` for one provider through ``service``; the numbers it holds."""
    caller = Principal(Role.PROVIDER, provider_id)
    snapshot: set[str] = plan["snapshot"]  # type: ignore[assignment]  # from the strategy
    added: set[str] = plan["added"]  # type: ignore[assignment]  # from the strategy
    if plan["mode"] == "none":
        return snapshot | added
    if plan["mode"] == "opt_out":
        request = gateway_pb2.PublishFilterRequest(opt_out=gateway_pb2.RoutingOptOut())
        await service.publish(request, caller)
        return snapshot | added
    # A stale snapshot was read long ago with a one-minute promise.
    created = int(time.time()) - (600 if plan["stale"] else 5)
    built = await build_filter(
        source(sorted(snapshot)), key=KEY, key_version=1, clock=lambda: float(created)
    )
    request = gateway_pb2.PublishFilterRequest(
        snapshot=gateway_pb2.RoutingSnapshot(filter=built.filter.to_bytes())
    )
    request.snapshot.snapshot_interval.FromTimedelta(timedelta(minutes=1))
    await service.publish(request, caller)
    if added:
        additions = FilterAdditions.of(KEY, 1, sorted(added))
        await service.publish(
            gateway_pb2.PublishFilterRequest(additions=additions.to_bytes()), caller
        )
    return snapshot | added


async def _scenario(path: Path, plans: list[dict[str, object]]) -> None:
    store = Store.open(f"sqlite+aiosqlite:///{path}")
    await store.upgrade()
    try:
        first, second = _service(store), _service(store)
        holders = {
            provider_id: await _publish(first, provider_id, plan)
            for provider_id, plan in zip(PROVIDERS, plans, strict=True)
        }
        await second.sync()
        assert second.applied == await store.routing.head()
        for service in (first, second):
            for msisdn in POOL:
                out = service.routed_out(msisdn)
                dropped = {p for p in out if msisdn in holders[p]}
                assert not dropped, (msisdn, dropped)
                for provider_id, plan in zip(PROVIDERS, plans, strict=True):
                    if plan["mode"] != "snapshot" or plan["stale"]:
                        assert provider_id not in out
    finally:
        await store.close()


async def _notice_scenario(path: Path, plans: list[dict[str, object]], late: str) -> None:
    store = Store.open(f"sqlite+aiosqlite:///{path}")
    await store.upgrade()
    try:
        routing = _service(store)
        holders = {
            provider_id: await _publish(routing, provider_id, plan)
            for provider_id, plan in zip(PROVIDERS, plans, strict=True)
        }
        notices = NoticeService(
            store=store,
            carriers=[],
            # One provider the routing index does not know (joined since).
            providers=[ProviderConfig(id=p, address="127.0.0.1:9") for p in [*PROVIDERS, late]],
            config=NoticesConfig(),
            sets=None,  # type: ignore[arg-type]  # routing signs nothing
            auditor=None,  # type: ignore[arg-type]  # nor audits
            routing=routing,
        )
        for msisdn in POOL:
            routed = {p.id for p in notices.route(msisdn)}
            # Exactly the providers a lookup asks, and whoever routing does not know.
            assert routed == set(PROVIDERS) - routing.routed_out(msisdn) | {late}
            assert {p for p in PROVIDERS if msisdn in holders[p]} <= routed
            for provider_id, plan in zip(PROVIDERS, plans, strict=True):
                if plan["mode"] != "snapshot" or plan["stale"]:
                    assert provider_id in routed
    finally:
        await store.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans=st.lists(_plan, min_size=len(PROVIDERS), max_size=len(PROVIDERS)))
def test_notices_are_routed_like_lookups_and_never_miss_a_holder(
    tmp_path_factory: pytest.TempPathFactory, plans: list[dict[str, object]]
) -> None:
    """Whatever providers publish, a notice about a number goes to exactly the providers a
    lookup would ask about it (every holder, every provider without a fresh filter) and to
    every current provider the routing index does not know yet."""
    path = tmp_path_factory.mktemp("notice-routing") / f"store{next(_runs)}.db"
    asyncio.run(_notice_scenario(path, plans, late="e"))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans=st.lists(_plan, min_size=len(PROVIDERS), max_size=len(PROVIDERS)))
def test_routing_never_drops_a_holder_through_the_store_and_a_replica(
    tmp_path_factory: pytest.TempPathFactory, plans: list[dict[str, object]]
) -> None:
    """Whatever providers publish, no replica routes out a provider that holds the number;
    providers without a fresh filter (none, stale, opted out) are never routed out."""
    path = tmp_path_factory.mktemp("routing") / f"store{next(_runs)}.db"
    asyncio.run(_scenario(path, plans))
