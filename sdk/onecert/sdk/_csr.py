"""A provider's key pair and certificate signing request, and the names a
federation certificate carries.

The federation CA (the gateway's ``[enrollment]``) certifies a provider id and
nothing else: the subject is ``CN=<id>``, the subject alternative names are
the URI :func:`provider_uri` (``spiffe://onecert/provider/<id>``, the identity
in SPIFFE's form) and the DNS name :func:`provider_dns_name` under the
reserved ``.invalid`` domain (RFC 6761), which the gateway expects when it
dials the provider (gRPC checks DNS names, not URIs), and which can never be
the name of a real host: a provider's certificate can never pass for the
gateway's or anyone else's server certificate.

The private key is made here, on the provider's machine, and never leaves it:
only the CSR (public key, id, signature) is sent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "PROVIDER_URI_PREFIX",
    "generate_key",
    "key_pem",
    "key_usage",
    "make_csr",
    "provider_dns_name",
    "provider_names",
    "provider_uri",
    "write_private",
]

PROVIDER_URI_PREFIX: Final = "spiffe://onecert/provider/"
_DNS_SUFFIX: Final = ".provider.onecert.invalid"


def provider_uri(provider_id: str) -> str:
    """The URI SAN naming a provider: ``spiffe://onecert/provider/<id>``."""
    return PROVIDER_URI_PREFIX + provider_id


def provider_dns_name(provider_id: str) -> str:
    """The DNS SAN the gateway expects of a provider's server: ``<id>.provider.onecert.invalid``."""
    return provider_id + _DNS_SUFFIX


def provider_names(provider_id: str) -> list[x509.GeneralName]:
    """The subject alternative names of a provider's certificate and CSR, and the only
    ones the federation CA certifies: :func:`provider_uri` and :func:`provider_dns_name`."""
    return [
        x509.UniformResourceIdentifier(provider_uri(provider_id)),
        x509.DNSName(provider_dns_name(provider_id)),
    ]


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 private key (what gRPC's TLS and the federation CA accept)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (the form gRPC reads)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_usage(*, ca: bool = False, key_encipherment: bool = False) -> x509.KeyUsage:
    """Key usage of a certificate: a CA signs certificates; a leaf signs (and, with an
    RSA key under TLS 1.2's RSA key exchange, encrypts: ``key_encipherment``)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_csr(provider_id: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A PEM CSR asking for ``provider_id`` (CN and both SANs), signed by ``key``."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, provider_id)]))
        .add_extension(x509.SubjectAlternativeName(provider_names(provider_id)), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte, replacing it atomically.

    The new content goes to a temporary file next to ``path`` (created 0600,
    never readable by others), then takes its place in one rename, so a
    reader sees the old file or the new one, never half of one.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(path)
