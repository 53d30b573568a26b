"""``onecert assertion mint``: assertions the gateway's verifier accepts."""

from __future__ import annotations

import argparse
import io
import secrets
import stat
import time
from pathlib import Path

import pytest

from onecert.cli import CommandError
from onecert.cli._identity import register
from onecert.gateway._identity import AssertionVerifier, MemoryReplayCache
from onecert.sdk._idn import compute_idn
from onecert.sdk._keys import SigningKey, parse_jwks

ISSUER = "https://id.example.gov.cn"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="onecert")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status


@pytest.fixture
def keys(tmp_path: Path) -> tuple[SigningKey, Path, Path, bytes]:
    key = SigningKey.generate("ES256")
    key_file = tmp_path / "identity.key.pem"
    key_file.write_bytes(key.to_pem())
    idn_key = secrets.token_bytes(32)
    idn_file = tmp_path / "idn.key"
    idn_file.write_text(idn_key.hex() + "\n")
    return key, key_file, idn_file, idn_key


def verifier(key: SigningKey) -> AssertionVerifier:
    return AssertionVerifier(
        issuers={ISSUER: parse_jwks(key.jwks())},
        audience="onecert-gateway",
        assurance_levels=["low", "substantial", "high"],
        required_assurance="substantial",
        replay=MemoryReplayCache(),
    )


async def test_mint_with_document_writes_a_private_file(
    keys: tuple[SigningKey, Path, Path, bytes], tmp_path: Path
) -> None:
    """Minting from a document number writes a 0600 file the gateway accepts, with the right idn."""
    key, key_file, idn_file, idn_key = keys
    out = tmp_path / "citizen.jwt"
    status = run(
        [
            "assertion", "mint", "--key", str(key_file), "--issuer", ISSUER,
            "--sub", "citizen-7", "--document", "110101199003070011",
            "--idn-key", str(idn_file), "--acr", "high", "--out", str(out),
        ]
    )  # fmt: skip
    assert status == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    citizen = await verifier(key).verify(out.read_text().strip())
    assert citizen.sub == "citizen-7"
    assert citizen.acr == "high"
    assert citizen.idn == compute_idn(idn_key, "110101199003070011")
    assert citizen.expires_at - time.time() == pytest.approx(120, abs=5)


async def test_mint_with_idn_prints_the_token(
    keys: tuple[SigningKey, Path, Path, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    """Minting from an idn prints the assertion on stdout."""
    key, key_file, _, _ = keys
    idn = "AB" * 32
    run(
        [
            "assertion",
            "mint",
            "--key",
            str(key_file),
            "--issuer",
            ISSUER,
            "--sub",
            "c",
            "--idn",
            idn,
        ]
    )
    citizen = await verifier(key).verify(capsys.readouterr().out.strip())
    assert citizen.idn == idn.lower()


def test_document_from_stdin(
    keys: tuple[SigningKey, Path, Path, bytes],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """'--document -' reads the number from stdin, keeping it off the command line."""
    _, key_file, idn_file, _ = keys
    monkeypatch.setattr("sys.stdin", io.StringIO("110101199003070011\n"))
    run(
        [
            "assertion", "mint", "--key", str(key_file), "--issuer", ISSUER, "--sub", "c",
            "--document", "-", "--idn-key", str(idn_file),
        ]
    )  # fmt: skip
    assert capsys.readouterr().out.count(".") == 2


@pytest.mark.parametrize(
    "extra",
    [
        ["--idn", "xyz"],
        ["--document", "110101199003070011"],
        ["--document", "110101199003070011", "--idn-key", "/nonexistent/idn.key"],
        ["--idn", "a" * 64, "--lifetime", "0"],
    ],
)
def test_user_errors_are_command_errors(
    keys: tuple[SigningKey, Path, Path, bytes], extra: list[str]
) -> None:
    """A bad idn, a document without its key, an unreadable key or a bad lifetime is refused."""
    _, key_file, _, _ = keys
    with pytest.raises(CommandError) as info:
        run(["assertion", "mint", "--key", str(key_file), "--issuer", ISSUER, "--sub", "c", *extra])
    assert "110101199003070011" not in str(info.value)


def test_missing_signing_key_is_a_command_error(tmp_path: Path) -> None:
    """An unreadable signing key is reported as a CommandError."""
    with pytest.raises(CommandError):
        run(
            [
                "assertion", "mint", "--key", str(tmp_path / "nope.pem"), "--issuer", ISSUER,
                "--sub", "c", "--idn", "a" * 64,
            ]
        )  # fmt: skip
