"""Helpers of the observability tests: the harness federation with its metrics
endpoint on a free port, and a scraper that reads it over HTTP like Prometheus."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from onecert.gateway import GatewayServer
from onecert.gateway._config import GatewayConfig, MetricsConfig
from onecert.gateway.testing import (
    CITIZEN_SUB,
    CURRENT,
    CURRENT_FROM,
    FAST_DELIVERY,
    FAST_NOTICES,
    GATEWAY_ID,
    IDN,
    FakeProvider,
    Federation,
    at,
    binding,
    tenure,
)
from onecert.v1 import gateway_pb2, gateway_pb2_grpc


class ObservedFederation:
    """A carrier holding one number for the citizen since mid-2020, providers with
    one account bound to it since 2021 (they take no notices), gateways with
    metrics, and a scraper."""

    NUMBER = CURRENT
    IDN = IDN
    CITIZEN_SUB = CITIZEN_SUB
    GATEWAY_ID = GATEWAY_ID

    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.providers: dict[str, FakeProvider] = {}

    async def start(self, provider_ids: Sequence[str]) -> None:
        """Serve the carrier ``cm`` and one fake per provider id."""
        await self.fed.carrier("cm", {IDN: [tenure(CURRENT, "cm", CURRENT_FROM)]})
        for provider_id in provider_ids:
            account = binding(f"{provider_id}-acct-1", "zhang.wei", at(2021, 3))
            fake = await self.fed.provider(provider_id, {CURRENT: [account]})
            fake.refuse_events = grpc.StatusCode.UNIMPLEMENTED
            self.providers[provider_id] = fake

    def config(self, *, store: bool = False, **overrides: Any) -> GatewayConfig:
        """Development mode, metrics on a free port, fast delivery; ``overrides`` replace fields."""
        options: dict[str, Any] = {
            "metrics": MetricsConfig(listen="127.0.0.1:0"),
            # The harness's fast settings, with one delivery worker and a shorter backoff.
            "delivery": replace(FAST_DELIVERY, workers=1, poll_interval_s=0.05, backoff_max_s=0.1),
            "notices": replace(FAST_NOTICES, lease_s=3.0, backoff_max_s=0.1, push_deadline_s=1.0),
            **overrides,
        }
        return self.fed.config(
            store="sqlite" if store else None, carrier_prefixes=("+86138",), **options
        )

    async def gateway(self, config: GatewayConfig | None = None, **options: Any) -> GatewayServer:
        """A started gateway (stopped by the fixture)."""
        return await self.fed.gateway(config or self.config(), server_options=options)

    def stub(self, gateway: GatewayServer) -> gateway_pb2_grpc.GatewayAsyncStub:
        return self.fed.stub(gateway)

    def metadata(self, **claims: Any) -> tuple[tuple[str, str], ...]:
        return self.fed.metadata(**claims)

    async def lookup(
        self, gateway: GatewayServer, *, metadata: Sequence[tuple[str, str]] | None = None
    ) -> list[gateway_pb2.LookupResponse]:
        """One lookup's messages (AioRpcError when it is refused)."""
        return await self.fed.lookup(gateway, metadata=metadata)

    @staticmethod
    async def scrape(gateway: GatewayServer) -> Scrape:
        """GET /metrics over HTTP, from another thread (the store is read on this loop)."""
        port = gateway.metrics_port
        assert port is not None

        def get() -> str:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                body: bytes = response.read()
                return body.decode()

        return Scrape(await asyncio.to_thread(get))


class Scrape:
    """One scrape, parsed the way Prometheus reads it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float:
        """The value of the sample named ``sample`` with exactly ``labels``; KeyError if absent."""
        for family in self.families.values():
            for found in family.samples:
                if found.name == sample and found.labels == labels:
                    return float(found.value)
        raise KeyError(f"{sample}{labels}")

    def samples(self, sample: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample named ``sample``, by its sorted labels."""
        return {
            tuple(sorted(found.labels.items())): float(found.value)
            for family in self.families.values()
            for found in family.samples
            if found.name == sample
        }
