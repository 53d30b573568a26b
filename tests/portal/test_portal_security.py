"""The portal's security mechanics, in process: headers, cookies, CSRF, sessions,
sign-out, redirects, and a configuration that cannot turn the development
identity step on in production."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import onecert.portal
from onecert.portal import (
    CSP,
    SESSION_COOKIE,
    Citizen,
    ConfigError,
    DevAssertions,
    Identity,
    PortalApp,
    parse_config,
)
from onecert.portal._sessions import SessionStore
from onecert.sdk import ClientTLS
from onecert.sdk.client import GatewayClient
from onecert.sdk.devkeys import DevKeys, init_dev_keys

TEMPLATES = Path(onecert.portal.__file__).parent / "templates"
SUB = "c-test-1"


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> DevKeys:
    return init_dev_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop of this test's own: the gRPC channel is made outside any
    coroutine, and a browser test before may have left the thread without one."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def app(keys: DevKeys, clock: Clock, loop: asyncio.AbstractEventLoop) -> PortalApp:
    dev = DevAssertions(
        key=keys.identity_key,
        idn_key=keys.idn_key,
        issuer="https://id.test",
        audience="onecert-gateway",
        acr="substantial",
        documents={SUB: "110105199203154420"},
    )
    # Nothing listens there: these tests never reach the gateway.
    client = GatewayClient(
        "127.0.0.1:9",
        tls=ClientTLS(keys.ca_cert, keys.client_cert("portal"), keys.client_key("portal")),
    )
    return PortalApp(
        client=client,
        identity=Identity(assertions=dev, dev=dev, dev_citizens=((SUB, "Test Person"),)),
        sessions=SessionStore(idle_s=60, max_s=600, clock=clock),
        hsts=True,
    )


@pytest.fixture
def browser(app: PortalApp) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://portal.test") as client:
        yield client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None
    return match.group(1)


def sign_in(browser: TestClient) -> None:
    page = browser.get("/signin")
    answer = browser.post(
        "/signin/dev", data={"csrf": csrf_of(page.text), "citizen": SUB}, follow_redirects=False
    )
    assert answer.status_code == 303


def test_every_response_carries_the_security_headers(browser: TestClient) -> None:
    """Pages, errors and static files all get a strict CSP (no inline script or
    style), no framing, no sniffing, no referrer, HSTS in production."""
    for path in ("/", "/signin", "/no-such-page", "/static/portal.js"):
        response = browser.get(path)
        headers = response.headers
        assert headers["content-security-policy"] == CSP, path
        assert "unsafe-inline" not in CSP
        assert "unsafe-eval" not in CSP
        assert "script-src 'self'" in CSP
        assert "frame-ancestors 'none'" in CSP
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["strict-transport-security"].startswith("max-age=")
    assert browser.get("/").headers["cache-control"] == "no-store"


def test_the_session_cookie_is_host_only_secure_httponly_samesite(browser: TestClient) -> None:
    """The session cookie is a __Host- cookie: Secure, HttpOnly, SameSite=Lax, Path=/,
    holding only a random id."""
    cookie = browser.get("/").headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    assert name == SESSION_COOKIE
    value, *attributes = [part.strip() for part in rest.split(";")]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)
    assert set(attributes) == {"Path=/", "Secure", "HttpOnly", "SameSite=Lax"}


def test_no_template_has_inline_script_or_style() -> None:
    """Templates load script and style from files only, as the CSP demands."""
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert "<style" not in text, template.name
        assert "style=" not in text, template.name
        assert not re.search(r"\son[a-z]+=", text), template.name


def test_signing_in_gives_a_new_session_id(browser: TestClient) -> None:
    """The session id changes at sign-in, so an id planted before it is worthless."""
    browser.get("/")
    before = browser.cookies.get(SESSION_COOKIE)
    sign_in(browser)
    after = browser.cookies.get(SESSION_COOKIE)
    assert before
    assert after
    assert before != after
    assert "退出" in browser.get("/").text


@pytest.mark.parametrize(
    "path",
    ["/signin/dev", "/signout", "/language", "/lookup", "/confirm", "/unbind", "/before-cancel"],
)
def test_every_form_needs_its_csrf_token(browser: TestClient, path: str) -> None:
    """Every POST without the session's CSRF token, or with another, is refused with 403."""
    sign_in(browser)
    assert browser.post(path, data={"citizen": SUB}).status_code == 403
    assert browser.post(path, data={"csrf": "forged", "citizen": SUB}).status_code == 403
    # Still signed in: nothing happened.
    assert "退出" in browser.get("/").text


