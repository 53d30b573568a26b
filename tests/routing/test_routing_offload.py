"""Large snapshots are laid out off the event loop: lookups go on while one is applied.

The test holds the index's layout step (``RoutingIndex.prepare``, the part
that grows with the filter) in its worker thread until a whole lookup has
been served; a layout run on the event loop would block that lookup, and the
test would time out.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from onecert.gateway import GatewayServer
from onecert.gateway.routing import RoutingIndex
from onecert.gateway.routing._index import PreparedLayout
from onecert.gateway.routing._service import DEFAULT_OFFLOAD_BYTES
from onecert.gateway.testing import CURRENT, FORMER, Federation, at, binding
from onecert.sdk.client import ProviderGatewayClient
from onecert.sdk.routing import FilterBuilder, RoutingFilter
from onecert.v1 import gateway_pb2
from tests.routing.routing_support import (
    ELSEWHERE,
    ROUTED_OUT,
    applied,
    outcome,
    provider_client,
    summary,
    two_replicas,
)

ANSWERED = gateway_pb2.CALL_OUTCOME_ANSWERED
SKIPPED = gateway_pb2.CALL_OUTCOME_SKIPPED
# A filter as large as the offload threshold: 256 KiB of bits.
LARGE_M = DEFAULT_OFFLOAD_BYTES * 8


class HeldLayout:
    """Wraps an index's ``prepare``: each call waits in its thread until released."""

    def __init__(self, index: RoutingIndex) -> None:
        self._prepare: Callable[[RoutingFilter], PreparedLayout] = index.prepare
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[str] = []

    def __call__(self, snapshot: RoutingFilter) -> PreparedLayout:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        if not self.release.wait(30):
            raise TimeoutError("the test never released the layout")
        return self._prepare(snapshot)


async def _large_snapshot(client: ProviderGatewayClient, numbers: list[str]) -> RoutingFilter:
    key = await client.get_routing_key()
    builder = FilterBuilder(key.key, key_version=key.version, m=LARGE_M, k=7)
    builder.add_many(numbers)
    return builder.snapshot(created_at=int(time.time()))


async def _federation(fed: Federation) -> None:
    await fed.carrier("cm")
    await fed.provider("holder", {CURRENT: [binding("h1", "lin", at(2021))]})
    await fed.provider("other", {})


def _held(gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch) -> HeldLayout:
    assert gateway.routing is not None
    held = HeldLayout(gateway.routing.index)
    monkeypatch.setattr(gateway.routing.index, "prepare", held)
    return held


async def test_a_large_snapshot_is_laid_out_while_lookups_are_served(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a published snapshot of 256 KiB is being laid out, in a worker thread,
    a lookup is served in full (the provider still asked: its filter is not in
    place yet); once laid out, the filter routes the next lookup."""
    await _federation(fed)
    gateway = await fed.gateway(store="sqlite")
    held = _held(gateway, monkeypatch)
    async with provider_client(fed, gateway, "other") as other:
        snapshot = await _large_snapshot(other, ELSEWHERE)
        publishing = asyncio.create_task(
            other.publish_snapshot(snapshot, interval=timedelta(hours=1))
        )
        assert await asyncio.to_thread(held.entered.wait, 30)
        during = await fed.lookup(gateway)
        assert not publishing.done()
        held.release.set()
        await publishing
    assert outcome(during, "other", CURRENT)[0] == ANSWERED
    assert summary(during).total.skipped == 0
    assert held.threads
    assert threading.main_thread().name not in held.threads
    after = await fed.lookup(gateway)
    assert outcome(after, "other", CURRENT) == (SKIPPED, ROUTED_OUT)
    assert outcome(after, "holder", CURRENT)[0] == ANSWERED


async def test_a_replica_lays_out_a_large_stored_snapshot_while_serving(
    fed: Federation, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica applying a large snapshot another replica stored keeps serving
    lookups while it lays the filter out, then routes by it."""
    await _federation(fed)
    async with two_replicas(fed, pg_url) as (first, second):
        held = _held(second, monkeypatch)
        async with provider_client(fed, first, "other") as other:
            snapshot = await _large_snapshot(other, [*ELSEWHERE, FORMER])
            await other.publish_snapshot(snapshot, interval=timedelta(hours=1))
        assert await asyncio.to_thread(held.entered.wait, 30)
        during = await fed.lookup(second)
        held.release.set()
        assert outcome(during, "other", CURRENT)[0] == ANSWERED
        await applied(second)
        after = await fed.lookup(second)
        assert outcome(after, "other", CURRENT) == (SKIPPED, ROUTED_OUT)
        assert outcome(after, "other", FORMER)[0] == ANSWERED
