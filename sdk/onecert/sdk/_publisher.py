"""Publish the provider's routing filter: a snapshot on a schedule, an addition per new binding.

::

    async def list_numbers():
        async for row in db.stream("SELECT phone FROM users WHERE phone IS NOT NULL"):
            yield row.phone

    provider = Provider(provider_id="smallforum", name="Small Forum", category="forum",
                        list_numbers=list_numbers, snapshot_interval=timedelta(hours=6))

    async with ProviderGatewayClient("gateway.example:443", tls=...) as gateway:
        publisher = FilterPublisher(provider, gateway)
        task = asyncio.create_task(publisher.run())   # a snapshot now, then every interval
        ...
        await provider.note_bound("+8613800138000")    # after a sign-up: published at once

The gateway then asks the site only about numbers its filter may hold
(``docs/routing.md``); it asks about every number again if no snapshot
arrives within the interval plus a grace, so a stopped publisher costs
lookups, never a missed account.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import grpc

from onecert.sdk._core import log
from onecert.sdk._filter import FilterAdditions, build_filter
from onecert.sdk._provider import Provider
from onecert.sdk.client import FilterReceipt, GatewayError, ProviderGatewayClient, RoutingKey

__all__ = ["FilterPublisher"]

# Start the next snapshot when this share of the interval has passed, so a
# slow read still lands before the promise runs out.
_LEAD = 0.9


class FilterPublisher:
    """Publishes a provider's keyed membership filter to the gateway.

    Args:
        provider: a provider built with ``list_numbers`` (and ``snapshot_interval``).
        client: a client of the gateway authenticated as this provider.
        fp_rate: the filter's false-positive rate: the share of lookups
            about numbers the site does not hold that still reach it. None
            (the default): 0.01% below 100,000 numbers, 1% from there
            (``onecert.sdk.routing.default_fp_rate``).
        retry_interval: pause after a failed snapshot, in seconds.
        clock: Unix time, for the filters' ``created_at``.
    """

    def __init__(
        self,
        provider: Provider,
        client: ProviderGatewayClient,
        *,
        fp_rate: float | None = None,
        retry_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if provider.list_numbers is None:
            raise ValueError(
                f"provider {provider.id!r} has no list_numbers: a filter needs the numbers "
                "(or call ProviderGatewayClient.opt_out_of_routing to be asked about all)"
            )
        self._provider = provider
        self._source = provider.list_numbers
        self._client = client
        self._fp_rate = fp_rate
        self._retry = retry_interval
        self._clock = clock
        self._key: RoutingKey | None = None
        self._last_count: int | None = None
        self._stop = asyncio.Event()
        provider.attach_publisher(self)

    async def publish_snapshot(self) -> FilterReceipt:
        """Build the filter from ``list_numbers`` and publish it now.

        Raises:
            GatewayError: the gateway refused it or is unreachable.
        """
        key = await self._client.get_routing_key()
        result = await build_filter(
            self._source,
            key=key.key,
            key_version=key.version,
            fp_rate=self._fp_rate,
            size_hint=self._last_count,
            clock=self._clock,
            fmt=key.filter_format,
        )
        receipt = await self._client.publish_snapshot(
            result.filter, interval=self._provider.snapshot_interval
        )
        self._key = key
        self._last_count = result.filter.count
        log.info(
            "routing.snapshot_published",
            count=result.filter.count,
            bits=result.filter.m,
            hashes=result.filter.k,
            format=result.filter.fmt,
            key_version=key.version,
            skipped=result.skipped,
        )
        return receipt

    async def note_bound(self, msisdn: str) -> FilterReceipt:
        """Publish ``msisdn`` as an addition now (``Provider.note_bound`` calls this).

        Additions are keyed with the version of the snapshot in place; when
        the gateway has moved on (a rotation), a fresh snapshot is published
        instead, and it holds the number.

        Raises:
            ValueError: ``msisdn`` is not E.164.
            GatewayError: the gateway refused or is unreachable.
        """
        key = self._key or await self._client.get_routing_key()
        additions = FilterAdditions.of(
            key.key, key.version, [msisdn], created_at=int(self._clock())
        )
        try:
            return await self._client.publish_additions(additions)
        except GatewayError as exc:
            if exc.code != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            log.info("routing.addition_needs_snapshot", details=exc.details)
            return await self.publish_snapshot()

    async def run(self) -> None:
        """Publish a snapshot now and again every interval until :meth:`shutdown`."""
        interval = self._provider.snapshot_interval.total_seconds()
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    await self.publish_snapshot()
                    wait = interval * _LEAD - (time.monotonic() - started)
                except GatewayError as exc:
                    log.warning(
                        "routing.snapshot_failed", status=exc.code.name, details=exc.details
                    )
                    wait = self._retry
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(0.0, wait))
        finally:
            self._provider.attach_publisher(None)

    def shutdown(self) -> None:
        """Ask :meth:`run` to return (after the snapshot in progress)."""
        self._stop.set()
