"""The TLS flags every client command of the CLI shares, and their checks."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from onecert.cli import CommandError
from onecert.cli._common import add_tls_flags, client_tls

_TARGET = ["--target", "t:1", "--warrant-key", "w.pem"]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_tls_flags(parser, what="the gateway")
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--insecure", "--ca", "ca.pem"), "--insecure cannot be combined with --ca"),
        (("--insecure", "--server-name", "gw"), "--insecure cannot be combined with --ca"),
        ((), "give --ca (and --cert/--key for mutual TLS), or --insecure in dev"),
        (("--ca", "ca.pem", "--cert", "c.pem"), "mutual TLS needs both --cert and --key"),
        (("--ca", "ca.pem", "--key", "k.pem"), "mutual TLS needs both --cert and --key"),
    ],
)
def test_inconsistent_flags_are_refused(argv: tuple[str, ...], message: str) -> None:
    """Contradictory or missing transport flags are a usage error, never plaintext by default."""
    with pytest.raises(CommandError) as info:
        client_tls(_parse(*argv))
    assert str(info.value).startswith(message)


def test_insecure_alone_means_plaintext() -> None:
    """--insecure alone gives no TLS settings."""
    assert client_tls(_parse("--insecure")) is None


def test_a_required_client_certificate_is_named() -> None:
    """A command whose server needs a client certificate says which one is missing."""
    with pytest.raises(CommandError, match=r"^give --ca, --cert and --key \(an admin client"):
        client_tls(_parse("--ca", "ca.pem"), client_cert="an admin client certificate")


def test_unreadable_files_fail_before_connecting(tmp_path: Path) -> None:
    """A missing CA file is reported at once, naming the file."""
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(CommandError, match=r"missing-ca\.pem"):
        client_tls(_parse("--ca", str(missing)))


@pytest.mark.parametrize(
    "command",
    [
        ["lookup", "--gateway", "g:1", "--assertion", "a.jwt"],
        ["unbind", "--gateway", "g:1", "--assertion", "a.jwt", "--handle", "h"],
        ["receipt", "--gateway", "g:1", "--assertion", "a.jwt", "--ticket", "t"],
        ["report", "compliance", "--gateway", "g:1"],
        ["conformance", "provider", *_TARGET, "--known-number", "+8613800138000"],
        ["conformance", "carrier", *_TARGET, "--carrier-id", "c", "--known-idn", "ab"],
    ],
)
def test_every_client_command_takes_the_same_flags(command: list[str]) -> None:
    """Each command that connects to a server accepts the same five transport flags."""
    from onecert.cli import build_parser

    tls = ["--ca", "ca.pem", "--cert", "c.pem", "--key", "k.pem", "--server-name", "gw"]
    args = build_parser().parse_args([*command, *tls])
    assert (args.ca, args.cert, args.key) == (Path("ca.pem"), Path("c.pem"), Path("k.pem"))
    assert (args.server_name, args.insecure) == ("gw", False)
