"""What every client of the gateway shares: the channel, the errors, the conversions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from onecert.sdk._channel import DEFAULT_MAX_MESSAGE_BYTES, open_channel
from onecert.sdk._convert import enum_from_pb
from onecert.sdk._lifecycle import AsyncResource
from onecert.sdk._tls import ClientTLS
from onecert.v1 import gateway_pb2_grpc

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEV_PRINCIPAL_HEADER",
    "ClientBase",
    "GatewayError",
    "RateLimitedError",
    "enum_from_pb",
]

DEV_PRINCIPAL_HEADER = "x-onecert-dev-principal"

Metadata = tuple[tuple[str, str], ...]
_R = TypeVar("_R")


class GatewayError(Exception):
    """The gateway refused or failed a call.

    Attributes:
        code: the gRPC status (UNAUTHENTICATED, PERMISSION_DENIED,
            RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED, ...).
        details: the gateway's explanation.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}" if details else code.name)
        self.code = code
        self.details = details

    @staticmethod
    def of(exc: grpc.aio.AioRpcError) -> GatewayError:
        """The error for a failed call: a :class:`RateLimitedError` for RESOURCE_EXHAUSTED."""
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return RateLimitedError(exc.details() or "", retry_after(exc))
        return GatewayError(exc.code(), exc.details() or "")


class RateLimitedError(GatewayError):
    """RESOURCE_EXHAUSTED from the gateway; ``retry_after`` is the hint in seconds."""

    def __init__(self, details: str, retry_after: float | None) -> None:
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED, details)
        self.retry_after = retry_after


class ClientBase(AsyncResource):
    """One channel to the gateway, closed by :meth:`close` or ``async with``.

    Callers the gateway knows by their client certificate (providers,
    carriers, the regulator) name themselves, against a development gateway
    without TLS, in ``_dev_principal`` (metadata ``x-onecert-dev-principal``).

    Args:
        target: ``host:port`` of the gateway.
        tls: the CA to check the gateway and the client certificate to present.
        insecure: plaintext, for a development gateway only. Exactly one of
            ``tls`` and ``insecure`` must be given.
        max_message_bytes: the largest message sent to or accepted from the gateway.
    """

    #: Who the client claims to be when ``insecure``; a subclass or its
    #: constructor sets it before this one runs.
    _dev_principal: str | None = None

    def __init__(
        self,
        target: str,
        *,
        tls: ClientTLS | None = None,
        insecure: bool = False,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if (tls is None) == (not insecure):
            raise ValueError("give either tls=ClientTLS(...) or insecure=True (development only)")
        self._channel = open_channel(target, tls=tls, max_message_bytes=max_message_bytes)
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._max_message_bytes = max_message_bytes
        self._retired: set[asyncio.Task[None]] = set()
        principal = self._dev_principal if insecure else None
        self._metadata: Metadata = () if principal is None else ((DEV_PRINCIPAL_HEADER, principal),)
        self.target = target

    async def _unary(
        self,
        method: Callable[..., Awaitable[_R]],
        request: Message,
        *,
        timeout: float,  # noqa: ASYNC109 - the gRPC deadline
        metadata: Metadata | None = None,
    ) -> _R:
        """One unary call with the caller's metadata; a failure is a :class:`GatewayError`."""
        try:
            return await method(
                request, timeout=timeout, metadata=self._metadata if metadata is None else metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError.of(exc) from None

    def reload_tls(self, tls: ClientTLS, *, grace: float = 30.0) -> None:
        """Use ``tls`` (a renewed client certificate) from the next call on.

        A new channel takes the place of the current one at once; calls in
        flight finish on the old one, which is closed once they are done (or
        after ``grace`` seconds).

        Raises:
            TLSConfigError: the files are unusable; the current channel stays.
        """
        channel = open_channel(self.target, tls=tls, max_message_bytes=self._max_message_bytes)
        old, self._channel = self._channel, channel
        self._stub = gateway_pb2_grpc.GatewayStub(channel)
        retiring = asyncio.ensure_future(old.close(grace))
        self._retired.add(retiring)
        retiring.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()
        for retiring in list(self._retired):
            await retiring

    async def _exit(self) -> None:
        await self.close()


def dev_principal(role: str, dev_id: str | None, *, insecure: bool) -> str | None:
    """``role:dev_id`` for a development gateway; a dev id without ``insecure`` is refused."""
    if dev_id is None:
        return None
    if not insecure:
        raise ValueError(f"dev_{role}_id is for insecure development gateways only")
    return f"{role}:{dev_id}"


def time_of(message: Message, field: str) -> datetime | None:
    """A Timestamp field as an aware datetime; None when unset."""
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def delta(duration: Duration) -> timedelta:
    """A Duration as a timedelta."""
    return duration.ToTimedelta()


def stamp(value: datetime, name: str) -> Timestamp:
    """An aware datetime as a Timestamp (``name`` for the error of a naive one)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    out = Timestamp()
    out.FromDatetime(value.astimezone(UTC))
    return out


def retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    """The gateway's ``retry-after-ms`` hint in seconds, if it gave one."""
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after-ms":
            try:
                return max(0.0, int(value) / 1000)
            except (TypeError, ValueError):
                return None
    return None
