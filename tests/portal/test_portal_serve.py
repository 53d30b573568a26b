"""`onecert portal serve` as a process: TLS of its own, and configuration errors."""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path
from typing import Any

from onecert.sdk.devkeys import init_dev_keys


def write_config(directory: Path, keys: Any, *, tls: bool) -> Path:
    config = directory / "portal.toml"
    tls_table = (
        f'[portal.tls]\ncert = "{keys.server_cert}"\nkey = "{keys.server_key}"\n' if tls else ""
    )
    config.write_text(
        f"""
[portal]
mode = "development"
listen = "127.0.0.1:0"
{tls_table}
[gateway]
address = "127.0.0.1:9"
ca = "{keys.ca_cert}"
cert = "{keys.client_cert("portal")}"
key = "{keys.client_key("portal")}"

[dev_identity]
key = "{keys.identity_key}"
idn_key = "{keys.idn_key}"
issuer = "https://id.test"

[[dev_identity.citizens]]
sub = "c-1"
name = "Test Person"
document = "110105199203154420"
""",
        encoding="utf-8",
    )
    return config


def test_the_portal_serves_https_with_its_own_certificate(
    tmp_path: Path, spawn_portal: Any
) -> None:
    """With [portal.tls] the portal speaks HTTPS only, with the configured certificate."""
    keys = init_dev_keys(tmp_path / "keys")
    config = write_config(tmp_path, keys, tls=True)
    process, url = spawn_portal(config, tmp_path / "portal.log")
    try:
        assert url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(keys.ca_cert))
        with urllib.request.urlopen(url + "/", context=context) as page:  # loopback
            assert "开发模式" in page.read().decode("utf-8")
            assert "Secure" in page.headers["set-cookie"]
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path, run_portal: Any) -> None:
    """A misspelt key stops `onecert portal serve` before it listens, naming the key."""
    config = tmp_path / "portal.toml"
    config.write_text('[portal]\nmode = "development"\nlisen = "127.0.0.1:0"\n')
    run = run_portal(config)
    assert run.returncode == 2
    assert "unknown key 'portal.lisen' (did you mean 'listen'?)" in run.stderr


def test_a_missing_key_file_exits_2_naming_it(tmp_path: Path, run_portal: Any) -> None:
    """A development identity key that is not there stops the portal with a message."""
    keys = init_dev_keys(tmp_path / "keys")
    config = write_config(tmp_path, keys, tls=False)
    keys.identity_key.unlink()
    run = run_portal(config)
    assert run.returncode == 2
    assert "the portal cannot start" in run.stderr
    assert "identity.key.pem" in run.stderr
    assert "Traceback" not in run.stderr
