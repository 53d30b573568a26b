"""TLS mistakes are named at start, with the file at fault, wherever TLS material is loaded."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from onecert.cli import main
from onecert.sdk import Provider, Server, ServerTLS
from onecert.sdk._tls import ClientTLS, TLSConfigError
from onecert.sdk.devkeys import DevKeys, init_dev_keys
from onecert.sdk.testing import FakeGateway

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> DevKeys:
    """Dev keys: a CA, a server pair and a gateway client pair."""
    return init_dev_keys(tmp_path_factory.mktemp("keys"), clients=("gateway",))


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> DevKeys:
    """Another, unrelated set of dev keys."""
    return init_dev_keys(tmp_path_factory.mktemp("other"), clients=("gateway",))


def _issue(
    keys: DevKeys,
    directory: Path,
    label: str,
    *,
    cn: str | None = "localhost",
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
    san: bool = True,
    days: tuple[int, int] = (-1, 30),
) -> tuple[Path, Path]:
    """A leaf signed by the dev CA, with the given name, usage, SAN and validity."""
    now = dt.datetime.now(dt.UTC)
    return keys.issue(
        directory,
        label,
        name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []),
        usage=usage,
        sans=[x509.DNSName("localhost")] if san else (),
        not_before=now + days[0] * DAY,
        not_after=now + days[1] * DAY,
    )


def _server_error(cert: Path, key: Path, client_ca: Path | None = None) -> str:
    with pytest.raises(TLSConfigError) as refused:
        ServerTLS(cert, key, client_ca).credentials()
    return str(refused.value)


def _client_error(ca: Path, cert: Path | None = None, key: Path | None = None) -> str:
    with pytest.raises(TLSConfigError) as refused:
        ClientTLS(ca, cert, key).credentials()
    return str(refused.value)


def test_good_files_pass(keys: DevKeys) -> None:
    """The dev keys pass every check, for a server and a mutual-TLS client."""
    ServerTLS(keys.server_cert, keys.server_key, keys.ca_cert).credentials()
    ClientTLS(keys.ca_cert, keys.client_cert("gateway"), keys.client_key("gateway")).credentials()


def test_swapped_certificate_and_key_are_named(keys: DevKeys) -> None:
    """A certificate and key given in each other's place: the message names the file and says so."""
    message = _server_error(keys.server_key, keys.server_cert)
    assert message.startswith(f"server certificate {keys.server_key} holds a private key")
    assert "swapped" in message
    message = _client_error(keys.ca_cert, keys.client_key("gateway"), keys.client_cert("gateway"))
    assert message.startswith(
        f"client certificate {keys.client_key('gateway')} holds a private key"
    )


def test_a_key_of_another_certificate_is_named(keys: DevKeys, other: DevKeys) -> None:
    """A key that does not belong to its certificate: server and client alike."""
    message = _server_error(keys.server_cert, other.server_key)
    assert message.startswith(
        f"server private key {other.server_key} does not belong to the certificate "
        f"{keys.server_cert}"
    )
    message = _client_error(keys.ca_cert, keys.client_cert("gateway"), other.client_key("gateway"))
    assert "does not belong to the certificate" in message


def test_a_leaf_given_as_the_ca_is_named(keys: DevKeys) -> None:
    """A leaf certificate where a CA belongs: not a CA certificate."""
    message = _client_error(keys.server_cert)
    assert message.startswith(f"CA {keys.server_cert} holds CN=localhost, which is not a CA")
    message = _server_error(keys.server_cert, keys.server_key, keys.client_cert("gateway"))
    assert message.startswith(f"client CA {keys.client_cert('gateway')} holds CN=gateway")


def test_dates_are_checked(keys: DevKeys, tmp_path: Path) -> None:
    """An expired certificate and one not valid yet are named with their dates."""
    expired = _issue(keys, tmp_path, "expired", days=(-30, -1))
    assert re.match(
        rf"server certificate {expired[0]} \(CN=localhost\) expired on ", _server_error(*expired)
    )
    early = _issue(keys, tmp_path, "early", days=(1, 30))
    assert "is not valid before" in _server_error(*early)


