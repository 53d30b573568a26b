"""The federation CA: checks a provider's CSR and signs a short-lived certificate.

:class:`CertificateAuthority` is the seam: the gateway asks it to certify a
checked CSR for a provider id and nothing else, so a deployment can put an
external CA (an HSM, a cloud CA, step-ca) behind it. :class:`LocalCA` signs
with a CA certificate and key read from the gateway's configuration
(``[enrollment] ca_cert`` and ``ca_key``).

What a CSR must be (:func:`check_csr`), each refusal naming the problem:
PEM, signature valid, key EC P-256 or RSA of 2048 to 8192 bits (what gRPC's
TLS accepts, and bounded so a huge key cannot cost the gateway much), subject
exactly ``CN=<id>``, subject alternative names absent or only the provider's
own (:func:`~onecert.sdk._csr.provider_uri`,
:func:`~onecert.sdk._csr.provider_dns_name`). Any other extension the CSR
asks for is ignored: the CA writes key usage, extended key usage (client and
server authentication) and the names itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from onecert.sdk._csr import key_usage, provider_dns_name, provider_names, provider_uri

__all__ = [
    "MAX_CSR_BYTES",
    "CertificateAuthority",
    "CsrRefusedError",
    "IssuedCertificate",
    "LocalCA",
    "check_csr",
    "renewal_time",
]

# A P-256 CSR is about 500 bytes and an RSA-8192 one under 3 KiB.
MAX_CSR_BYTES: Final = 16 * 1024
_RSA_BITS: Final = (2048, 8192)
# Certificates start a little in the past so a peer whose clock is slightly
# behind does not see them as not yet valid.
_BACKDATE: Final = timedelta(minutes=5)


class CsrRefusedError(ValueError):
    """The CSR cannot be certified; the message names the problem (for the caller)."""


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate the CA signed.

    Attributes:
        chain_pem: the certificate, then any intermediate CAs, PEM.
        ca_bundle_pem: the CA certificates that verify it (what a provider trusts).
        serial: the serial number, lowercase hex.
        not_before: when it becomes valid.
        not_after: when it expires.
    """

    chain_pem: bytes
    ca_bundle_pem: bytes
    serial: str
    not_before: datetime
    not_after: datetime

    @property
    def renew_after(self) -> datetime:
        """Two thirds into its lifetime: when its holder should renew it."""
        return renewal_time(self.not_before, self.not_after)


def renewal_time(not_before: datetime, not_after: datetime) -> datetime:
    """Two thirds of the way from ``not_before`` to ``not_after``."""
    return not_before + (not_after - not_before) * 2 / 3


class CertificateAuthority(Protocol):
    """Signs a provider's certificate (the seam for an external CA)."""

    def bundle(self) -> bytes:
        """The CA certificates a certificate it signs chains to, PEM."""
        ...

    async def issue(
        self, csr: x509.CertificateSigningRequest, *, provider_id: str, lifetime: timedelta
    ) -> IssuedCertificate:
        """Certify ``csr`` (already :func:`check_csr`-ed) for ``provider_id``.

        The certificate names the provider id only (CN, URI and DNS SANs),
        may authenticate a client and a server, and expires after ``lifetime``
        (or with the CA, whichever is first).
        """
        ...


def check_csr(csr_pem: bytes | str, provider_id: str) -> x509.CertificateSigningRequest:
    """The parsed CSR if it may be certified for ``provider_id``; else :class:`CsrRefusedError`."""
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    if not data.strip():
        raise CsrRefusedError("csr_pem is required: a PEM certificate signing request")
    if len(data) > MAX_CSR_BYTES:
        raise CsrRefusedError(f"csr_pem is larger than {MAX_CSR_BYTES} bytes")
    if b"-----BEGIN CERTIFICATE REQUEST-----" not in data:
        raise CsrRefusedError(
            "csr_pem is not a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST-----)"
        )
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise CsrRefusedError(f"csr_pem cannot be parsed: {exc}") from None
    _check_key(csr)
    try:
        valid = csr.is_signature_valid
    except UnsupportedAlgorithm:
        valid = False
    if not valid:
        raise CsrRefusedError("the CSR's signature does not verify with its own public key")
    _check_subject(csr, provider_id)
    _check_names(csr, provider_id)
    return csr


