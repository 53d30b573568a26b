"""Serving a site: open the database, check it, run the SDK's server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from onecert.adapters.sql._config import RoutingSection, SiteConfig
from onecert.adapters.sql._site import SqlSite
from onecert.sdk import (
    CertificateRenewer,
    ClientTLS,
    EnrolledState,
    FilterPublisher,
    ProviderCredentials,
    Server,
)
from onecert.sdk.client import ProviderGatewayClient

__all__ = ["build_server", "check", "check_report", "publishing", "renewing", "serve"]


def build_server(site: SqlSite) -> Server:
    """The SDK :class:`~onecert.sdk.Server` for ``site`` as its ``[server]`` says.

    Raises:
        ValueError: unusable keys, TLS files or listen address (the SDK's
            configuration errors).
    """
    server = site.config.server
    tls = None
    gateway_identity = None
    if server.credentials is not None:
        credentials = ProviderCredentials.at(server.credentials)
        gateway_identity = _joined(credentials, site.config.provider.id).gateway_identity or None
        tls = credentials.server_tls()
        tls.credentials()
    elif server.tls is not None:
        tls = server.tls.server_tls()
        # Read the files now: a missing certificate is a start-up error.
        tls.credentials()
    return Server(
        site.provider,
        gateway_keys=server.gateway_jwks,
        listen=server.listen,
        gateway_issuer=server.gateway_issuer,
        tls=tls,
        insecure=server.insecure,
        idempotency=server.idempotency_db,
        grace=server.grace_s,
        max_concurrent_rpcs=server.max_concurrent_rpcs,
        gateway_identity=gateway_identity,
    )


def _joined(credentials: ProviderCredentials, provider_id: str) -> EnrolledState:
    """What the join wrote, for this site's provider id; ValueError otherwise."""
    try:
        state = credentials.state()
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(
            f"server.credentials {credentials.directory} holds no joined provider ({exc}): "
            "run `onecert provider join --dir` first"
        ) from None
    if state.provider_id != provider_id:
        raise ValueError(
            f"server.credentials {credentials.directory} joined as {state.provider_id!r}, "
            f"not provider.id {provider_id!r}"
        )
    return state


async def check(config: SiteConfig) -> tuple[str, ...]:
    """Check everything :func:`serve` would, without serving.

    The database answers, the queries match the mapping, the gateway's keys
    and the TLS files load. Returns the columns ``list_bindings`` returns.
    """
    columns, _ = await _check(config)
    return columns


async def check_report(config: SiteConfig) -> str:
    """Check as :func:`check` does; one line saying what was checked and how.

    Raises:
        ConfigError: as :func:`check` (a :class:`MappingError` names the key).
        DatabaseUnavailableError: the database cannot be reached.
    """
    columns, frozen = await _check(config)
    if frozen:
        unbind = (
            f"unbind explained, not run: {', '.join(frozen)} cannot roll back, so a failed "
            "unbind leaves its changes (see docs/sql-adapter.md, MyISAM)"
        )
    else:
        unbind = "unbind matches no row for a made-up account (rolled back)"
    return (
        f"ok: {config.provider.id}: the database answers, list_bindings returns "
        f"{', '.join(columns)}, the values unbind sets fit their columns, {unbind}, "
        "keys and TLS files load"
    )


async def _check(config: SiteConfig) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """Open the site, check it and build its server; the columns ``list_bindings``
    returns and the tables unbind changes that cannot roll back."""
    site = await SqlSite.open(config, check=False)
    try:
        columns = await site.check()
        build_server(site)
        return columns, site.non_transactional
    finally:
        await site.close()


async def serve(config: SiteConfig, *, ready: Callable[[Server], None] | None = None) -> None:
    """Serve the site until SIGTERM or SIGINT, then shut down gracefully.

    Refuses to start (raising before it listens) when the database cannot be
    reached, the queries do not match the mapping, or keys or TLS files are
    unusable.

    Args:
        config: the site's configuration.
        ready: called once the server listens (to print the address).
    """
    site = await SqlSite.open(config)
    try:
        server = build_server(site)
        await server.start()
        if ready is not None:
            ready(server)
        async with publishing(site), renewing(site):
            await server.run(handle_signals=True)
    finally:
        await site.close()


@contextlib.asynccontextmanager
async def renewing(site: SqlSite) -> AsyncIterator[CertificateRenewer | None]:
    """Renew the joined certificate while the block runs (nothing without ``credentials``)."""
    directory = site.config.server.credentials
    if directory is None:
        yield None
        return
    async with CertificateRenewer(ProviderCredentials.at(directory)) as renewer:
        yield renewer


def gateway_client(routing: RoutingSection, provider_id: str) -> ProviderGatewayClient:
    """The site's client of the gateway, as ``[routing]`` says."""
    if routing.insecure:
        return ProviderGatewayClient(routing.gateway, insecure=True, dev_provider_id=provider_id)
    if routing.ca is None:
        raise ValueError("routing.ca, cert and key are required without routing.insecure")
    tls = ClientTLS(ca_file=routing.ca, cert_file=routing.cert, key_file=routing.key)
    return ProviderGatewayClient(routing.gateway, tls=tls)


@contextlib.asynccontextmanager
async def publishing(site: SqlSite) -> AsyncIterator[FilterPublisher | None]:
    """Publish the site's routing filter while the block runs (nothing without ``[routing]``).

    A snapshot at once, then every ``routing.snapshot_interval_s``, from
    ``queries.numbers``; a failed snapshot is retried without stopping the server.
    """
    routing = site.config.routing
    if routing is None:
        yield None
        return
    async with gateway_client(routing, site.config.provider.id) as client:
        publisher = FilterPublisher(site.provider, client, fp_rate=routing.fp_rate)
        task = asyncio.create_task(publisher.run(), name="routing filter")
        try:
            yield publisher
        finally:
            publisher.shutdown()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
