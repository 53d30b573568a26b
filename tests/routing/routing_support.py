"""Helpers for routing through a real gateway: provider clients and filters built by the SDK."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from hypothesis import strategies as st
from sqlalchemy import select

from onecert.gateway import GatewayServer
from onecert.gateway._config import RoutingConfig, StoreConfig
from onecert.gateway.store._models import audit_log
from onecert.gateway.store.testing import Database
from onecert.gateway.testing import Federation
from onecert.sdk.client import FilterReceipt, ProviderGatewayClient
from onecert.sdk.routing import FilterAdditions, FilterBuilder, RoutingFilter, build_filter
from onecert.v1 import gateway_pb2

ROUTED_OUT = "routing: its filter says it does not hold this number"
# Numbers no citizen of the story holds: what a provider's filter is full of.
ELSEWHERE = [f"+86135{i:08d}" for i in range(0, 40_000, 97)]


# Any E.164 number, the only kind a routing filter holds.
E164_NUMBERS = st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True)


@dataclass(frozen=True)
class FilterShape:
    """Numbers to put in a filter, and the filter's size ``m`` (bits), ``k`` and format."""

    numbers: list[str]
    m: int
    k: int
    fmt: int

    def builder(self, key: bytes, **options: bool) -> FilterBuilder:
        """An empty builder of this shape under ``key`` (key version 1)."""
        return FilterBuilder(key, key_version=1, m=self.m, k=self.k, fmt=self.fmt, **options)


def filter_shapes(
    *, max_numbers: int, max_log2_m: int, max_k: int
) -> st.SearchStrategy[FilterShape]:
    """Filter shapes from 512 bits up to ``2**max_log2_m``, in both formats."""
    return st.builds(
        FilterShape,
        numbers=st.lists(E164_NUMBERS, max_size=max_numbers),
        m=st.integers(min_value=9, max_value=max_log2_m).map(lambda log2_m: 1 << log2_m),
        k=st.integers(min_value=1, max_value=max_k),
        fmt=st.sampled_from([1, 2]),
    )


def provider_client(
    fed: Federation, gateway: GatewayServer, provider_id: str
) -> ProviderGatewayClient:
    """A client of ``gateway`` authenticated as ``provider_id``; the caller closes it."""
    target = f"127.0.0.1:{gateway.port}"
    if fed.tls:
        return ProviderGatewayClient(target, tls=fed.client_tls(provider_id))
    return ProviderGatewayClient(target, insecure=True, dev_provider_id=provider_id)


def source(numbers: Iterable[str]) -> Callable[[], AsyncIterator[str]]:
    """A ``list_numbers`` source over fixed numbers."""
    frozen = list(numbers)

    async def list_numbers() -> AsyncIterator[str]:
        for number in frozen:
            yield number

    return list_numbers


async def snapshot_of(
    client: ProviderGatewayClient, numbers: Iterable[str], *, created_at: int | None = None
) -> RoutingFilter:
    """The SDK's filter of ``numbers`` under the gateway's active routing key."""
    key = await client.get_routing_key()
    clock = time.time if created_at is None else (lambda: float(created_at))
    result = await build_filter(source(numbers), key=key.key, key_version=key.version, clock=clock)
    return result.filter


async def publish(
    client: ProviderGatewayClient,
    numbers: Iterable[str],
    *,
    interval: timedelta = timedelta(hours=1),
    created_at: int | None = None,
) -> FilterReceipt:
    """Publish a snapshot of ``numbers``."""
    snapshot = await snapshot_of(client, numbers, created_at=created_at)
    return await client.publish_snapshot(snapshot, interval=interval)


async def add(client: ProviderGatewayClient, *numbers: str) -> FilterReceipt:
    """Publish ``numbers`` as additions."""
    key = await client.get_routing_key()
    return await client.publish_additions(FilterAdditions.of(key.key, key.version, numbers))


def outcome(
    messages: list[gateway_pb2.LookupResponse], provider_id: str, msisdn: str
) -> tuple[int, str]:
    """How the call of ``provider_id`` about ``msisdn`` ended: (outcome, detail)."""
    result = Federation.result_of(messages, provider_id, msisdn)
    return result.outcome, result.detail


def summary(messages: list[gateway_pb2.LookupResponse]) -> gateway_pb2.LookupSummary:
    """The lookup's last message."""
    assert messages[-1].WhichOneof("update") == "summary"
    return messages[-1].summary


async def audit_details(gateway: GatewayServer, kind: str) -> list[dict[str, object]]:
    """The details of the gateway's audit rows of ``kind``, oldest first (pending ones written)."""
    assert gateway.auditor is not None
    assert gateway.store is not None
    await gateway.auditor.drain()
    async with gateway.store.engine.connect() as conn:
        rows = (await conn.execute(select(audit_log.c.kind, audit_log.c.detail))).all()
    return [json.loads(detail) for k, detail in rows if k == kind]


async def applied(*gateways: GatewayServer) -> None:
    """Wait until every replica has applied every stored publication (its poll does it)."""
    for gateway in gateways:
        assert gateway.routing is not None
        assert gateway.store is not None
        head = await gateway.store.routing.head()
        while gateway.routing.applied < head:  # noqa: ASYNC110 - the replica's own poll loop applies them; nothing to wait on
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def two_replicas(
    fed: Federation, pg_url: str
) -> AsyncIterator[tuple[GatewayServer, GatewayServer]]:
    """Two gateways on one PostgreSQL schema, polling for routing every 0.2 s; stopped after."""
    async with Database.postgres(pg_url) as database:
        store = StoreConfig(url=database.url, schema=database.schema, auto_migrate=True)
        config = fed.config(store=store, routing=RoutingConfig(poll_interval_s=0.2))
        first = await fed.gateway(config)
        second = await fed.gateway(config)
        try:
            yield first, second
        finally:
            for gateway in (first, second):
                await gateway.stop(0)
