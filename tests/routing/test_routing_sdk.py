"""The SDK's side of routing: a provider with ``list_numbers`` publishes on a schedule,
``note_bound`` publishes an addition at once, and the gateway routes by both."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from onecert.gateway import GatewayServer
from onecert.gateway.testing import CURRENT, FORMER, Federation
from onecert.sdk import FilterPublisher, Provider
from onecert.sdk.client import RoutingKey
from onecert.sdk.testing import empty_provider
from onecert.v1 import gateway_pb2
from tests.routing.routing_support import ELSEWHERE, ROUTED_OUT, outcome, provider_client, source

ANSWERED = gateway_pb2.CALL_OUTCOME_ANSWERED
SKIPPED = gateway_pb2.CALL_OUTCOME_SKIPPED


def _site(**options: Any) -> Provider:
    """An SDK provider holding no account of the story's citizen."""
    return empty_provider("site", name="Site", category="forum", **options)


async def _routed(gateway: GatewayServer, provider_id: str) -> None:
    """Wait until the gateway routes ``provider_id`` by a fresh filter."""
    assert gateway.routing is not None
    while gateway.routing.index.status(provider_id).reason is not None:  # noqa: ASYNC110 - the publisher runs in its own task
        await asyncio.sleep(0.02)


async def test_the_publisher_publishes_at_start_and_note_bound_at_once(fed: Federation) -> None:
    """run() publishes a snapshot at once; note_bound() makes the next lookup ask the site."""
    await fed.carrier("cm")
    provider = _site(list_numbers=source(ELSEWHERE), snapshot_interval=timedelta(hours=6))
    await fed.adapter(provider)
    gateway = await fed.gateway(store="sqlite")
    assert await provider.note_bound(CURRENT) is False  # nothing publishes yet
    async with provider_client(fed, gateway, "site") as client:
        publisher = FilterPublisher(provider, client)
        task = asyncio.create_task(publisher.run())
        await _routed(gateway, "site")
        assert gateway.routing is not None
        status = gateway.routing.index.status("site")
        assert (status.fmt, status.k) == (2, 14)  # the gateway takes format 2; a small set
        assert (await client.get_routing_key()).filter_formats == (1, 2)
        messages = await fed.lookup(gateway)
        assert outcome(messages, "site", CURRENT) == (SKIPPED, ROUTED_OUT)
        assert await provider.note_bound(CURRENT) is True
        messages = await fed.lookup(gateway)
        assert outcome(messages, "site", CURRENT)[0] == ANSWERED
        assert outcome(messages, "site", FORMER) == (SKIPPED, ROUTED_OUT)
        publisher.shutdown()
        await task
    assert await provider.note_bound(FORMER) is False


def test_the_format_built_is_the_highest_both_sides_support() -> None:
    """A gateway that lists no formats predates format 2: the SDK builds format 1 for it."""
    assert RoutingKey(1, b"k" * 32).filter_format == 1
    assert RoutingKey(1, b"k" * 32, filter_formats=(1,)).filter_format == 1
    assert RoutingKey(1, b"k" * 32, filter_formats=(1, 2)).filter_format == 2
    assert RoutingKey(1, b"k" * 32, filter_formats=(1, 2, 3)).filter_format == 2


def test_a_publisher_needs_list_numbers() -> None:
    """A provider without list_numbers cannot publish a filter: said at construction."""
    with pytest.raises(ValueError, match="list_numbers"):
        FilterPublisher(_site(), client=None)  # type: ignore[arg-type]  # refused before use


@pytest.mark.parametrize("interval", [timedelta(seconds=5), timedelta(days=8)])
def test_the_snapshot_interval_is_bounded(interval: timedelta) -> None:
    """The promised interval is between a minute and a week, as the gateway accepts."""
    with pytest.raises(ValueError, match="snapshot_interval"):
        _site(snapshot_interval=interval)
