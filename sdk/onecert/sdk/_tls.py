"""TLS and mutual TLS credentials for servers and channels, from PEM files.

The files are checked as they are read (see :mod:`onecert.sdk._tlscheck`):
a swapped, mismatched, expired or misplaced certificate or key is a
:class:`TLSConfigError` naming the file, not a handshake failure later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from onecert.sdk._tlscheck import TLSConfigError, check_client_files, check_server_files

__all__ = ["ClientTLS", "ServerTLS", "TLSConfigError", "peer_common_name"]


def _read(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _pem(path: str | Path | None, data: bytes | None) -> tuple[str | Path, bytes] | None:
    return None if path is None or data is None else (path, data)


@dataclass(frozen=True)
class ServerTLS:
    """A server's certificate and key; with ``client_ca``, clients must present a
    certificate signed by it (mutual TLS)."""

    cert_file: str | Path
    key_file: str | Path
    client_ca_file: str | Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Read and check the files; raise :class:`TLSConfigError` naming a bad one."""
        cert = _read(self.cert_file, "certificate") or b""
        key = _read(self.key_file, "private key") or b""
        client_ca = _read(self.client_ca_file, "client CA")
        check_server_files(
            (self.cert_file, cert), (self.key_file, key), _pem(self.client_ca_file, client_ca)
        )
        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


@dataclass(frozen=True)
class ClientTLS:
    """How a channel checks the server (``ca_file``) and, for mutual TLS, which
    certificate it presents (``cert_file`` and ``key_file``)."""

    ca_file: str | Path
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    # Expected name in the server certificate when it differs from the host.
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """Read and check the files; raise :class:`TLSConfigError` naming a bad one."""
        if (self.cert_file is None) != (self.key_file is None):
            raise TLSConfigError("a client certificate needs both cert_file and key_file")
        ca = _read(self.ca_file, "CA") or b""
        key = _read(self.key_file, "client private key")
        cert = _read(self.cert_file, "client certificate")
        check_client_files((self.ca_file, ca), _pem(self.cert_file, cert), _pem(self.key_file, key))
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )

    def channel_options(self) -> list[tuple[str, str]]:
        if self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


def peer_common_name(context: grpc.aio.ServicerContext[object, object]) -> str | None:
    """The verified client certificate's common name, or None without mutual TLS."""
    auth = context.auth_context()
    for name in auth.get("x509_common_name") or ():
        return name.decode()
    return None