def test_usage_and_names_are_checked(keys: DevKeys, tmp_path: Path) -> None:
    """A client certificate serving, a server certificate as a client, a server that
    names no host and a client without common name are each refused, saying why."""
    client_pair = (keys.client_cert("gateway"), keys.client_key("gateway"))
    assert "is not made for a server" in _server_error(*client_pair)
    assert "is not made for a client" in _client_error(
        keys.ca_cert, keys.server_cert, keys.server_key
    )
    ServerTLS(*_issue(keys, tmp_path, "cn-only", san=False)).credentials()  # gRPC reads the CN
    nameless = _issue(keys, tmp_path, "nameless", cn=None, san=False)
    assert "names no host (neither subjectAltName nor CN)" in _server_error(*nameless)
    no_cn = _issue(keys, tmp_path, "nocn", cn=None, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    assert "has no common name" in _client_error(keys.ca_cert, *no_cn)


def test_not_pem_and_encrypted_keys_are_named(keys: DevKeys, tmp_path: Path) -> None:
    """A file that is not PEM, and a key with a passphrase, are named."""
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    assert _client_error(junk) == f"CA {junk} is not a PEM certificate"
    key = serialization.load_pem_private_key(keys.server_key.read_bytes(), password=None)
    locked = tmp_path / "locked.key.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert "is encrypted" in _server_error(keys.server_cert, locked)


async def test_sdk_server_names_the_bad_file_instead_of_the_port(
    provider: Provider, keys: DevKeys
) -> None:
    """An adapter given a swapped pair fails to start naming the file, not 'address in use'."""
    server = Server(
        provider,
        gateway_keys=FakeGateway().keys,
        tls=ServerTLS(keys.server_key, keys.server_cert),
    )
    with pytest.raises(TLSConfigError, match="swapped"):
        await server.start()


def test_cli_client_names_the_bad_file_and_prints_no_grpc_log_lines(
    keys: DevKeys, other: DevKeys, tmp_path: Path
) -> None:
    """`onecert lookup` with a mismatched key says which file, in one line, status 2."""
    assertion = tmp_path / "a.jwt"
    assertion.write_text("x.y.z\n")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "onecert.cli", "lookup", "--gateway", "127.0.0.1:9"),
            *("--assertion", str(assertion), "--ca", str(keys.ca_cert)),
            *("--cert", str(keys.client_cert("gateway"))),
            *("--key", str(other.client_key("gateway"))),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"onecert: client private key {other.client_key('gateway')} does not belong to the "
        f"certificate {keys.client_cert('gateway')} (CN=gateway)"
    ]


@pytest.mark.parametrize(
    "start",
    [
        # The CLI, before any command imports gRPC.
        "from onecert.cli import main\nassert main(['keys', 'init', {keys!r}]) == 0\n",
        # An adapter program (provider.main()): importing the SDK is enough.
        "import onecert.sdk\n",
    ],
    ids=["cli", "adapter"],
)
def test_grpc_core_log_lines_stay_off_the_terminal(
    keys: DevKeys, other: DevKeys, tmp_path: Path, start: str
) -> None:
    """Once the CLI has started, or an adapter program has imported the SDK, gRPC's own
    'E1205 ...' log lines stay off the terminal (here: a key gRPC refuses, loaded behind
    the checks' back), unless GRPC_VERBOSITY asks."""
    code = (
        start.format(keys=str(tmp_path / "k")) + "import grpc\n"
        "creds = grpc.ssl_channel_credentials(\n"
        f"    open({str(keys.ca_cert)!r}, 'rb').read(),\n"
        f"    open({str(other.client_key('gateway'))!r}, 'rb').read(),\n"
        f"    open({str(keys.client_cert('gateway'))!r}, 'rb').read(),\n"
        ")\n"
        "channel = grpc.secure_channel('localhost:9', creds)\n"
        "try:\n"
        "    grpc.channel_ready_future(channel).result(timeout=1)\n"
        "except grpc.FutureTimeoutError:\n"
        "    print('not connected')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    quiet = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    shutil.rmtree(tmp_path / "k", ignore_errors=True)
    loud = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "GRPC_VERBOSITY": "ERROR"},
        check=False,
    )
    core_line = re.compile(r"^[EWID]\d{4} ", re.MULTILINE)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.endswith("not connected\n")
    assert not core_line.search(quiet.stderr)
    assert core_line.search(loud.stderr)  # the control: gRPC does log this mistake


def test_tls_check_module_is_where_credentials_come_from() -> None:
    """ServerTLS and ClientTLS are the only places that build gRPC TLS credentials from files
    in the SDK, so every loader goes through the checks."""
    sdk = Path(__file__).resolve().parents[2] / "sdk" / "onecert" / "sdk"
    builders = [
        path.name
        for path in sdk.rglob("*.py")
        if re.search(r"ssl_(server|channel)_credentials\(", path.read_text())
    ]
    assert builders == ["_tls.py"]


async def test_missing_client_certificate_gets_a_hint(
    provider: Provider, keys: DevKeys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client without a certificate, turned away by a mutual-TLS server ('Socket closed'),
    is told to give --cert and --key."""
    assertion = tmp_path / "a.jwt"
    assertion.write_text("x.y.z\n")
    tls = ServerTLS(keys.server_cert, keys.server_key, keys.ca_cert)
    async with Server(provider, gateway_keys=FakeGateway().keys, tls=tls) as server:
        argv = ["lookup", "--gateway", f"localhost:{server.port}", "--ca", str(keys.ca_cert)]
        argv += ["--assertion", str(assertion), "--timeout", "5"]
        assert await asyncio.to_thread(main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("onecert: lookup refused by the gateway: UNAVAILABLE")
    assert err.rstrip().endswith(
        "(if the gateway requires a client certificate, give --cert and --key)"
    )
