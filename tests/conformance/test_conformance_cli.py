"""`onecert conformance provider|carrier`: options, table, JSON and exit status."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from onecert.cli import main
from onecert.sdk._tls import ServerTLS
from onecert.sdk.conformance import CARRIER_CHECKS, FILTER_CHECKS, PROVIDER_CHECKS
from onecert.sdk.devkeys import DevKeys
from tests.conformance.conftest import StartCarrier, StartProvider, StartThreaded
from tests.conformance.plain_adapters import (
    CARRIER_ID,
    IDN_A,
    NUMBER_A,
    NUMBER_B,
    PROVIDER_ID,
)

_FAST = ["--timeout", "2", "--short-deadline", "0.2", "--slack", "1"]


async def _cli(*args: str) -> tuple[int, str, str]:
    """Run ``python -m onecert.cli`` in a subprocess; its status, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "onecert.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _provider_args(target: str, dev_keys: DevKeys, *extra: str) -> list[str]:
    return [
        "conformance",
        "provider",
        "--target",
        target,
        "--warrant-key",
        str(dev_keys.warrant_key),
        "--provider-id",
        PROVIDER_ID,
        "--known-number",
        NUMBER_A,
        "--known-number",
        NUMBER_B,
        *_FAST,
        *extra,
    ]


async def test_cli_passes_a_correct_provider_with_exit_status_zero(
    start_provider: StartProvider, dev_keys: DevKeys
) -> None:
    """The installed command prints a PASS line per check and exits 0 for a correct provider."""
    target = await start_provider()
    status, out, err = await _cli(
        *_provider_args(target, dev_keys, "--unbind", f"{NUMBER_B}:acct-3", "--insecure")
    )
    assert status == 0, out + err
    assert "PASS  H-1   health.overall" in out
    assert "PASS  U-4   unbind.idempotent" in out
    assert "FAIL" not in out
    assert ": conformant: " in out


async def test_cli_checks_a_carrier_and_fails_a_broken_one(
    start_carrier: StartCarrier, dev_keys: DevKeys
) -> None:
    """The carrier command exits 0 for a correct carrier and 1 when a check fails."""
    args = ["--warrant-key", str(dev_keys.warrant_key), "--carrier-id", CARRIER_ID]
    args += ["--known-idn", IDN_A, "--insecure", *_FAST]
    good = await start_carrier()
    status, out, err = await _cli("conformance", "carrier", "--target", good, *args)
    assert status == 0, out + err
    assert "PASS  C-1   list_numbers.known_idns" in out
    bad = await start_carrier(["C-2"])
    status, out, _ = await _cli("conformance", "carrier", "--target", bad, *args)
    assert status == 1
    assert "FAIL  C-2   list_numbers.unknown_idn" in out


def test_cli_exits_one_when_a_check_fails(
    start_threaded_provider: StartThreaded, dev_keys: DevKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    """A provider that ignores warrants makes the command print FAIL lines and exit 1."""
    target = start_threaded_provider(["W-1"])
    assert main(_provider_args(target, dev_keys, "--insecure")) == 1
    out = capsys.readouterr().out
    assert "FAIL  W-1   list_bindings.warrant.missing" in out
    assert "SKIP  U-4   unbind.idempotent" in out
    assert "NOT conformant" in out


def test_cli_json_report(
    start_threaded_provider: StartThreaded, dev_keys: DevKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints one JSON document with every check's name, outcome and detail."""
    target = start_threaded_provider()
    assert main(_provider_args(target, dev_keys, "--insecure", "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["kind"] == "provider"
    outcomes = {c["name"]: c["outcome"] for c in report["checks"]}
    assert outcomes["health.overall"] == "passed"
    assert {c["name"]: c["rule"] for c in report["checks"]}["health.overall"] == "H-1"
    assert outcomes["unbind.idempotent"] == "skipped"
    assert report["counts"]["failed"] == 0


def test_cli_over_mutual_tls_with_dev_keys(
    start_threaded_provider: StartThreaded, dev_keys: DevKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --ca, --cert and --key from `onecert keys init`, the kit checks a provider
    that requires client certificates."""
    tls = ServerTLS(dev_keys.server_cert, dev_keys.server_key, client_ca_file=dev_keys.ca_cert)
    target = start_threaded_provider(credentials=tls.credentials())
    port = target.rsplit(":", 1)[1]
    mtls = ["--ca", str(dev_keys.ca_cert), "--cert", str(dev_keys.client_cert("gateway"))]
    mtls += ["--key", str(dev_keys.client_key("gateway"))]
    assert main(_provider_args(f"localhost:{port}", dev_keys, *mtls)) == 0, capsys.readouterr()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--insecure", "--unbind", "no-colon"], "--unbind takes NUMBER:ACCOUNT_REF"),
        (["--insecure", "--cert", "c.pem"], "--insecure cannot be combined with --ca, --cert"),
        (["--insecure", "--ca", "ca.pem"], "--insecure cannot be combined with --ca"),
        (["--ca", "ca.pem", "--cert", "c.pem"], "both --cert and --key"),
        (["--insecure", "--timeout", "0"], "--timeout must be positive"),
    ],
)
def test_cli_usage_errors_exit_two(
    dev_keys: DevKeys, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    """Malformed options are refused with a clear message and exit status 2, before any call."""
    assert main(_provider_args("127.0.0.1:1", dev_keys, *extra)) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_a_malformed_known_number(
    dev_keys: DevKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    """A known number that is not E.164 is a usage error (exit 2)."""
    args = ["conformance", "provider", "--target", "127.0.0.1:1", "--insecure"]
    args += ["--warrant-key", str(dev_keys.warrant_key), "--known-number", "13800138000"]
    assert main(args) == 2
    assert "E.164" in capsys.readouterr().err


def test_cli_needs_a_transport_choice(
    dev_keys: DevKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --ca or --insecure the command is refused (plaintext is never implied)."""
    assert main(_provider_args("127.0.0.1:1", dev_keys)) == 2
    assert "give --ca" in capsys.readouterr().err


def test_cli_reports_an_unreadable_warrant_key(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing warrant key file is a usage error naming the file."""
    args = ["conformance", "provider", "--target", "127.0.0.1:1", "--insecure"]
    args += ["--warrant-key", "/nonexistent/warrant.key.pem", "--known-number", NUMBER_A]
    assert main(args) == 2
    assert "/nonexistent/warrant.key.pem" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "kinds"),
    [
        (["conformance", "--list"], ["provider", "carrier", "filter"]),
        (["conformance", "provider", "--list"], ["provider"]),
        (["conformance", "carrier", "--list"], ["carrier"]),
        (["conformance", "filter", "--list"], ["filter"]),
    ],
)
def test_cli_lists_every_check_with_its_rule(
    capsys: pytest.CaptureFixture[str], args: list[str], kinds: list[str]
) -> None:
    """--list prints every check of the kind with its rule id, needing no other option."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    expected = {"provider": PROVIDER_CHECKS, "carrier": CARRIER_CHECKS, "filter": FILTER_CHECKS}
    assert lines == [[kind, rule, name] for kind in kinds for rule, name in expected[kind]]
