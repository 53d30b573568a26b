"""Keys and certificates for a development federation (``onecert keys init``).

One directory holds everything a dev federation needs, under fixed names that
every component reads: the identity service's signing key and JWKS, the idn
key it shares with carriers, the gateway's warrant key and JWKS, the handle
sealing key, and a dev CA with a server certificate and client certificates
for mutual TLS. Private keys are created with mode 0600 from the start, so
they are never readable by others, not even for an instant.

Nothing here is fit for production: the CA key sits next to the certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from onecert.sdk._csr import key_pem, key_usage
from onecert.sdk._keys import SigningKey, load_hex_key

__all__ = [
    "DEFAULT_CLIENTS",
    "DevKeys",
    "DevKeysExistError",
    "init_dev_keys",
    "read_hex_key",
]

DEFAULT_CLIENTS = ("gateway", "portal", "admin")
# Names that always go into the server certificate.
_BASE_SANS = ("localhost", "127.0.0.1", "::1")
# Client names become file names and certificate CNs (the id a carrier or a
# provider is known by), so they stay in a safe alphabet.
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DNS_NAME = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*")
_CA_DAYS = 3650
_LEAF_DAYS = 825
# Certificates start an hour in the past so a peer with a slightly slow
# clock does not see them as not yet valid.
_BACKDATE = dt.timedelta(hours=1)


class DevKeysExistError(FileExistsError):
    """Some of the files to write already exist and ``force`` was not given."""

    def __init__(self, directory: Path, existing: Sequence[Path]) -> None:
        names = ", ".join(p.name for p in existing[:3])
        if len(existing) > 3:
            names += f" and {len(existing) - 3} more"
        super().__init__(
            f"refusing to overwrite existing files in {directory}: {names} "
            "(use force to replace them)"
        )
        self.directory = directory
        self.existing = tuple(existing)


@dataclass(frozen=True)
class DevKeys:
    """The paths of a dev keys directory.

    Build it with :func:`init_dev_keys` (which writes the files) or with
    :meth:`DevKeys.at` (which only names them, to read an existing directory).
    """

    directory: Path
    clients: tuple[str, ...] = DEFAULT_CLIENTS

    @classmethod
    def at(cls, directory: str | Path, *, clients: Iterable[str] = DEFAULT_CLIENTS) -> DevKeys:
        """The paths in ``directory``, whether or not the files exist yet."""
        return cls(directory=Path(directory), clients=_check_clients(clients))

    @property
    def identity_key(self) -> Path:
        """ES256 key of the identity service (signs citizens' assertions); 0600."""
        return self.directory / "identity.key.pem"

    @property
    def identity_jwks(self) -> Path:
        """Public JWKS of the identity service, trusted by the gateway."""
        return self.directory / "identity.jwks.json"

    @property
    def idn_key(self) -> Path:
        """Hex HMAC key shared by the identity service and the carriers; 0600."""
        return self.directory / "idn.key"

    @property
    def warrant_key(self) -> Path:
        """EdDSA key the gateway signs warrants and SETs with; 0600."""
        return self.directory / "warrant.key.pem"

    @property
    def gateway_jwks(self) -> Path:
        """Public JWKS of the gateway, trusted by providers and carriers."""
        return self.directory / "gateway.jwks.json"

    @property
    def handle_key(self) -> Path:
        """Hex AEAD key the gateway seals handles with; 0600."""
        return self.directory / "handle.key"

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key.pem"

    def client_cert(self, name: str) -> Path:
        """The certificate of client ``name`` (CN=name, clientAuth)."""
        return self.directory / f"client-{name}.pem"

    def client_key(self, name: str) -> Path:
        return self.directory / f"client-{name}.key.pem"

    def private_files(self) -> tuple[Path, ...]:
        """Every file that holds a secret (written with mode 0600): the keys,
        named ``*.key`` or ``*.key.pem`` unlike every public file."""
        return tuple(p for p in self.files() if p.name.endswith((".key", ".key.pem")))

    def issue(
        self,
        directory: Path,
        label: str,
        *,
        name: x509.Name,
        usage: x509.ObjectIdentifier,
        not_before: dt.datetime,
        not_after: dt.datetime,
        sans: Sequence[x509.GeneralName] = (),
    ) -> tuple[Path, Path]:
        """Another leaf signed by this CA, for tests of what a certificate may and may
        not be: written to ``directory`` as ``LABEL.pem`` and ``LABEL.key.pem``,
        whose paths it returns."""
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{self.ca_key} is not the P-256 key of a dev CA")
        ca = _Issuer(
            key=ca_key,
            name=x509.load_pem_x509_certificate(self.ca_cert.read_bytes()).subject,
            ski=x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
        )
        cert, key = _issue_cert(
            name, sans, (usage,), issuer=ca, not_before=not_before, not_after=not_after
        )
        cert_path, key_path = directory / f"{label}.pem", directory / f"{label}.key.pem"
        cert_path.write_bytes(_cert_pem(cert))
        key_path.write_bytes(key_pem(key))
        return cert_path, key_path

    def files(self) -> tuple[Path, ...]:
        """Every file of the directory, in the order they are written."""
        return (
            self.identity_key,
            self.identity_jwks,
            self.idn_key,
            self.warrant_key,
            self.gateway_jwks,
            self.handle_key,
            self.ca_cert,
            self.ca_key,
            self.server_cert,
            self.server_key,
            *(p for name in self.clients for p in (self.client_cert(name), self.client_key(name))),
        )


def read_hex_key(path: str | Path) -> bytes:
    """Read a secret written as hex (``idn.key``, ``handle.key``): at least 16 bytes.

    Raises:
        KeyConfigError: unreadable, not hex, or too short (a ``ValueError``).
    """
    return load_hex_key(path, what="key")


def init_dev_keys(
    directory: str | Path,
    *,
    clients: Iterable[str] = DEFAULT_CLIENTS,
    extra_sans: Iterable[str] = (),
    force: bool = False,
) -> DevKeys:
    """Create a dev keys directory and return its paths.

    Args:
        directory: where to write; created (mode 0700) if missing.
        clients: names of the client certificates to make (their CN).
        extra_sans: host names or IP addresses for the server certificate, on
            top of localhost, 127.0.0.1 and ::1.
        force: replace existing files instead of refusing.

    Raises:
        DevKeysExistError: a file exists and ``force`` is false; nothing is written.
        ValueError: a client name or SAN is not acceptable.
    """
    keys = DevKeys.at(directory, clients=clients)
    sans = _subject_alt_names(extra_sans)
    existing = [p for p in keys.files() if p.exists() or p.is_symlink()]
    if existing and not force:
        raise DevKeysExistError(keys.directory, existing)

    # Everything is generated before the first file is written, so a failure
    # leaves no half-made directory behind.
    contents = _generate(keys, sans)
    keys.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = set(keys.private_files())
    for path in keys.files():
        _write(path, contents[path], mode=0o600 if path in private else 0o644, replace=force)
    return keys


def _check_clients(clients: Iterable[str]) -> tuple[str, ...]:
    names: list[str] = []
    for name in clients:
        if not _CLIENT_NAME.fullmatch(name):
            raise ValueError(
                f"client name {name!r} must be 1 to 64 characters of letters, digits, '.', '_'"
                " or '-', starting with a letter or digit"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def _subject_alt_names(extra: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in (*_BASE_SANS, *extra):
        if name in seen:
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        if not _DNS_NAME.fullmatch(name) or len(name) > 253:
            raise ValueError(f"SAN {name!r} is neither an IP address nor a host name")
        out.append(x509.DNSName(name))
    return out


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _json(data: object) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _hex_secret() -> bytes:
    return (secrets.token_bytes(32).hex() + "\n").encode()


@dataclass(frozen=True)
class _Issuer:
    """Who signs a certificate: the CA's key and name, or the subject itself."""

    key: ec.EllipticCurvePrivateKey
    name: x509.Name
    ski: x509.SubjectKeyIdentifier | None = None


def _issue_cert(
    name: x509.Name,
    sans: Sequence[x509.GeneralName],
    usages: Sequence[x509.ObjectIdentifier],
    *,
    issuer: _Issuer | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A P-256 certificate for ``name`` and its key.

    Without ``issuer`` it is a self-signed CA (``usages`` empty); otherwise a
    leaf signed by ``issuer`` for the extended key ``usages``
    (serverAuth, clientAuth), naming ``sans`` when there are any.
    """
    key = key or ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    ca = issuer is None
    signer = issuer or _Issuer(key=key, name=name, ski=ski)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(key_usage(ca=ca), critical=True)
        .add_extension(ski, critical=False)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if not ca and signer.ski is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(signer.ski),
            critical=False,
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signer.key, hashes.SHA256()), key


def _common_name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _generate(keys: DevKeys, sans: list[x509.GeneralName]) -> dict[Path, bytes]:
    identity = SigningKey.generate("ES256")
    warrant = SigningKey.generate("EdDSA")
    now = dt.datetime.now(dt.UTC)
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "onecert development"),
            x509.NameAttribute(NameOID.COMMON_NAME, "onecert development CA"),
        ]
    )
    ca_cert, ca_key = _issue_cert(
        ca_name,
        (),
        (),
        issuer=None,
        not_before=now - _BACKDATE,
        not_after=now + dt.timedelta(days=_CA_DAYS),
    )
    ca = _Issuer(
        key=ca_key, name=ca_name, ski=x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    )

    def leaf(
        common_name: str, usage: x509.ObjectIdentifier, san: Sequence[x509.GeneralName]
    ) -> tuple[bytes, bytes]:
        cert, key = _issue_cert(
            _common_name(common_name),
            san,
            (usage,),
            issuer=ca,
            not_before=now - _BACKDATE,
            not_after=now + dt.timedelta(days=_LEAF_DAYS),
        )
        return _cert_pem(cert), key_pem(key)

    server_cert, server_key = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH, sans)
    contents = {
        keys.identity_key: identity.to_pem(),
        keys.identity_jwks: _json(identity.jwks()),
        keys.idn_key: _hex_secret(),
        keys.warrant_key: warrant.to_pem(),
        keys.gateway_jwks: _json(warrant.jwks()),
        keys.handle_key: _hex_secret(),
        keys.ca_cert: _cert_pem(ca_cert),
        keys.ca_key: key_pem(ca_key),
        keys.server_cert: server_cert,
        keys.server_key: server_key,
    }
    for name in keys.clients:
        cert_pem, private_pem = leaf(name, ExtendedKeyUsageOID.CLIENT_AUTH, ())
        contents[keys.client_cert(name)] = cert_pem
        contents[keys.client_key(name)] = private_pem
    return contents


def _write(path: Path, data: bytes, *, mode: int, replace: bool) -> None:
    if replace:
        # Unlink rather than truncate: an existing file keeps its old mode when
        # truncated, and O_EXCL below then also refuses a racing symlink.
        path.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
