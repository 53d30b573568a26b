"""Renewing a joined provider's certificate before it expires, without dropping a call.

::

    credentials = ProviderCredentials.at("onecert-credentials")
    async with ProviderGatewayClient(state.gateway_address, tls=credentials.gateway_tls()) as gw:
        async with CertificateRenewer(credentials, clients=[gw]):
            await server.run()   # Server(..., tls=credentials.server_tls())

Two thirds into the certificate's lifetime the renewer makes a new key pair,
asks ``Gateway.RenewCertificate`` for a certificate (authenticated by the
current one) and writes both. The provider's server, built with
:meth:`ProviderCredentials.server_tls` (``reload=True``), takes the new pair
at the next handshake; open connections and their calls go on. Each client
in ``clients`` gets a new channel, and calls in flight finish on the old one.
A failed renewal is retried with backoff until the certificate expires.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from onecert.sdk._core import log
from onecert.sdk._csr import generate_key, key_pem, make_csr
from onecert.sdk._enroll import ProviderCredentials
from onecert.sdk._lifecycle import AsyncResource
from onecert.sdk.client._base import ClientBase, GatewayError
from onecert.sdk.client._enrollment import Certificate
from onecert.sdk.client._provider import ProviderGatewayClient

__all__ = ["CertificateRenewer"]


class CertificateRenewer(AsyncResource):
    """Keeps a joined provider's certificate fresh while it runs.

    Args:
        credentials: the provider's files (from :func:`~onecert.sdk.join`).
        clients: gateway clients to move to the renewed certificate.
        gateway: ``HOST:PORT`` of the gateway's mutual TLS listener; by
            default the one the gateway named at join.
        retry_initial: first pause after a failed renewal, in seconds.
        retry_max: longest pause between attempts, in seconds.
        clock: the current time (aware).
    """

    def __init__(
        self,
        credentials: ProviderCredentials,
        *,
        clients: Sequence[ClientBase] = (),
        gateway: str | None = None,
        retry_initial: float = 5.0,
        retry_max: float = 300.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._credentials = credentials
        self._clients = list(clients)
        self._gateway = gateway
        self._retry = (retry_initial, retry_max)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._task: asyncio.Task[None] | None = None
        self.renewals = 0

    def renew_after(self) -> datetime:
        """Two thirds into the current certificate's lifetime."""
        cert = self._credentials.certificate()
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        return start + (end - start) * 2 / 3

    async def renew(self) -> Certificate:
        """Renew now: new key pair, new certificate, files replaced, clients moved.

        Raises:
            GatewayError: the gateway refused or could not be reached (nothing changed).
        """
        credentials = self._credentials
        state = credentials.state()
        key = generate_key()
        target = self._gateway or state.gateway_address
        async with ProviderGatewayClient(target, tls=credentials.gateway_tls()) as gateway:
            issued = await gateway.renew_certificate(make_csr(state.provider_id, key))
        # Synced file writes: off the event loop, so the calls being served go on.
        await asyncio.to_thread(
            credentials.save,
            key=key_pem(key),
            chain=issued.chain_pem,
            ca_bundle=issued.ca_bundle_pem,
        )
        for client in self._clients:
            client.reload_tls(credentials.gateway_tls())
        self.renewals += 1
        log.info("certificate.renewed", serial=issued.serial, not_after=str(issued.not_after))
        return issued

    async def run(self) -> None:
        """Renew at two thirds of each certificate's lifetime, until cancelled."""
        low, high = self._retry
        pause = low
        while True:
            wait = (self.renew_after() - self._clock()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self.renew()
            except GatewayError as exc:
                left = self._credentials.certificate().not_valid_after_utc - self._clock()
                log.warning(
                    "certificate.renewal_failed",
                    status=exc.code.name,
                    details=exc.details,
                    expires_in_s=int(left.total_seconds()),
                )
                if left <= timedelta(0):
                    log.error(
                        "certificate.expired",
                        note="the gateway refuses an expired certificate: join again "
                        "with a new invitation",
                    )
                await asyncio.sleep(pause)
                pause = min(high, pause * 2)
                continue
            pause = low

    async def _enter(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def _exit(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
