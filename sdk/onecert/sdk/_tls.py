"""TLS and mutual TLS credentials for servers and channels, from PEM files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


class TLSConfigError(ValueError):
    """A certificate or key file is missing or unreadable."""


def _read(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


@dataclass(frozen=True)
class ServerTLS:
    """A server's certificate and key; with ``client_ca``, clients must present a
    certificate signed by it (mutual TLS)."""

    cert_file: str | Path
    key_file: str | Path
    client_ca_file: str | Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        cert = _read(self.cert_file, "certificate") or b""
        key = _read(self.key_file, "private key") or b""
        client_ca = _read(self.client_ca_file, "client CA")
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
        if (self.cert_file is None) != (self.key_file is None):
            raise TLSConfigError("a client certificate needs both cert_file and key_file")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA"),
            private_key=_read(self.key_file, "client private key"),
            certificate_chain=_read(self.cert_file, "client certificate"),
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
