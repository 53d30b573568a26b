"""The federation CA: which CSRs it certifies, and what the certificates it signs say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from onecert.gateway.enrollment import CsrRefusedError, LocalCA, check_csr, renewal_time
from onecert.sdk._csr import generate_key, make_csr, provider_dns_name, provider_uri
from onecert.sdk.devkeys import DevKeys, init_dev_keys

ID = "example-forum"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> DevKeys:
    """A dev keys directory: its CA is the federation CA."""
    return init_dev_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def ca(dev: DevKeys) -> LocalCA:
    return LocalCA.load(dev.ca_cert, dev.ca_key)


def _csr(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
    *,
    subject: str = ID,
    names: list[x509.GeneralName] | None = None,
    extra: x509.ExtensionType | None = None,
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


async def test_signs_an_ec_csr_for_the_provider_id_only(ca: LocalCA, dev: DevKeys) -> None:
    """The certificate names the provider id (CN, URI and DNS SANs), may act as client and
    server, is no CA, lives the lifetime asked, and chains to the federation CA."""
    key = generate_key()
    csr = check_csr(make_csr(ID, key), ID)
    issued = await ca.issue(csr, provider_id=ID, lifetime=timedelta(hours=24))
    cert = x509.load_pem_x509_certificate(issued.chain_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(dev.ca_cert.read_bytes()))
    assert cert.subject.rfc4514_string() == f"CN={ID}"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.UniformResourceIdentifier)) == {provider_uri(ID)}
    assert set(sans.get_values_for_type(x509.DNSName)) == {provider_dns_name(ID)}
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert issued.not_after - issued.not_before == timedelta(hours=24, minutes=5)
    assert issued.serial == format(cert.serial_number, "x")
    assert issued.ca_bundle_pem == dev.ca_cert.read_bytes()
    assert cert.public_key() == key.public_key()


async def test_rsa_2048_is_signed_with_key_encipherment(ca: LocalCA) -> None:
    """An RSA key of 2048 bits is accepted (gRPC's TLS takes it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issued = await ca.issue(check_csr(_csr(key), ID), provider_id=ID, lifetime=timedelta(hours=1))
    cert = x509.load_pem_x509_certificate(issued.chain_pem)
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


async def test_requested_extensions_are_ignored(ca: LocalCA) -> None:
    """A CSR asking to be a CA gets a leaf certificate all the same."""
    pem = _csr(generate_key(), extra=x509.BasicConstraints(ca=True, path_length=None))
    issued = await ca.issue(check_csr(pem, ID), provider_id=ID, lifetime=timedelta(hours=1))
    cert = x509.load_pem_x509_certificate(issued.chain_pem)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def _tampered(pem: bytes) -> bytes:
    """The CSR with one letter of its subject changed: parseable, signature broken."""
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    changed = der.replace(b"example-forum", b"example-forun", 1)
    assert changed != der
    body = x509.load_der_x509_csr(changed)
    return body.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("make", "asked_for", "says"),
    [
        (lambda: _csr(generate_key(), subject="other-site"), ID, "subject must be exactly CN="),
        (
            lambda: _csr(ec.generate_private_key(ec.SECP384R1())),
            ID,
            "EC secp384r1",
        ),
        (
            lambda: _csr(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            ID,
            "RSA 1024 bits",
        ),
        (lambda: _csr(ed25519.Ed25519PrivateKey.generate()), ID, "Ed25519"),
        (lambda: _tampered(make_csr(ID, generate_key())), "example-forun", "signature"),
        (
            lambda: _csr(generate_key(), names=[x509.DNSName("gateway.example.com")]),
            ID,
            "gateway.example.com",
        ),
        (
            lambda: _csr(
                generate_key(), names=[x509.UniformResourceIdentifier(provider_uri("other"))]
            ),
            ID,
            "spiffe://onecert/provider/other",
        ),
        (lambda: b"hello", ID, "not a PEM certificate signing request"),
        (lambda: b"", ID, "csr_pem is required"),
        (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", ID, "cannot be parsed"),
    ],
    ids=[
        "wrong-cn",
        "p384",
        "rsa-1024",
        "ed25519",
        "bad-signature",
        "other-dns-name",
        "other-provider-uri",
        "not-pem",
        "empty",
        "garbage-pem",
    ],
)
def test_refused_csrs_name_the_problem(make: object, asked_for: str, says: str) -> None:
    """Each unacceptable CSR is refused with a message that names what is wrong."""
    assert callable(make)
    with pytest.raises(CsrRefusedError) as refused:
        check_csr(make(), asked_for)
    assert says in str(refused.value)


def test_two_names_in_the_subject_are_refused() -> None:
    """The subject is exactly CN=<id>: an organisation beside it is refused."""
    key = generate_key()
    pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                    x509.NameAttribute(NameOID.COMMON_NAME, ID),
                ]
            )
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CsrRefusedError, match="exactly CN="):
        check_csr(pem, ID)


async def test_lifetime_stops_at_the_ca_expiry(dev: DevKeys) -> None:
    """A certificate never outlives the CA that signed it."""
    loaded = LocalCA.load(dev.ca_cert, dev.ca_key)
    ca_end = loaded.certificate.not_valid_after_utc
    late = LocalCA(
        loaded.certificate,
        serialization.load_pem_private_key(dev.ca_key.read_bytes(), None),  # type: ignore[arg-type]  # the dev CA key is EC
        clock=lambda: ca_end - timedelta(hours=1),
    )
    issued = await late.issue(
        check_csr(make_csr(ID, generate_key()), ID), provider_id=ID, lifetime=timedelta(days=1)
    )
    assert issued.not_after == ca_end


def test_renewal_is_due_two_thirds_into_the_lifetime() -> None:
    """Holders renew two thirds into a certificate's lifetime (16 h of 24 h)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert renewal_time(start, start + timedelta(hours=24)) == start + timedelta(hours=16)


def test_a_ca_key_that_is_not_the_certificates_is_refused(dev: DevKeys, tmp_path: Path) -> None:
    """Loading a CA whose key does not belong to its certificate fails, naming both keys."""
    other = tmp_path / "other.key.pem"
    other.write_bytes(
        generate_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match=r"does not belong to enrollment\.ca_cert"):
        LocalCA.load(dev.ca_cert, other)


def test_a_leaf_is_not_a_ca(dev: DevKeys) -> None:
    """A server certificate cannot be configured as the federation CA."""
    with pytest.raises(ValueError, match="is not a CA certificate"):
        LocalCA.load(dev.server_cert, dev.server_key)


async def test_a_second_ca_in_the_file_is_trusted_not_used(dev: DevKeys, tmp_path: Path) -> None:
    """During a rotation ``ca_cert`` holds the signing CA, then the other: certificates are
    signed by the first, and the bundle providers get holds both."""
    other = init_dev_keys(tmp_path / "other")
    both = tmp_path / "both.pem"
    both.write_bytes(dev.ca_cert.read_bytes() + other.ca_cert.read_bytes())
    ca = LocalCA.load(both, dev.ca_key)
    issued = await ca.issue(
        check_csr(make_csr(ID, generate_key()), ID), provider_id=ID, lifetime=timedelta(hours=1)
    )
    assert len(x509.load_pem_x509_certificates(issued.ca_bundle_pem)) == 2
    cert = x509.load_pem_x509_certificate(issued.chain_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(dev.ca_cert.read_bytes()))
