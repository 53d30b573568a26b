"""Ctrl-C ends any ``onecert`` command quietly with status 130, even during its imports."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# The console script pip wrote next to the interpreter: what a user runs.
ONECERT = Path(sys.executable).with_name("onecert")


@pytest.fixture
def silent_gateway() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a lookup hangs on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def _start(gateway: str, tmp_path: Path) -> subprocess.Popen[str]:
    assertion = tmp_path / "a.jwt"
    assertion.write_text("x.y.z\n")
    argv = [str(ONECERT), "lookup", "--gateway", gateway, "--insecure", "--timeout", "50"]
    return subprocess.Popen(
        [*argv, "--assertion", str(assertion)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _mapped(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_ctrl_c_while_importing_grpc_exits_130_quietly(silent_gateway: str, tmp_path: Path) -> None:
    """SIGINT as soon as gRPC's native module is being loaded: status 130, nothing on stderr."""
    process = _start(silent_gateway, tmp_path)
    try:
        # gRPC's native module is mapped at the start of its import, which then
        # goes on for a while: the signal lands during the imports.
        while process.poll() is None and not _mapped(process.pid, "cygrpc"):
            time.sleep(0.001)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130
    assert err == ""
    assert out == ""


def test_ctrl_c_while_waiting_exits_130_quietly(silent_gateway: str, tmp_path: Path) -> None:
    """SIGINT once the command waits on the network: status 130, no traceback."""
    process = _start(silent_gateway, tmp_path)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=3)  # still waiting on the silent gateway
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "Traceback" not in err
