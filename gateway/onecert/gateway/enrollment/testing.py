"""Providers that join by invitation, for tests, the demo and the benchmark.

A provider must name its address when it joins, and needs the certificate
the join returns to serve: :func:`serve_for_join` breaks the circle the way a
real site does with a port it knows in advance. It serves an SDK provider on
port 0 with reloading TLS over the files of a credentials directory, filled
at first with the dev server certificate; :func:`~onecert.sdk.join` then
writes the federation certificate over them, and the server takes it at the
next handshake (the same path a renewal takes)::

    server = await serve_for_join(provider, keys.dev, tmp_path / "creds")
    token = (await store.registry.invite("forum", ...)).token
    await join(gateway=..., gateway_ca=keys.dev.ca_cert, provider_id="forum",
               token=token, address=server.address, directory=tmp_path / "creds")
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from onecert.gateway import GatewayServer
from onecert.gateway.store import Store
from onecert.sdk import Provider, ProviderCredentials, Server, join
from onecert.sdk._enroll import JoinResult
from onecert.sdk.devkeys import DevKeys

__all__ = ["invite_and_join", "serve_for_join"]


async def serve_for_join(
    adapter: Provider,
    dev: DevKeys,
    directory: Path,
    *,
    gateway_identity: str | None = "gateway",
    **server_options: Any,
) -> Server:
    """Serve ``adapter`` on 127.0.0.1:0 over mutual TLS from ``directory``'s files.

    The files start as the dev server certificate and key (and the dev CA as
    the federation CA), so the server can listen before it has joined.
    ``server_options`` go to :class:`onecert.sdk.Server`.
    """
    credentials = _bootstrap(dev, directory)
    options: dict[str, Any] = {
        "gateway_keys": dev.gateway_jwks,
        "listen": "127.0.0.1:0",
        "grace": 0.5,
        **server_options,
    }
    server = Server(
        adapter, tls=credentials.server_tls(), gateway_identity=gateway_identity, **options
    )
    await server.start()
    return server


def _bootstrap(dev: DevKeys, directory: Path) -> ProviderCredentials:
    """Fill ``directory`` with the dev server certificate until the join replaces it."""
    credentials = ProviderCredentials.at(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(dev.server_cert, credentials.cert_file)
    shutil.copyfile(dev.server_key, credentials.key_file)
    shutil.copyfile(dev.ca_cert, credentials.ca_file)
    return credentials


async def invite_and_join(
    gateway: GatewayServer,
    store: Store,
    dev: DevKeys,
    *,
    provider_id: str,
    directory: Path,
    address: str | None,
    name: str = "",
    category: str = "other",
    timeout: float = 30.0,  # noqa: ASYNC109 - the join call's gRPC deadline
) -> JoinResult:
    """The regulator invites ``provider_id``, then it joins ``gateway`` with the token."""
    if gateway.enrollment is None:
        raise RuntimeError("the gateway has no [enrollment]")
    invitation = await store.registry.invite(
        provider_id,
        name=name or provider_id,
        category=category,
        ttl=timedelta(hours=1),
        actor="admin:regulator",
    )
    return await join(
        gateway=f"127.0.0.1:{gateway.enrollment.port}",
        gateway_ca=dev.ca_cert,
        provider_id=provider_id,
        token=invitation.token,
        address=address,
        directory=directory,
        timeout=timeout,
    )
