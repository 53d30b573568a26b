"""Raw network misbehaviour for hardening tests: a proxy that resets its
connections, and a server on a gRPC port that does not speak gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


class _LoopbackServer:
    """A TCP server on a free loopback port; subclasses say what a connection gets."""

    _server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen; returns ``host:port``."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class ResettingProxy(_LoopbackServer):
    """A TCP proxy in front of a server that can reset (RST) every connection at once."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self._writers: list[asyncio.StreamWriter] = []
        self.resets = 0
        self.connections = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        host, _, port = self._upstream.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def reset(self) -> None:
        """Abort every open connection with a TCP RST."""
        self.resets += 1
        for writer in self._writers:
            # A connection its client already closed (the gateway's one-off
            # Describe probe) has nothing left to reset.
            if writer.transport.is_closing():
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.reset()
        await super().close()


class JunkServer(_LoopbackServer):
    """A TCP server that is not gRPC: it writes ``reply`` to whoever connects and hangs up."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.connections = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        # Let the client speak first (an HTTP/2 preface), then answer junk.
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(reader.read(1024), 1.0)
        try:
            writer.write(self.reply)
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


class SilentServer(_LoopbackServer):
    """A TCP server that accepts and never says a word (a provider hung before HTTP/2
    begins); ``accepted`` is set at the first connection."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.set()
        try:
            await reader.read()  # until the client gives up
        except OSError:
            pass
        finally:
            writer.close()
