"""The TypeScript provider and carrier in examples/ts-provider, written from
docs/contract.md alone, pass the conformance kit and get every test vector's verdict."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def _serving(script: str, dev_keys: DevKeys, **env: str) -> Iterator[str]:
    """Run ``script`` of the example on a free port; its target while it runs."""
    process = subprocess.Popen(
        [_tsx(), script],
        cwd=EXAMPLE,
        env={
            **os.environ,
            "GATEWAY_JWKS": str(dev_keys.gateway_jwks),
            "LISTEN": "127.0.0.1:0",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # tsx starts node as a child: stop the group
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # bounded by the test timeout
        match = _LISTENING.search(line)
        assert match, f"{script} did not start: {line!r}"
        yield match.group(1)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=10)
        assert "Error" not in err, err


def _kit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onecert.cli", "conformance", *args, "--insecure"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


@pytest.fixture
def ts_provider(dev_keys: DevKeys) -> Iterator[str]:
    """The TypeScript provider, serving; its target."""
    with _serving("src/main.ts", dev_keys, PROVIDER_ID="ts-forum") as target:
        yield target


def test_ts_provider_passes_every_check_of_the_kit(ts_provider: str, dev_keys: DevKeys) -> None:
    """`onecert conformance provider` passes every check, none skipped, against the
    TypeScript provider, unbind included."""
    kit = _kit(
        "provider",
        "--target",
        ts_provider,
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
    )
    assert kit.returncode == 0, kit.stdout + kit.stderr
    assert ": conformant: " in kit.stdout
    assert " 0 failed, 0 skipped" in kit.stdout


def test_ts_carrier_passes_every_check_of_the_kit(dev_keys: DevKeys) -> None:
    """`onecert conformance carrier` passes every check against the TypeScript carrier."""
    idns = [hashlib.sha256(f"ts-carrier subscriber {s}".encode()).hexdigest() for s in "AB"]
    with _serving("src/carrier.ts", dev_keys, CARRIER_ID="ts-carrier") as target:
        kit = _kit(
            "carrier",
            "--target",
            target,
            "--warrant-key",
            str(dev_keys.warrant_key),
            "--carrier-id",
            "ts-carrier",
            "--known-idn",
            idns[0],
            "--known-idn",
            idns[1],
        )
    assert kit.returncode == 0, kit.stdout + kit.stderr
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
