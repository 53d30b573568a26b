"""A real federation (carriers, providers, gateway: one process each, mutual TLS)
with the portal in front of it, and Debian's Chromium driven by Playwright.

No browser is ever downloaded: Playwright is pointed at ``/usr/bin/chromium``
(``apt-get install chromium``). Without it the browser tests are skipped,
saying why; under CI (``CI`` set) they fail instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bench._portal import CHROMIUM_ARGS
from onecert.adapters.demo import GATEWAY_ID, IDENTITY_ISSUER, PROVIDERS, STORY, DemoFederation
from onecert.sdk._idn import compute_idn
from onecert.sdk._keys import SigningKey
from onecert.sdk._server import free_port
from onecert.sdk.devkeys import DevKeys

CHROMIUM = os.environ.get("ONECERT_CHROMIUM", "/usr/bin/chromium")
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"


@dataclass
class Portal:
    """A running federation and its portal."""

    federation: DemoFederation
    url: str

    def log(self) -> str:
        return (self.federation.logs / "portal.log").read_text(encoding="utf-8", errors="replace")


# The slow provider answers after this long, so a results page is always shown
# before the lookup ends, even on a busy machine, and the rest streams in.
SLOW_PROVIDER_S = 3.0


def start_federation(directory: Path) -> Portal:
    """Every process of the demo federation, then the portal on top (port 0 everywhere)."""
    providers = [
        dataclasses.replace(p, delay_s=SLOW_PROVIDER_S) if p.delay_s else p for p in PROVIDERS
    ]
    federation = DemoFederation(
        directory,
        providers=providers,
        provider_deadline_s=SLOW_PROVIDER_S + 2,
        startup_timeout=60.0,
    )

    async def start() -> str:
        await federation.start()
        return await federation.start_portal()

    try:
        url = asyncio.run(start())
    except BaseException:
        federation.stop()
        raise
    return Portal(federation, url.rstrip("/"))


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    """One federation and portal for the module's tests."""
    running = start_federation(tmp_path_factory.mktemp("portal") / "fed")
    try:
        yield running
    finally:
        running.federation.stop()


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {what}: the portal's browser tests must run")
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium, through Playwright (never a downloaded browser)."""
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                yield launched
            finally:
                launched.close()
    finally:
        # Playwright's sync API leaves the thread with no event loop set; a fresh
        # policy gives later tests the default behaviour back.
        asyncio.set_event_loop_policy(None)


@pytest.fixture
def axe_source() -> str:
    """axe-core's browser bundle, from npm (``npm ci`` in tests/portal)."""
    if not AXE.exists():
        _missing(f"no {AXE} (run npm ci in tests/portal)")
    return AXE.read_text(encoding="utf-8")


# ---------------------------------------------------------------- identity service


@pytest.fixture(name="spawn_portal")
def spawn_portal_fixture() -> Any:
    """:func:`spawn_portal`, for test modules (they import nothing from here)."""
    return spawn_portal


@pytest.fixture(name="run_portal")
def run_portal_fixture() -> Any:
    """:func:`run_portal`, for test modules (they import nothing from here)."""
    return run_portal


