"""The README's front-door promises hold: its adapter example passes the conformance kit."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onecert.sdk._server import free_port
from onecert.sdk.devkeys import init_dev_keys

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def _wait_serving(port: int, keys: Path, deadline: float) -> None:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(keys / "ca.pem").read_bytes(),
        private_key=(keys / "client-gateway.key.pem").read_bytes(),
        certificate_chain=(keys / "client-gateway.pem").read_bytes(),
    )
    while time.monotonic() < deadline:
        with grpc.secure_channel(f"localhost:{port}", creds) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.1)
    raise AssertionError("the README adapter did not start")


def test_readme_example_is_the_committed_example() -> None:
    """The adapter shown in the README is exactly examples/provider_example.py."""
    example = (ROOT / "examples" / "provider_example.py").read_text()
    assert example in _python_blocks()
    assert len(example.splitlines()) <= 32


def test_readme_portal_example_is_the_committed_example() -> None:
    """The portal code shown in the README is exactly examples/portal_lookup.py."""
    example = (ROOT / "examples" / "portal_lookup.py").read_text()
    assert example in _python_blocks()


def test_readme_adapter_passes_the_conformance_kit(tmp_path: Path) -> None:
    """The README's adapter, copied into a file and run with mTLS, passes every kit check."""
    keys = tmp_path / "keys"
    init_dev_keys(keys)
    adapter = tmp_path / "adapter.py"
    adapter.write_text(_python_blocks()[0])
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(adapter),
            "--port",
            str(port),
            "--gateway-jwks",
            str(keys / "gateway.jwks.json"),
            "--tls-cert",
            str(keys / "server.pem"),
            "--tls-key",
            str(keys / "server.key.pem"),
            "--client-ca",
            str(keys / "ca.pem"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_serving(port, keys, time.monotonic() + 20)
        kit = subprocess.run(
            [
                sys.executable,
                "-m",
                "onecert.cli",
                "conformance",
                "provider",
                "--target",
                f"localhost:{port}",
                "--warrant-key",
                str(keys / "warrant.key.pem"),
                "--provider-id",
                "example-forum",
                "--known-number",
                "+8613800138000",
                "--unbind",
                "+8613800138000:u2",
                "--ca",
                str(keys / "ca.pem"),
                "--cert",
                str(keys / "client-gateway.pem"),
                "--key",
                str(keys / "client-gateway.key.pem"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert kit.returncode == 0, kit.stdout + kit.stderr
        assert "unbind.idempotent" in kit.stdout
        assert ": conformant: " in kit.stdout
        assert " 0 failed, 0 skipped" in kit.stdout
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        log = process.stderr.read().decode()
        process.stderr.close()
    assert "+8613800138000" not in log


def test_readme_performance_table_is_the_latest_full_run() -> None:
    """The README's Performance table is exactly the table of bench/results/latest.json."""
    import json
    import sys

    sys.path.insert(0, str(ROOT))
    try:
        from bench._report import table
    finally:
        sys.path.remove(str(ROOT))
    doc = json.loads((ROOT / "bench" / "results" / "latest.json").read_text())
    assert doc["mode"] == "full"
    rows = [line for line in table(doc).splitlines() if line.startswith("|")]
    assert rows
    assert "\n".join(rows) in README
