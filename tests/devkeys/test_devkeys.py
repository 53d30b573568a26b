"""`onecert keys init`: the dev keys directory, its permissions, and working mutual TLS."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from onecert.cli import main
from onecert.sdk._keys import SigningKey, parse_jwks
from onecert.sdk._tls import ClientTLS, ServerTLS
from onecert.sdk._warrant import WarrantIssuer, WarrantVerifier
from onecert.sdk.devkeys import (
    DEFAULT_CLIENTS,
    DevKeys,
    DevKeysExistError,
    init_dev_keys,
    read_hex_key,
)

FILES = {
    "identity.key.pem",
    "identity.jwks.json",
    "idn.key",
    "warrant.key.pem",
    "gateway.jwks.json",
    "handle.key",
    "ca.pem",
    "ca.key.pem",
    "server.pem",
    "server.key.pem",
    *(f"client-{n}.pem" for n in DEFAULT_CLIENTS),
    *(f"client-{n}.key.pem" for n in DEFAULT_CLIENTS),
}
PRIVATE = {
    "identity.key.pem",
    "idn.key",
    "warrant.key.pem",
    "handle.key",
    "ca.key.pem",
    "server.key.pem",
    *(f"client-{n}.key.pem" for n in DEFAULT_CLIENTS),
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> DevKeys:
    return init_dev_keys(
        tmp_path_factory.mktemp("devkeys") / "keys", extra_sans=["gw.example.test", "10.1.2.3"]
    )


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_exactly_the_documented_files(keys: DevKeys) -> None:
    """The directory holds exactly the files every component expects, by their documented names."""
    assert {p.name for p in keys.directory.iterdir()} == FILES
    assert {p.name for p in keys.files()} == FILES
    assert {p.name for p in keys.private_files()} == PRIVATE


def test_private_keys_are_0600_and_the_directory_is_private(keys: DevKeys) -> None:
    """Every file holding a secret has mode 0600; the new directory has mode 0700."""
    for path in keys.private_files():
        assert _mode(path) == 0o600, path.name
    for path in set(keys.files()) - set(keys.private_files()):
        assert _mode(path) & 0o022 == 0, path.name
    assert _mode(keys.directory) == 0o700


def test_jwks_parse_and_match_their_keys(keys: DevKeys) -> None:
    """Both JWKS parse with the algorithm pinned, and hold the public half of their key."""
    identity = parse_jwks(json.loads(keys.identity_jwks.read_text()))
    gateway = parse_jwks(json.loads(keys.gateway_jwks.read_text()))
    identity_key = SigningKey.load(keys.identity_key)
    warrant_key = SigningKey.load(keys.warrant_key)
    assert identity_key.alg == "ES256"
    assert warrant_key.alg == "EdDSA"
    assert list(identity) == [identity_key.kid]
    assert list(gateway) == [warrant_key.kid]
    for path in (keys.identity_jwks, keys.gateway_jwks):
        assert all("d" not in jwk for jwk in json.loads(path.read_text())["keys"])


def test_gateway_jwks_verifies_warrants_signed_with_the_warrant_key(keys: DevKeys) -> None:
    """A warrant signed with warrant.key.pem verifies against gateway.jwks.json."""
    token = WarrantIssuer(key=SigningKey.load(keys.warrant_key), issuer="onecert-gateway").issue(
        audience="p1", target="+8613800138000"
    )
    verifier = WarrantVerifier(
        keys=parse_jwks(json.loads(keys.gateway_jwks.read_text())),
        issuer="onecert-gateway",
        audience="p1",
    )
    assert verifier.verify(token, target="+8613800138000").audience == "p1"


def test_hex_secrets_are_32_random_bytes(keys: DevKeys) -> None:
    """idn.key and handle.key hold 32 bytes as hex, and differ."""
    idn, handle = read_hex_key(keys.idn_key), read_hex_key(keys.handle_key)
    assert len(idn) == len(handle) == 32
    assert idn != handle


def test_ca_is_a_ca(keys: DevKeys) -> None:
    """The dev CA is self-signed, CA:true and may sign certificates; its key is EC P-256."""
    ca = _cert(keys.ca_cert)
    ca.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)


def test_server_certificate_names_and_usage(keys: DevKeys) -> None:
    """The server certificate chains to the CA, is for serverAuth, and names localhost,
    the loopback addresses and the extra SANs."""
    server = _cert(keys.server_cert)
    server.verify_directly_issued_by(_cert(keys.ca_cert))
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "gw.example.test"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
    ]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("name", DEFAULT_CLIENTS)
def test_client_certificates_name_their_client(keys: DevKeys, name: str) -> None:
    """Each client certificate chains to the CA, has CN=<name>, is for clientAuth, and
    matches its private key."""
    cert = _cert(keys.client_cert(name))
    cert.verify_directly_issued_by(_cert(keys.ca_cert))
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == [name]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    key = SigningKey.load(keys.client_key(name))
    assert key.private_key.public_key() == cert.public_key()


async def _health_over_tls(port: int, tls: ClientTLS) -> int:
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", tls.credentials(), options=tls.channel_options()
    ) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        return int(response.status)


async def test_mutual_tls_accepts_a_client_certificate_and_refuses_its_absence(
    keys: DevKeys, tmp_path: Path
) -> None:
    """A grpc.aio server with server.pem and the dev CA as client CA accepts a client that
    presents client-gateway.pem, and refuses one without a certificate or with one from
    another CA."""
    server = grpc.aio.server()
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    tls = ServerTLS(keys.server_cert, keys.server_key, client_ca_file=keys.ca_cert)
    port = server.add_secure_port("127.0.0.1:0", tls.credentials())
    await server.start()
    try:
        with_cert = ClientTLS(keys.ca_cert, keys.client_cert("gateway"), keys.client_key("gateway"))
        assert await _health_over_tls(port, with_cert) == health_pb2.HealthCheckResponse.SERVING

        with pytest.raises(grpc.aio.AioRpcError) as no_cert:
            await _health_over_tls(port, ClientTLS(keys.ca_cert))
        assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE

        other = init_dev_keys(tmp_path / "other")
        foreign = ClientTLS(keys.ca_cert, other.client_cert("gateway"), other.client_key("gateway"))
        with pytest.raises(grpc.aio.AioRpcError) as wrong_ca:
            await _health_over_tls(port, foreign)
        assert wrong_ca.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    """A second init refuses, names what exists and changes nothing; force replaces every file,
    and a private key loosened by hand comes back as 0600."""
    keys = init_dev_keys(tmp_path / "k")
    before = {p: p.read_bytes() for p in keys.files()}
    with pytest.raises(DevKeysExistError, match="refusing to overwrite") as refused:
        init_dev_keys(tmp_path / "k")
    assert keys.warrant_key in refused.value.existing
    assert {p: p.read_bytes() for p in keys.files()} == before

    keys.warrant_key.chmod(0o644)
    init_dev_keys(tmp_path / "k", force=True)
    assert all(p.read_bytes() != before[p] for p in keys.files())
    assert _mode(keys.warrant_key) == 0o600


def test_refuses_when_only_one_file_exists(tmp_path: Path) -> None:
    """A single existing file (here handle.key) is enough to refuse, so no key is replaced
    behind a component's back; nothing else is written."""
    target = tmp_path / "k"
    target.mkdir()
    (target / "handle.key").write_text("keep me\n")
    with pytest.raises(DevKeysExistError, match=r"handle\.key"):
        init_dev_keys(target)
    assert [p.name for p in target.iterdir()] == ["handle.key"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clients": ["../escape"]}, "client name"),
        ({"clients": [""]}, "client name"),
        ({"extra_sans": ["not a host"]}, "SAN"),
    ],
)
def test_bad_names_are_refused_before_writing(
    tmp_path: Path, kwargs: dict[str, list[str]], message: str
) -> None:
    """Client names that are not safe file names and SANs that are not hosts or addresses are
    refused, and nothing is written."""
    with pytest.raises(ValueError, match=message):
        init_dev_keys(tmp_path / "k", **kwargs)  # type: ignore[arg-type] # parametrized options
    assert not (tmp_path / "k").exists()


def test_cli_keys_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`onecert keys init DIR --client NAME --san NAME` writes the extra client and SAN and lists
    the files; a second run exits 2 and points at --force."""
    target = tmp_path / "keys"
    args = ["keys", "init", str(target), "--client", "carrier-a", "--san", "gw.example.test"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "warrant.key.pem" in out
    assert "client-carrier-a.key.pem" in out
    keys = DevKeys.at(target, clients=(*DEFAULT_CLIENTS, "carrier-a"))
    assert all(p.exists() for p in keys.files())
    san = _cert(keys.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "gw.example.test" in san.value.get_values_for_type(x509.DNSName)

    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
