"""Checks of certificates and keys at start, so a TLS mistake is named, not disguised.

gRPC reports a swapped certificate and key as "Failed to create security
handshaker", a server that cannot load its key as "cannot listen (address in
use?)" or "Failed to bind", and a client key that does not match its
certificate as calls failing UNAVAILABLE later. Every place that loads TLS
material (:class:`onecert.sdk.ServerTLS`, :class:`onecert.sdk.ClientTLS`, so
the gateway, the SDK's servers, the SDK's and the CLI's clients) runs these
checks first and raises :class:`TLSConfigError` naming the file at fault:

* each file holds what its place expects (a certificate, a private key, CA
  certificates), in PEM, and a key is not encrypted;
* the private key belongs to the certificate;
* every certificate is within its dates;
* a CA file holds CA certificates (basicConstraints CA:TRUE);
* a server certificate names a host (subjectAltName, or at least a CN) and may serve
  (extendedKeyUsage serverAuth, when it has one); a client certificate has a
  common name (the gateway knows callers by it) and may act as a client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TLSConfigError", "check_client_files", "check_server_files"]

_Pem = tuple[str | Path, bytes]  # a file's name (for messages) and its content
# What each kind of PEM file holds a line of ("-----BEGIN ... PRIVATE KEY-----").
_PEM_MARKERS = {"certificate": b"CERTIFICATE-----", "private key": b"PRIVATE KEY-----"}
_USAGE_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}


class TLSConfigError(ValueError):
    """A certificate or key file is missing, unreadable, or not what its place needs."""


def _expect_pem(file: _Pem, what: str, wanted: str) -> None:
    """Refuse a file that is not a PEM ``wanted``, naming a swapped certificate and key."""
    path, data = file
    if _PEM_MARKERS[wanted] in data:
        return
    for other, marker in _PEM_MARKERS.items():
        if other != wanted and marker in data:
            raise TLSConfigError(
                f"{what} {path} holds a {other}, not a {wanted}: "
                "are the certificate and key files swapped?"
            )
    raise TLSConfigError(f"{what} {path} is not a PEM {wanted}")


def _certificates(file: _Pem, what: str) -> list[x509.Certificate]:
    _expect_pem(file, what, "certificate")
    path, data = file
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TLSConfigError(f"{what} {path} is not a valid PEM certificate: {exc}") from None


def _private_key(file: _Pem, what: str) -> PrivateKeyTypes:
    _expect_pem(file, what, "private key")
    path, data = file
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSConfigError(
            f"{what} {path} is encrypted: give the key without a passphrase"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TLSConfigError(f"{what} {path} is not a valid private key: {exc}") from None


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(no subject)"


def _check_dates(cert: x509.Certificate, path: str | Path, what: str, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise TLSConfigError(
            f"{what} {path} ({_subject(cert)}) is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: is the clock right?"
        )
    if now > cert.not_valid_after_utc:
        raise TLSConfigError(
            f"{what} {path} ({_subject(cert)}) expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> object | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_usage(
    cert: x509.Certificate, path: str | Path, what: str, usage: x509.ObjectIdentifier
) -> None:
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if isinstance(eku, x509.ExtendedKeyUsage) and usage not in eku:
        role = "a server" if usage == ExtendedKeyUsageOID.SERVER_AUTH else "a client"
        other = "a client's" if usage == ExtendedKeyUsageOID.SERVER_AUTH else "a server's"
        raise TLSConfigError(
            f"{what} {path} ({_subject(cert)}) is not made for {role} "
            f"(its extended key usage lacks {_USAGE_NAMES[usage]}): is it {other} certificate?"
        )


def _check_pair(cert_file: _Pem, key_file: _Pem, what: str, now: datetime) -> x509.Certificate:
    chain = _certificates(cert_file, f"{what} certificate")
    key = _private_key(key_file, f"{what} private key")
    leaf = chain[0]
    _check_dates(leaf, cert_file[0], f"{what} certificate", now)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    if key.public_key().public_bytes(pem, spki) != leaf.public_key().public_bytes(pem, spki):
        raise TLSConfigError(
            f"{what} private key {key_file[0]} does not belong to the certificate "
            f"{cert_file[0]} ({_subject(leaf)})"
        )
    return leaf


def _check_cas(file: _Pem, what: str, now: datetime) -> None:
    for cert in _certificates(file, what):
        constraints = _extension(cert, x509.BasicConstraints)
        # Old self-signed roots without the extension are still trusted by
        # OpenSSL; only a certificate that says it is no CA is refused.
        if isinstance(constraints, x509.BasicConstraints) and not constraints.ca:
            raise TLSConfigError(
                f"{what} {file[0]} holds {_subject(cert)}, which is not a CA certificate: "
                "give the CA that signed the other side's certificate"
            )
        _check_dates(cert, file[0], what, now)


def check_server_files(
    cert: _Pem, key: _Pem, client_ca: _Pem | None = None, *, now: datetime | None = None
) -> None:
    """Check a server's certificate and key (and the CA its clients must come from).

    Args:
        cert: the certificate file's name and content.
        key: the private key file's name and content.
        client_ca: for mutual TLS, the CA file's name and content.
        now: the time to check dates against (default: now).

    Raises:
        TLSConfigError: naming the file at fault and what is wrong with it.
    """
    now = now or datetime.now(UTC)
    leaf = _check_pair(cert, key, "server", now)
    _check_usage(leaf, cert[0], "server certificate", ExtendedKeyUsageOID.SERVER_AUTH)
    # gRPC checks the host against subjectAltName, or the CN when there is none.
    if _extension(leaf, x509.SubjectAlternativeName) is None and not (
        leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ):
        raise TLSConfigError(
            f"server certificate {cert[0]} names no host (neither subjectAltName nor CN): "
            "clients cannot check that they reached this server"
        )
    if client_ca is not None:
        _check_cas(client_ca, "client CA", now)


def check_client_files(
    ca: _Pem, cert: _Pem | None = None, key: _Pem | None = None, *, now: datetime | None = None
) -> None:
    """Check the CA a client trusts and, for mutual TLS, its certificate and key.

    Args:
        ca: the CA file's name and content.
        cert: the client certificate file's name and content (mutual TLS).
        key: the client private key file's name and content (mutual TLS).
        now: the time to check dates against (default: now).

    Raises:
        TLSConfigError: naming the file at fault and what is wrong with it.
    """
    now = now or datetime.now(UTC)
    _check_cas(ca, "CA", now)
    if cert is None or key is None:
        return
    leaf = _check_pair(cert, key, "client", now)
    _check_usage(leaf, cert[0], "client certificate", ExtendedKeyUsageOID.CLIENT_AUTH)
    if not leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        raise TLSConfigError(
            f"client certificate {cert[0]} has no common name (CN): the gateway "
            "knows its callers by it"
        )