def run_portal(config: Path) -> subprocess.CompletedProcess[str]:
    """``onecert portal serve --config CONFIG`` run to its end: for configs it refuses."""
    return subprocess.run(
        [sys.executable, "-m", "onecert.cli", "portal", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def spawn_portal(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``onecert portal serve --config CONFIG`` in its own process; its URL once it listens."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "onecert.cli", "portal", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"portal listening on (http\S+)/", log.read_text(errors="replace"))
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise AssertionError(f"the portal did not start:\n{log.read_text(errors='replace')}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class FakeIdentityService:
    """An OpenID Connect provider with RFC 8693 token exchange, just enough of one.

    Authorization code flow with PKCE (S256 only, the verifier checked), an
    ES256 ID token with the nonce, and a token exchange that turns the
    citizen's access token into a gateway assertion signed with the dev
    identity key the gateway trusts. It signs in whoever :attr:`who` names.
    """

    ASSERTION_TYPE = "urn:onecert:params:oauth:token-type:identity-assertion"

    def __init__(
        self,
        *,
        keys: DevKeys,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        gateway_issuer: str,
        gateway_audience: str,
        documents: dict[str, str],
    ) -> None:
        self.keys = keys
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.gateway_issuer = gateway_issuer
        self.gateway_audience = gateway_audience
        self.documents = documents
        self.who = next(iter(documents))
        self.id_key = SigningKey.generate("ES256")
        self.assertion_key = SigningKey.load(keys.identity_key)
        self.idn_key = bytes.fromhex(keys.idn_key.read_text().strip())
        self.url = ""
        self.codes: dict[str, dict[str, str]] = {}
        self.access_tokens: dict[str, str] = {}
        self.pkce_checked = 0
        self.exchanges = 0
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.metadata),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/jwks", self.jwks),
            ]
        )

    async def metadata(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": [
                    "authorization_code",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ],
            }
        )

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(self.id_key.jwks())

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if (
            q.get("response_type") != "code"
            or q.get("client_id") != self.client_id
            or q.get("redirect_uri") != self.redirect_uri
            or q.get("code_challenge_method") != "S256"
            or not q.get("code_challenge")
            or not q.get("nonce")
        ):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "sub": self.who,
            "challenge": q["code_challenge"],
            "nonce": q["nonce"],
        }
        query = urlencode({"code": code, "state": q.get("state", "")})
        return RedirectResponse(f"{self.redirect_uri}?{query}", status_code=302)

    def _client_ok(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}"

    async def token(self, request: Request) -> Response:
        if not self._client_ok(request):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        form = await request.form()
        grant = form.get("grant_type")
        if grant == "authorization_code":
            entry = self.codes.pop(str(form.get("code")), None)
            verifier = str(form.get("code_verifier", ""))
            if entry is None or form.get("redirect_uri") != self.redirect_uri:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            if _b64(hashlib.sha256(verifier.encode()).digest()) != entry["challenge"]:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            self.pkce_checked += 1
            access = secrets.token_urlsafe(24)
            self.access_tokens[access] = entry["sub"]
            now = int(time.time())
            id_token = self.id_key.sign(
                {
                    "iss": self.url,
                    "aud": self.client_id,
                    "sub": entry["sub"],
                    "nonce": entry["nonce"],
                    "iat": now,
                    "exp": now + 300,
                },
                typ="JWT",
            )
            return JSONResponse(
                {
                    "access_token": access,
                    "token_type": "Bearer",
                    "expires_in": 600,
                    "id_token": id_token,
                }
            )
        if grant == "urn:ietf:params:oauth:grant-type:token-exchange":
            sub = self.access_tokens.get(str(form.get("subject_token")))
            if (
                sub is None
                or form.get("subject_token_type") != "urn:ietf:params:oauth:token-type:access_token"
                or form.get("requested_token_type") != self.ASSERTION_TYPE
                or form.get("audience") != self.gateway_audience
            ):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            self.exchanges += 1
            now = int(time.time())
            assertion = self.assertion_key.sign(
                {
                    "iss": self.gateway_issuer,
                    "sub": sub,
                    "aud": self.gateway_audience,
                    "iat": now,
                    "exp": now + 60,
                    "jti": secrets.token_urlsafe(16),
                    "idn": compute_idn(self.idn_key, self.documents[sub]),
                    "acr": "substantial",
                },
                typ="onecert-id+jwt",
            )
            return JSONResponse(
                {
                    "access_token": assertion,
                    "issued_token_type": self.ASSERTION_TYPE,
                    "token_type": "N_A",
                    "expires_in": 60,
                }
            )
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)


@contextlib.contextmanager
def serve_identity_service(service: FakeIdentityService) -> Iterator[FakeIdentityService]:
    """Serve ``service`` over TLS (the dev server certificate) on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    service.url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(
            service.app,
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(service.keys.server_cert),
            ssl_keyfile=str(service.keys.server_key),
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline:
                raise AssertionError("the identity service did not start")
            time.sleep(0.02)
        yield service
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# ---------------------------------------------------------------- production portal

CLIENT_ID = "citizen-portal"


def production_config(portal: Portal, directory: Path, idp_url: str, port: int) -> Path:
    keys = portal.federation.keys
    secret = directory / "client-secret"
    secret.write_text("s3cret-for-tests\n")
    config = directory / "portal-production.toml"
    config.write_text(
        f"""
[portal]
listen = "127.0.0.1:{port}"
tls_terminated_by_proxy = true

[gateway]
address = "{portal.federation.gateway_address}"
ca = "{keys.ca_cert}"
cert = "{keys.client_cert("portal")}"
key = "{keys.client_key("portal")}"

[oidc]
metadata_url = "{idp_url}/.well-known/openid-configuration"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
redirect_uri = "http://127.0.0.1:{port}/signin/callback"
assertion_audience = "{GATEWAY_ID}"
ca_file = "{keys.ca_cert}"
""",
        encoding="utf-8",
    )
    return config


@pytest.fixture(scope="module")
def production(portal: Portal, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A production-mode portal in front of the federation, signing in at a fake
    identity service over TLS."""
    directory = tmp_path_factory.mktemp("production")
    port = free_port()
    service = FakeIdentityService(
        keys=portal.federation.keys,
        client_id=CLIENT_ID,
        client_secret="s3cret-for-tests",
        redirect_uri=f"http://127.0.0.1:{port}/signin/callback",
        gateway_issuer=IDENTITY_ISSUER,
        gateway_audience=GATEWAY_ID,
        documents={STORY.citizen_sub: STORY.citizen.document_number},
    )
    with serve_identity_service(service):
        config = production_config(portal, directory, service.url, port)
        process, url = spawn_portal(config, directory / "portal.log")
        try:
            yield service, url
        finally:
            process.terminate()
            process.wait(timeout=20)
