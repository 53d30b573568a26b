"""examples/gateway.toml, the config the README serves, works with `onecert keys init keys`."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from onecert.gateway._config import load_config
from onecert.sdk.devkeys import DevKeys, init_dev_keys

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "gateway.toml"
README = (ROOT / "README.md").read_text()


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, DevKeys]:
    """A copy of the repository's layout: examples/gateway.toml next to a fresh keys/."""
    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "examples" / "gateway.toml")
    return tmp_path / "examples" / "gateway.toml", init_dev_keys(tmp_path / "keys")


def test_readme_serves_the_example() -> None:
    """The README's commands are `keys init keys` then `gateway serve` with the example."""
    assert ".venv/bin/onecert keys init keys" in README
    assert ".venv/bin/onecert gateway serve --config examples/gateway.toml" in README


def test_example_parses_in_production_mode(checkout: tuple[Path, DevKeys]) -> None:
    """The real parser takes the example as it is: production mode, every file it
    names is one `onecert keys init keys` wrote, the database at the top."""
    config_path, keys = checkout
    config = load_config(config_path)
    assert not config.dev_plaintext
    assert config.tls is not None
    assert config.upstream_tls is not None
    written = {p.resolve() for p in keys.files()}
    assert {p.resolve() for p in config.files()} <= written
    assert config.store is not None
    assert config.store.url == f"sqlite:///{(config_path.parent.parent / 'onecert.db').resolve()}"
    assert [p.id for p in config.providers] == ["example-forum"]


def _serve(config_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "onecert.cli", "gateway", "serve", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_example_starts_a_gateway(checkout: tuple[Path, DevKeys]) -> None:
    """`onecert gateway serve` with the example (on a free port) listens, then stops on SIGTERM."""
    config_path, _ = checkout
    text = config_path.read_text()
    config_path.write_text(text.replace('listen = "127.0.0.1:50051"', 'listen = "127.0.0.1:0"'))
    gateway = _serve(config_path)
    try:
        assert gateway.stdout is not None
        line = gateway.stdout.readline()
        ready = r"onecert gateway onecert-gateway listening on port \d+ \(production\)"
        assert re.match(ready, line)
        gateway.send_signal(signal.SIGTERM)
        _, err = gateway.communicate(timeout=30)
    finally:
        gateway.kill()
    assert gateway.returncode == 0, err


def test_a_wrong_upstream_key_stops_the_gateway_naming_it(
    checkout: tuple[Path, DevKeys], tmp_path: Path
) -> None:
    """[upstream_tls] with a key of another certificate: the gateway does not start, and
    says which file (instead of every provider call failing UNAVAILABLE later)."""
    config_path, _ = checkout
    other = init_dev_keys(tmp_path / "other")
    text = config_path.read_text().replace(
        'key = "../keys/client-gateway.key.pem"', f'key = "{other.client_key("gateway")}"'
    )
    config_path.write_text(text)
    gateway = _serve(config_path)
    try:
        out, err = gateway.communicate(timeout=60)
    finally:
        gateway.kill()
    assert gateway.returncode == 2
    assert out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"onecert: client private key {other.client_key('gateway')} does not belong to the "
        "certificate "
    )
    assert last.endswith("keys/client-gateway.pem (CN=gateway)")
