"""Fixtures for hardening: :class:`tests.hardening.hardening_support.Harness` in
development mode (``hz``) or over mutual TLS (``tls_hz``), the dev CA with bad
client certificates, an attacker's key server, and raw misbehaving servers."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from onecert.gateway.testing import FederationKeys
from onecert.sdk._keys import SigningKey
from onecert.sdk.devkeys import init_dev_keys
from tests.hardening.hardening_net import JunkServer, ResettingProxy, SilentServer
from tests.hardening.hardening_support import Harness, KeyServer, Pki, issue_client_cert


@pytest.fixture(autouse=True)
def _logs(logs_to_stderr: None) -> None:
    """Gateway logs go to stderr for every test here."""


@pytest.fixture
def keys(tmp_path: Path) -> FederationKeys:
    return FederationKeys.create(tmp_path / "keys")


@pytest.fixture
async def hz(keys: FederationKeys, tmp_path: Path) -> AsyncIterator[Harness]:
    """A harness in development mode (plaintext), no fakes yet."""
    async with Harness(keys, tmp_path) as harness:
        yield harness


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The dev CA (clients gateway, portal, cm, intruder), a foreign CA, and bad
    client certificates: expired, not yet valid, and server-only, all signed by the
    dev CA."""
    dev = init_dev_keys(
        tmp_path_factory.mktemp("pki"), clients=("gateway", "portal", "cm", "intruder")
    )
    other = init_dev_keys(tmp_path_factory.mktemp("pki-other"), clients=("gateway", "portal"))
    bad_dir = tmp_path_factory.mktemp("pki-bad")
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)
    bad = {
        "expired": issue_client_cert(
            bad_dir, "expired", ca=dev, common_name="portal", not_before=now - 30 * day,
            not_after=now - day,
        ),
        "not-yet-valid": issue_client_cert(
            bad_dir, "not-yet-valid", ca=dev, common_name="portal", not_before=now + day,
            not_after=now + 30 * day,
        ),
        "server-only": issue_client_cert(
            bad_dir, "server-only", ca=dev, common_name="portal", not_before=now - day,
            not_after=now + 30 * day, usage=ExtendedKeyUsageOID.SERVER_AUTH,
        ),
        "foreign": (other.client_cert("portal"), other.client_key("portal")),
    }  # fmt: skip
    return Pki(dev=dev, other=other, bad=bad)


@pytest.fixture
async def tls_hz(tmp_path: Path, pki: Pki) -> AsyncIterator[Harness]:
    """A harness in production mode: mutual TLS everywhere on the dev CA."""
    async with Harness(FederationKeys.load(pki.dev), tmp_path, tls=True) as harness:
        yield harness


@pytest.fixture
def attacker_keys() -> Iterator[KeyServer]:
    """The attacker's key, served at ``KeyServer.url`` + ``/jwks.json``."""
    key = SigningKey.generate("ES256")
    body = json.dumps(key.jwks()).encode()
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield KeyServer(url=f"http://127.0.0.1:{server.server_address[1]}", key=key, requests=seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---------------------------------------------------------------- raw network misbehaviour


@pytest.fixture
async def network() -> AsyncIterator[list[ResettingProxy | JunkServer | SilentServer]]:
    """Raw servers a test starts; all closed after it."""
    started: list[ResettingProxy | JunkServer | SilentServer] = []
    try:
        yield started
    finally:
        for server in started:
            await server.close()
