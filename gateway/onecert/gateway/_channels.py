"""One reused ``grpc.aio`` channel per upstream target.

A channel holds its HTTP/2 connection open across lookups; creating one per
call would add a TLS handshake to every provider call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc

from onecert.gateway._config import UpstreamTLS
from onecert.sdk._channel import ChannelBuilder
from onecert.sdk._tls import ClientTLS

__all__ = ["ChannelPool"]


class ChannelPool:
    """Channels by target address, created on first use and closed together.

    Args:
        upstream_tls: mutual TLS towards carriers and providers; ``None`` allows
            only plaintext targets.
        max_message_bytes: the send and receive limit on every channel.
    """

    def __init__(self, *, upstream_tls: UpstreamTLS | None, max_message_bytes: int) -> None:
        tls = (
            None
            if upstream_tls is None
            else ClientTLS(
                ca_file=upstream_tls.ca,
                cert_file=upstream_tls.cert,
                key_file=upstream_tls.key,
                server_name=upstream_tls.server_name,
            )
        )
        # Reads the files once, at start-up, so a bad path fails early; the
        # keepalive notices a dead connection between lookups, not during one.
        self._builder = ChannelBuilder(tls=tls, max_message_bytes=max_message_bytes, keepalive=True)
        self._channels: dict[tuple[str, bool, str | None], grpc.aio.Channel] = {}
        # Channels retired while calls may still run on them (see retire).
        self._draining: set[asyncio.Task[None]] = set()
        self._closed = False

    def get(
        self, address: str, *, plaintext: bool, server_name: str | None = None
    ) -> grpc.aio.Channel:
        """The channel to ``address`` (created on first use); ``server_name``: the name
        its certificate must bear when it is not the address's host."""
        if self._closed:
            raise RuntimeError("the channel pool is closed")
        key = (address, plaintext, server_name)
        channel = self._channels.get(key)
        if channel is None:
            channel = self.fresh(address, plaintext=plaintext, server_name=server_name)
            self._channels[key] = channel
        return channel

    def fresh(
        self, address: str, *, plaintext: bool, server_name: str | None = None
    ) -> grpc.aio.Channel:
        """A new channel to ``address``, outside the pool; the caller closes it.

        For one-off probes: a probe that meets a provider down would otherwise
        leave the pooled channel in gRPC's reconnect backoff, failing the first
        lookups after the provider comes back.
        """
        if not plaintext and not self._builder.tls:
            raise RuntimeError(f"no upstream TLS configured for {address}")
        options = [] if server_name is None else [("grpc.ssl_target_name_override", server_name)]
        return self._builder.open(address, plaintext=plaintext, options=options)

    def retire(self, keep: Iterable[tuple[str, bool]], *, grace: float) -> int:
        """Close the pooled channels to targets not in ``keep`` (address, plaintext);
        returns how many.

        Calls already running on them get ``grace`` seconds to finish (they
        are drained, not cut); nothing new is started on them, and a later
        :meth:`get` of the same target opens a fresh channel.
        """
        wanted = set(keep)
        retired = [key for key in self._channels if key[:2] not in wanted]
        for key in retired:
            self._drain(self._channels.pop(key), grace)
        return len(retired)

    def discard(
        self, address: str, *, plaintext: bool, server_name: str | None = None, grace: float
    ) -> None:
        """Close the pooled channel to ``address``, if any; the next :meth:`get` opens a new one.

        For a channel a failed probe found unreachable: left in the pool, it
        would hold gRPC's reconnect backoff and fail the first calls after the
        target comes back. Calls already running on it get ``grace`` seconds.
        """
        channel = self._channels.pop((address, plaintext, server_name), None)
        if channel is not None:
            self._drain(channel, grace)

    def _drain(self, channel: grpc.aio.Channel, grace: float) -> None:
        task = asyncio.create_task(channel.close(grace), name="channel drain")
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def close(self, grace: float | None = None) -> None:
        """Close every channel (calls still running get ``grace`` seconds)."""
        self._closed = True
        channels = list(self._channels.values())
        self._channels.clear()
        await asyncio.gather(*(c.close(grace) for c in channels), *self._draining)
