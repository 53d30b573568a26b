"""Binding the gateway's listening port, and saying clearly why it could not be bound."""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Any

import grpc

__all__ = ["bind_port", "port_in_use"]


def _split(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def port_in_use(address: str) -> bool:
    """Whether another socket already listens on ``address`` (``host:port``, ``[::]:port``).

    Probes with a plain bind (no ``SO_REUSEPORT``), which a port held by
    another listener refuses with EADDRINUSE; port 0 is never in use.
    """
    parsed = _split(address)
    if parsed is None or parsed[1] == 0:
        return False
    host, port = parsed
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _name, sockaddr in infos:
        with contextlib.closing(socket.socket(family, kind, proto)) as probe:
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def bind_port(
    server: grpc.aio.Server,
    address: str,
    *,
    credentials: grpc.ServerCredentials | None,
    reuse_port: bool,
) -> int:
    """Add ``address`` to ``server``; the bound port, or :class:`OSError` saying why not.

    A port another process listens on is named as such, with the way to share
    it on purpose (``gateway.reuse_port``), instead of gRPC's "Failed to bind".
    """
    error: Any = None
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        port, error = 0, exc
    if port:
        return port
    if not reuse_port and port_in_use(address):
        raise OSError(
            f"cannot listen on {address}: the address is already in use (is another "
            "gateway running?). Choose another gateway.listen, or set "
            "gateway.reuse_port = true to share the port on purpose"
        )
    detail = f": {error}" if error is not None else ""
    raise OSError(f"cannot listen on {address}{detail}")
