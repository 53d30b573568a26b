"""One way to open a ``grpc.aio`` channel: plaintext, TLS or mutual TLS, with the
message limits (and, for long-lived channels, the keepalive) used across onecert.

Every client in the tree (the SDK's gateway clients, the gateway's channels to
carriers and providers, the CLI, the test harnesses, the benchmark) opens its
channels here, so a channel option is set in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from onecert.sdk._tls import ClientTLS

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "ChannelBuilder", "open_channel"]

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

ChannelOption = tuple[str, int | str]


class ChannelBuilder:
    """Opens channels that share one TLS setting and one set of options.

    The TLS files are read once, here, so a bad path fails at start-up and
    not at the first call.

    Args:
        tls: the CA that signs the server's certificate and, for mutual TLS,
            the client certificate to present; ``None``: plaintext only.
        max_message_bytes: the send and receive limit of every channel.
        keepalive: ping an idle connection (for channels kept open between
            calls, so a dead peer is noticed before the next call, not during).
        options: further gRPC channel options.
    """

    def __init__(
        self,
        *,
        tls: ClientTLS | None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        keepalive: bool = False,
        options: Sequence[ChannelOption] = (),
    ) -> None:
        self._tls = tls
        self._credentials = None if tls is None else tls.credentials()
        self._options: list[ChannelOption] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if keepalive:
            self._options += [
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
            ]
        self._options += list(options)

    @property
    def tls(self) -> bool:
        """Whether this builder can open TLS channels."""
        return self._tls is not None

    def open(
        self,
        target: str,
        *,
        plaintext: bool = False,
        options: Sequence[ChannelOption] = (),
    ) -> grpc.aio.Channel:
        """A new channel to ``target``; the caller closes it.

        Args:
            target: ``host:port``.
            plaintext: no TLS even when the builder has TLS (a development peer).
            options: options for this channel only.

        Raises:
            RuntimeError: a TLS channel asked of a builder without TLS.
        """
        if plaintext or self._tls is None:
            if not plaintext:
                raise RuntimeError(f"no TLS configured for {target}")
            return grpc.aio.insecure_channel(target, options=[*self._options, *options])
        assert self._credentials is not None
        return grpc.aio.secure_channel(
            target,
            self._credentials,
            options=[*self._options, *self._tls.channel_options(), *options],
        )


def open_channel(
    target: str,
    *,
    tls: ClientTLS | None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    options: Sequence[ChannelOption] = (),
) -> grpc.aio.Channel:
    """A channel to ``target``: TLS (mutual with a client certificate in ``tls``),
    or plaintext when ``tls`` is None (development only)."""
    builder = ChannelBuilder(tls=tls, max_message_bytes=max_message_bytes, options=options)
    return builder.open(target, plaintext=tls is None)