def test_a_session_ends_after_the_idle_timeout(browser: TestClient, clock: Clock) -> None:
    """After the idle timeout the citizen is signed out and told why."""
    sign_in(browser)
    clock.now += 59
    assert "退出" in browser.get("/").text
    clock.now += 61
    page = browser.get("/")
    assert "为了安全已经退出" in page.text
    assert "退出</button>" not in page.text
    assert browser.get("/results", follow_redirects=False).headers["location"] == "/signin"


def test_a_session_ends_after_its_longest_life(browser: TestClient, clock: Clock) -> None:
    """However active, a session ends ``max_s`` after sign-in."""
    sign_in(browser)
    for _ in range(10):
        clock.now += 55
        assert "退出</button>" in browser.get("/").text
    clock.now += 55
    assert "为了安全已经退出" in browser.get("/").text


def test_signing_out_forgets_the_citizen(browser: TestClient) -> None:
    """Sign-out ends the session: the old cookie no longer signs anyone in."""
    sign_in(browser)
    old = browser.cookies.get(SESSION_COOKIE)
    page = browser.get("/")
    out = browser.post("/signout", data={"csrf": csrf_of(page.text)})
    assert "您已退出" in out.text
    browser.cookies.clear()
    browser.cookies.set(SESSION_COOKIE, old or "", domain="portal.test")
    assert "开始查询" not in browser.get("/").text


def test_the_language_switch_only_goes_back_to_this_site(browser: TestClient) -> None:
    """The language form returns to the page it was on when that page can be shown
    again, and never to another origin."""
    csrf = csrf_of(browser.get("/").text)
    for back, expected in (
        ("/results", "/results"),
        ("//evil.example/", "/"),
        ("https://e.x", "/"),
    ):
        answer = browser.post(
            "/language", data={"csrf": csrf, "lang": "en", "back": back}, follow_redirects=False
        )
        assert answer.headers["location"] == expected
    assert browser.get("/").text.count('lang="en"') >= 1


def test_actions_are_named_in_post_bodies_only(app: PortalApp) -> None:
    """No route takes a handle, ticket id or number in its path: actions are POSTs."""
    paths = {getattr(route, "path", "") for route in app._app.routes}
    assert all("{" not in path for path in paths)


def test_an_unknown_action_key_is_refused_in_plain_words(browser: TestClient) -> None:
    """A made-up action key gets 400 and a plain message, and no gateway call."""
    sign_in(browser)
    csrf = csrf_of(browser.get("/").text)
    answer = browser.post("/confirm", data={"csrf": csrf, "action": "not-a-key"})
    assert answer.status_code == 400
    assert "这个操作已经失效" in answer.text


def config(**portal: Any) -> dict[str, Any]:
    return {
        "portal": portal,
        "gateway": {"address": "127.0.0.1:1", "ca": "ca.pem", "cert": "c.pem", "key": "k.pem"},
    }


DEV = {
    "key": "identity.key.pem",
    "idn_key": "idn.key",
    "issuer": "https://id.test",
    "citizens": [{"sub": "c-1", "name": "A", "document": "X"}],
}
OIDC = {
    "metadata_url": "https://id.test/.well-known/openid-configuration",
    "client_id": "portal",
    "redirect_uri": "https://portal.test/signin/callback",
}