def _check_key(csr: x509.CertificateSigningRequest) -> None:
    try:
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrRefusedError(f"the CSR's public key cannot be read: {exc}") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise CsrRefusedError(
                f"the CSR's key is EC {key.curve.name}; the CA signs EC P-256 "
                "(secp256r1) or RSA 2048 to 8192 bits"
            )
        return
    if isinstance(key, rsa.RSAPublicKey):
        low, high = _RSA_BITS
        if not low <= key.key_size <= high:
            raise CsrRefusedError(
                f"the CSR's key is RSA {key.key_size} bits; the CA signs RSA {low} to "
                f"{high} bits or EC P-256"
            )
        return
    raise CsrRefusedError(
        f"the CSR's key is {type(key).__name__.removesuffix('PublicKey') or 'of an unknown type'}; "
        "the CA signs EC P-256 or RSA 2048 to 8192 bits (what gRPC's TLS accepts)"
    )


def _check_subject(csr: x509.CertificateSigningRequest, provider_id: str) -> None:
    attributes = list(csr.subject)
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attributes) != 1 or len(names) != 1 or names[0].value != provider_id:
        raise CsrRefusedError(
            f"the CSR's subject must be exactly CN={provider_id} (the provider id); "
            f"it is {csr.subject.rfc4514_string() or 'empty'!r}"
        )


def _check_names(csr: x509.CertificateSigningRequest, provider_id: str) -> None:
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    allowed = set(provider_names(provider_id))
    others = [name for name in sans if name not in allowed]
    if others:
        shown = ", ".join(str(name.value) for name in others[:3])
        raise CsrRefusedError(
            f"the CSR asks for names other than provider {provider_id!r}'s ({shown}): the "
            f"CA certifies {provider_uri(provider_id)} and {provider_dns_name(provider_id)} only"
        )


class LocalCA:
    """A :class:`CertificateAuthority` whose key the gateway holds.

    Args:
        certificate: the CA certificate (basicConstraints CA:TRUE).
        key: its private key.
        also_trusted: further CA certificates handed to providers in the
            bundle (another CA during a rotation).
        clock: the current time (aware); the system clock by default.
    """

    def __init__(
        self,
        certificate: x509.Certificate,
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
        *,
        also_trusted: Sequence[x509.Certificate] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._cert = certificate
        self._key = key
        self._clock = clock or (lambda: datetime.now(UTC))
        self._bundle = b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (certificate, *also_trusted)
        )
        self._ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> LocalCA:
        """Read the CA from PEM files; :class:`ValueError` naming the file at fault.

        ``cert_file`` holds the signing CA's certificate first; any after it go
        into the bundle providers trust (the other CA during a rotation).
        """
        try:
            cert, *also_trusted = x509.load_pem_x509_certificates(cert_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"enrollment.ca_cert {cert_file}: not a PEM certificate ({exc})"
            ) from None
        try:
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ValueError(
                f"enrollment.ca_key {key_file}: not an unencrypted PEM private key ({exc})"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"enrollment.ca_key {key_file}: the CA key must be EC or RSA")  # noqa: TRY004 - a configuration error, like the others of load()
        constraints = _basic_constraints(cert)
        if constraints is None or not constraints.ca:
            raise ValueError(f"enrollment.ca_cert {cert_file} is not a CA certificate")
        pem, spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(pem, spki) != cert.public_key().public_bytes(pem, spki):
            raise ValueError(
                f"enrollment.ca_key {key_file} does not belong to enrollment.ca_cert {cert_file}"
            )
        return cls(cert, key, also_trusted=also_trusted)

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def bundle(self) -> bytes:
        return self._bundle

    async def issue(
        self, csr: x509.CertificateSigningRequest, *, provider_id: str, lifetime: timedelta
    ) -> IssuedCertificate:
        # Signing is CPU work (an RSA CA key takes milliseconds): off the event loop.
        return await asyncio.to_thread(self._sign, csr, provider_id, lifetime)

    def _sign(
        self, csr: x509.CertificateSigningRequest, provider_id: str, lifetime: timedelta
    ) -> IssuedCertificate:
        now = self._clock()
        not_before = now - _BACKDATE
        not_after = min(now + lifetime, self._cert.not_valid_after_utc)
        if not_after <= now:
            raise CsrRefusedError("the federation CA certificate has expired")
        public_key = csr.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, provider_id)]))
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            # TLS 1.2's RSA key exchange encrypts with the key; ECDHE only signs.
            .add_extension(
                key_usage(key_encipherment=isinstance(public_key, rsa.RSAPublicKey)), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(provider_names(provider_id)), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(public_key),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski),
                critical=False,
            )
        )
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCertificate(
            chain_pem=cert.public_bytes(serialization.Encoding.PEM),
            ca_bundle_pem=self._bundle,
            serial=format(cert.serial_number, "x"),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
