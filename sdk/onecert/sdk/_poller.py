"""Receive recycled-number notices by polling the gateway: for sites that host no server.

::

    provider = Provider(provider_id="smallforum", name="Small Forum", category="forum")

    @provider.on_recycled
    async def on_recycled(notice: RecycledNotice) -> int | None:
        return await detach_accounts_bound_before(notice.msisdn, notice.recycled_at)

    async with ProviderGatewayClient("gateway.example:443", tls=...) as gateway:
        await NoticePoller(provider, gateway, gateway_keys="gateway.jwks.json").run()

Each notice is verified (signature, issuer, audience) and handed to
``on_recycled`` exactly as a pushed one would be, once per ``jti`` (answers
are kept in the idempotency store, so a notice fetched again after a crash is
not acted on twice); it is acknowledged in the next poll once recorded, and
the action is confirmed to the gateway when the handler reports one.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

import grpc

from onecert.sdk._core import log
from onecert.sdk._idempotency import IdempotencyStore, open_store
from onecert.sdk._keys import KeySet, keys_or_jwks
from onecert.sdk._lifecycle import AsyncResource
from onecert.sdk._provider import Provider, ProviderCore
from onecert.sdk.client import EventError, GatewayError, ProviderGatewayClient
from onecert.v1 import provider_pb2

__all__ = ["NoticePoller", "PollRound"]

# RFC 8935 error codes for notices refused by verification.
_ERROR_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_request",
    grpc.StatusCode.UNAUTHENTICATED: "authentication_failed",
}


def _status(code: int) -> grpc.StatusCode:
    return next((s for s in grpc.StatusCode if s.value[0] == code), grpc.StatusCode.UNKNOWN)


@dataclass(frozen=True)
class PollRound:
    """What one poll did.

    Attributes:
        received: notices fetched.
        handled: notices recorded (acknowledged in the next poll).
        refused: notices that failed verification (reported as errors).
        confirmed: actions confirmed to the gateway.
        more_available: the gateway has more notices waiting.
    """

    received: int
    handled: int
    refused: int
    confirmed: int
    more_available: bool


class NoticePoller(AsyncResource):
    """Fetches notices with ``Gateway.PollEvents`` and hands them to ``on_recycled``.

    Args:
        provider: your provider (its ``on_recycled`` function handles notices;
            without one, notices are only acknowledged).
        client: a client of the gateway authenticated as this provider.
        gateway_keys: the gateway's public keys (a JWKS file or a key set).
        gateway_issuer: the gateway id the notices must name.
        idempotency: where answers are kept per notice: a store, a SQLite
            file path, or None for memory (lost on restart).
        max_events: most notices per poll (0: the gateway's default).
        wait: how long one poll may be held open by the gateway, in seconds.
        retry_interval: pause after a failed poll, in seconds.
    """

    def __init__(
        self,
        provider: Provider,
        client: ProviderGatewayClient,
        *,
        gateway_keys: KeySet | str | Path,
        gateway_issuer: str = "onecert-gateway",
        idempotency: IdempotencyStore | str | Path | None = None,
        max_events: int = 0,
        wait: float = 10.0,
        retry_interval: float = 5.0,
    ) -> None:
        self._core = ProviderCore(
            provider,
            keys=keys_or_jwks(gateway_keys),
            issuer=gateway_issuer,
            store=open_store(idempotency),
        )
        self._client = client
        self._max_events = max_events
        self._wait = wait
        self._retry_interval = retry_interval
        self._acks: list[str] = []
        self._errors: list[EventError] = []
        self._confirms: dict[str, int] = {}
        self._stop = asyncio.Event()

    async def poll_once(self, *, return_immediately: bool = True) -> PollRound:
        """One poll: send pending acks and errors, handle what comes back.

        Raises:
            GatewayError: the poll failed; acks and errors are kept for the next.
        """
        await self._send_confirms()
        result = await self._client.poll_events(
            acks=self._acks,
            errors=self._errors,
            max_events=self._max_events,
            return_immediately=return_immediately,
            timeout=self._wait + 5.0,
        )
        self._acks, self._errors = [], []
        handled = refused = 0
        if result.events:
            # The same per-notice handling as a pushed batch (ReceiveEvents).
            batch = await self._core.receive_events(
                provider_pb2.ReceiveEventsRequest(sets=[e.token for e in result.events]),
                remaining=None,
            )
            for event, answer in zip(result.events, batch.results, strict=True):
                if not answer.HasField("response"):
                    code = _ERROR_CODES.get(_status(answer.error_code))
                    if code is None:
                        # The handler failed (or asked to try later): not acked,
                        # so the gateway hands the notice out again.
                        log.warning("poll.notice_failed", status=answer.error_code)
                        continue
                    self._errors.append(EventError(event.jti, code, answer.error_message))
                    refused += 1
                    continue
                self._acks.append(event.jti)
                handled += 1
                if answer.response.acted:
                    self._confirms[event.jti] = answer.response.bindings_removed
        confirmed = await self._send_confirms()
        return PollRound(
            received=len(result.events),
            handled=handled,
            refused=refused,
            confirmed=confirmed,
            more_available=result.more_available,
        )

    async def flush(self) -> None:
        """Send pending acks and errors now (an empty, immediate poll)."""
        if self._acks or self._errors:
            # Whatever this poll returns comes again next time: not acked.
            await self._client.poll_events(
                acks=self._acks, errors=self._errors, max_events=1, return_immediately=True
            )
            self._acks, self._errors = [], []

    async def _send_confirms(self) -> int:
        sent = 0
        for jti, removed in list(self._confirms.items()):
            try:
                await self._client.confirm_event_action(jti, removed)
            except GatewayError as exc:
                if exc.code == grpc.StatusCode.NOT_FOUND:
                    del self._confirms[jti]  # not ours to confirm: never will be
                log.warning("poll.confirm_failed", status=exc.code.name)
                continue
            del self._confirms[jti]
            sent += 1
        return sent

    async def run(self) -> None:
        """Poll until :meth:`shutdown`; failed polls are retried after a pause."""
        while not self._stop.is_set():
            try:
                round_ = await self.poll_once(return_immediately=bool(self._acks))
            except GatewayError as exc:
                log.warning("poll.failed", status=exc.code.name, details=exc.details)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._retry_interval)
                continue
            if round_.received:
                log.info("poll.round", received=round_.received, refused=round_.refused)
        try:
            await self.flush()
        except GatewayError as exc:
            log.warning("poll.final_ack_failed", status=exc.code.name)

    def shutdown(self) -> None:
        """Ask :meth:`run` to return after the poll in progress."""
        self._stop.set()

    async def _exit(self) -> None:
        self.shutdown()