def test_production_mode_refuses_the_development_identity_step() -> None:
    """With [dev_identity], production mode (the default) does not start."""
    data = {**config(tls_terminated_by_proxy=True), "oidc": OIDC, "dev_identity": DEV}
    with pytest.raises(ConfigError, match="cannot be turned on in production mode"):
        parse_config(data, base_dir=".")
    data = {**config(mode="production", tls_terminated_by_proxy=True), "dev_identity": DEV}
    with pytest.raises(ConfigError, match="production mode"):
        parse_config(data, base_dir=".")


def test_production_mode_needs_oidc_and_tls() -> None:
    """Production needs an identity service to sign in with, and TLS in front."""
    with pytest.raises(ConfigError, match=r"needs \[oidc\]"):
        parse_config(config(tls_terminated_by_proxy=True), base_dir=".")
    with pytest.raises(ConfigError, match="needs TLS"):
        parse_config({**config(), "oidc": OIDC}, base_dir=".")
    ok = parse_config({**config(tls_terminated_by_proxy=True), "oidc": OIDC}, base_dir=".")
    assert ok.production
    assert ok.dev_identity is None


def test_bad_keys_are_named() -> None:
    """A misspelt key, a bad mode or a bad listen address is named in the error."""
    with pytest.raises(ConfigError, match="did you mean 'session_idle_s'"):
        parse_config({**config(session_idel_s=5), "oidc": OIDC}, base_dir=".")
    with pytest.raises(ConfigError, match=r"portal\.mode"):
        parse_config({**config(mode="demo"), "dev_identity": DEV}, base_dir=".")
    with pytest.raises(ConfigError, match=r"portal\.listen"):
        parse_config(
            {**config(mode="development", listen="8080"), "dev_identity": DEV}, base_dir="."
        )


def test_the_public_exports() -> None:
    """onecert.portal exports exactly these names, each importable."""
    assert set(onecert.portal.__all__) == {
        "ASSERTION_TYP", "CSP", "SESSION_COOKIE", "AssertionSource", "Citizen", "ConfigError",
        "DevAssertions", "DevCitizen", "DevIdentityConfig", "GatewayTarget", "Identity",
        "OIDCConfig", "PortalApp", "PortalConfig", "SignInRequiredError",
        "TokenExchangeAssertions", "build_app", "load_config", "parse_config", "serve",
    }  # fmt: skip
    assert all(hasattr(onecert.portal, name) for name in onecert.portal.__all__)


def test_anonymous_visits_cannot_fill_the_session_store(clock: Clock) -> None:
    """Past its limit the store drops the longest-idle anonymous sessions and keeps
    every signed-in citizen's."""
    store = SessionStore(idle_s=60, max_s=600, clock=clock, limit=10)
    citizen = store.new()
    citizen.citizen = Citizen(sub="c-1")
    for _ in range(50):
        clock.now += 0.1
        store.new()
    assert len(store) <= 10
    assert store.get(citizen.id)[0] is citizen


def test_an_unreachable_gateway_is_said_in_plain_words(
    app: PortalApp, browser: TestClient, keys: DevKeys
) -> None:
    """When the gateway cannot be reached the lookup ends with a plain sentence, no
    status code, and the citizen stays signed in to try again."""

    async def unreachable() -> GatewayClient:
        # Made on the app's own loop; nothing listens on port 9.
        return GatewayClient(
            "127.0.0.1:9",
            tls=ClientTLS(keys.ca_cert, keys.client_cert("portal"), keys.client_key("portal")),
        )

    assert browser.portal is not None
    app.client = browser.portal.call(unreachable)
    app.lookup_timeout_s = 2
    sign_in(browser)
    started = browser.post("/lookup", data={"csrf": csrf_of(browser.get("/").text)})
    assert started.url.path == "/results"
    page = started.text
    for _ in range(100):
        if "重新查询" in page:
            break
        browser.portal.call(asyncio.sleep, 0.1)
        page = browser.get("/results").text
    assert "这次查询没有完成：查询服务暂时不可用。请过几分钟再试。" in page
    assert "UNAVAILABLE" not in page
    assert "DEADLINE" not in page
    assert "退出</button>" in page
