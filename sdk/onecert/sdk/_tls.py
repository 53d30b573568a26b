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

__all__ = [
    "ClientTLS",
    "ServerTLS",
    "TLSConfigError",
    "TLSFiles",
    "peer_common_name",
    "peer_names",
]


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
    certificate signed by it (mutual TLS).

    With ``reload``, the certificate and key are read again when their files
    change (a renewed certificate): new connections get the new one, open
    connections and their calls go on undisturbed. A pair that does not
    match (one file replaced, not yet the other) is not taken.
    """

    cert_file: str | Path
    key_file: str | Path
    client_ca_file: str | Path | None = None
    reload: bool = False

    def _read_pair(self) -> tuple[bytes, bytes, bytes | None]:
        cert = _read(self.cert_file, "certificate") or b""
        key = _read(self.key_file, "private key") or b""
        client_ca = _read(self.client_ca_file, "client CA")
        check_server_files(
            (self.cert_file, cert), (self.key_file, key), _pem(self.client_ca_file, client_ca)
        )
        return cert, key, client_ca

    def credentials(self) -> grpc.ServerCredentials:
        """Read and check the files; raise :class:`TLSConfigError` naming a bad one."""
        cert, key, client_ca = self._read_pair()
        if self.reload:
            return self._reloading(cert, key, client_ca)
        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    def _reloading(
        self, cert: bytes, key: bytes, client_ca: bytes | None
    ) -> grpc.ServerCredentials:
        seen = [self._stamp()]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by gRPC at each handshake; None keeps the current pair.
            stamp = self._stamp()
            if stamp == seen[0]:
                return None
            try:
                new_cert, new_key, new_ca = self._read_pair()
            except TLSConfigError:
                return None  # half-replaced or bad: keep serving the current pair
            seen[0] = stamp
            return grpc.ssl_server_certificate_configuration(
                [(new_key, new_cert)], root_certificates=new_ca
            )

        return grpc.dynamic_ssl_server_credentials(
            grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca),
            fetch,  # type: ignore[arg-type]  # gRPC documents None as "keep the current pair"; its stubs do not
            require_client_authentication=client_ca is not None,
        )

    def _stamp(self) -> tuple[int, ...]:
        files = [self.cert_file, self.key_file]
        if self.client_ca_file is not None:
            files.append(self.client_ca_file)
        try:
            return tuple(Path(f).stat().st_mtime_ns for f in files)
        except OSError:
            return ()


@dataclass(frozen=True)
class TLSFiles:
    """A server's certificate and key as a configuration file names them (the
    gateway's ``[tls]``, the SQL adapter's ``[server.tls]``); with ``client_ca``,
    clients must present a certificate signed by it (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def server_tls(self) -> ServerTLS:
        """The server credentials these files make (read by :meth:`ServerTLS.credentials`)."""
        return ServerTLS(self.cert, self.key, self.client_ca)


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


def peer_names(context: grpc.aio.ServicerContext[object, object]) -> frozenset[str]:
    """Every name of the verified client certificate: its CN and subject alternative names."""
    auth = context.auth_context()
    values = [
        *(auth.get("x509_common_name") or ()),
        *(auth.get("x509_subject_alternative_name") or ()),
    ]
    return frozenset(v.decode(errors="replace") for v in values)
