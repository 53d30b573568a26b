"""Building the portal from its configuration and serving it with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import structlog
import uvicorn

from onecert.portal._app import Identity, PortalApp
from onecert.portal._config import PortalConfig
from onecert.portal._identity import DevAssertions, TokenExchangeAssertions
from onecert.portal._sessions import SessionStore
from onecert.sdk import ClientTLS
from onecert.sdk.client import GatewayClient

__all__ = ["build_app", "serve"]

log = structlog.get_logger("onecert.portal")
# Expired sessions are dropped this often (a request finds them expired anyway).
_SWEEP_S = 60.0


@contextlib.asynccontextmanager
async def build_app(config: PortalConfig) -> AsyncIterator[PortalApp]:
    """The portal for ``config``, with its gateway client open while the block runs."""
    tls = ClientTLS(config.gateway.ca, config.gateway.cert, config.gateway.key)
    async with contextlib.AsyncExitStack() as stack:
        client = GatewayClient(config.gateway.address, tls=tls)
        stack.push_async_callback(client.close)
        identity = await _identity(config, stack)
        app = PortalApp(
            client=client,
            identity=identity,
            sessions=SessionStore(idle_s=config.session_idle_s, max_s=config.session_max_s),
            lookup_timeout_s=config.gateway.lookup_timeout_s,
            call_timeout_s=config.gateway.call_timeout_s,
            hsts=config.production,
        )
        yield app


async def _identity(config: PortalConfig, stack: contextlib.AsyncExitStack) -> Identity:
    dev = config.dev_identity
    if dev is not None:
        # parse_config already refused this in production; refuse again here, so
        # no other way of building a config can turn it on.
        if config.production:
            raise RuntimeError("the development identity step is refused in production mode")
        source = DevAssertions(
            key=dev.key,
            idn_key=dev.idn_key,
            issuer=dev.issuer,
            audience=dev.audience,
            acr=dev.acr,
            documents={c.sub: c.document for c in dev.citizens},
        )
        return Identity(
            assertions=source, dev=source, dev_citizens=tuple((c.sub, c.name) for c in dev.citizens)
        )
    oidc = config.oidc
    assert oidc is not None
    from onecert.portal._oidc import oidc_client, tls_verify  # noqa: PLC0415 - Authlib only when signing in by OIDC

    secret = (
        oidc.client_secret_file.read_text(encoding="utf-8").strip()
        if oidc.client_secret_file is not None
        else None
    )
    client = await oidc_client(oidc, secret)
    http = httpx2.AsyncClient(timeout=10.0, verify=tls_verify(oidc))
    stack.push_async_callback(http.aclose)
    metadata: dict[str, Any] = await client.load_server_metadata()
    exchange = TokenExchangeAssertions(
        token_endpoint=str(metadata["token_endpoint"]),
        client_id=oidc.client_id,
        client_secret=secret,
        audience=oidc.assertion_audience,
        assertion_token_type=oidc.assertion_token_type,
        http=http,
    )
    return Identity(assertions=exchange, oidc=client)


def bind(listen: str) -> socket.socket:
    """A listening socket for ``host:port`` (port 0: any free port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(config: PortalConfig) -> None:
    """Serve the portal until SIGINT or SIGTERM; prints its address once it listens."""
    sock = bind(config.listen)
    host, port = sock.getsockname()[:2]
    scheme = "https" if config.tls_cert is not None else "http"
    async with build_app(config) as app:
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                lifespan="off",
                # Access logs would hold client addresses; the portal logs its own
                # events, without citizen data.
                access_log=False,
                log_level="warning",
                ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
                ssl_keyfile=str(config.tls_key) if config.tls_key else None,
                proxy_headers=config.tls_terminated_by_proxy,
                server_header=False,
                timeout_graceful_shutdown=5,
            )
        )
        sweeper = asyncio.get_running_loop().create_task(_sweep(app))
        shown = f"[{host}]" if ":" in host else host
        print(f"portal listening on {scheme}://{shown}:{port}/", flush=True)
        mode = "development (dev identity step)" if config.dev_identity else config.mode
        print(f"portal mode: {mode}", file=sys.stderr, flush=True)
        try:
            await server.serve(sockets=[sock])
        finally:
            sweeper.cancel()


async def _sweep(app: PortalApp) -> None:
    while True:
        await asyncio.sleep(_SWEEP_S)
        if dropped := app.sessions.sweep():
            log.info("sessions_expired", count=dropped)
