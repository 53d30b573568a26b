"""The TypeScript provider in examples/ts-provider, written from docs/contract.md alone,
passes the conformance kit and gets every test vector's verdict."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from onecert.sdk.devkeys import DevKeys

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ts-provider"
TSX = EXAMPLE / "node_modules" / ".bin" / "tsx"
_LISTENING = re.compile(r"listening on (\S+:\d+)")


def _tsx() -> str:
    # CI runs `npm ci` there (.ci/run); a missing install is a set-up error,
    # reported as such rather than skipped.
    assert TSX.exists(), f"run `npm ci --prefix {EXAMPLE}` first"
    return str(TSX)


@pytest.fixture
def ts_provider(dev_keys: DevKeys) -> Iterator[str]:
    """Start the TypeScript provider on a free port; its target."""
    env = {
        **os.environ,
        "GATEWAY_JWKS": str(dev_keys.gateway_jwks),
        "PROVIDER_ID": "ts-forum",
        "LISTEN": "127.0.0.1:0",
    }
    process = subprocess.Popen(
        [_tsx(), "src/main.ts"],
        cwd=EXAMPLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # tsx starts node as a child: stop the group
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # bounded by the test timeout
        match = _LISTENING.search(line)
        assert match, f"the provider did not start: {line!r}"
        yield match.group(1)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=10)
        assert "Error" not in err, err


def test_ts_provider_passes_every_check_of_the_kit(ts_provider: str, dev_keys: DevKeys) -> None:
    """`onecert conformance provider` passes every check, none skipped, against the
    TypeScript provider, unbind included."""
    kit = subprocess.run(
        [
            sys.executable,
            "-m",
            "onecert.cli",
            "conformance",
            "provider",
            "--target",
            ts_provider,
            "--insecure",
            "--warrant-key",
            str(dev_keys.warrant_key),
            "--provider-id",
            "ts-forum",
            "--known-number",
            "+8613800000001",
            "--known-number",
            "+8613800000002",
            "--unbind",
            "+8613800000002:ts-3",
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert kit.returncode == 0, kit.stdout + kit.stderr
    assert ": conformant: " in kit.stdout
    assert " 0 failed, 0 skipped" in kit.stdout


def test_ts_verifiers_get_every_vector_verdict() -> None:
    """The TypeScript verifiers (jose) give every warrant and SET of
    docs/contract-vectors.json the verdict the contract says."""
    run = subprocess.run(
        [_tsx(), "src/check-vectors.ts"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"(\d+) of \1 vectors get the contract's verdict", run.stdout), run.stdout
