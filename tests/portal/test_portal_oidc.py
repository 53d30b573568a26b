"""Production sign-in: the portal in production mode signs the citizen in by OpenID
Connect (code flow with PKCE) at an identity service, and gets a fresh gateway
assertion from it by token exchange (RFC 8693) for every gateway call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

WAIT_MS = 30_000


def test_sign_in_by_oidc_with_pkce_then_one_exchange_per_gateway_call(
    production: Any, browser: Any
) -> None:
    """The citizen signs in at the identity service (PKCE verifier checked, nonce in the
    ID token), each lookup costs exactly one fresh token exchange, and once the
    service refuses the exchange the portal signs her out and says why."""
    service, url = production
    ctx = browser.new_context(ignore_https_errors=True)
    page = ctx.new_page()
    page.goto(url + "/")
    assert page.locator(".dev-banner").count() == 0
    page.click("#sign-in")
    page.click("#continue")
    page.wait_for_url(url + "/")
    assert service.pkce_checked == 1
    assert page.locator("#sign-out").count() == 1

    page.click("#start-lookup")
    page.wait_for_selector("#look-again", timeout=WAIT_MS)
    assert "Coinpurse Pay" in page.inner_text("#left-behind")
    assert service.exchanges == 1
    page.click("#look-again")
    page.wait_for_selector("#look-again", timeout=WAIT_MS)
    assert service.exchanges == 2

    # The identity service ends her sign-in: the next lookup gets no assertion, and
    # the portal ends the session and asks her to sign in again.
    service.access_tokens.clear()
    page.click("#look-again")
    page.wait_for_url(url + "/signin", timeout=WAIT_MS)
    assert "无法确认您的身份。请重新登录。" in page.inner_text("main")
    assert service.exchanges == 2
    page.goto(url + "/receipts")
    page.wait_for_url(url + "/signin")
    ctx.close()


def test_a_callback_with_a_forged_state_signs_no_one_in(production: Any, browser: Any) -> None:
    """A callback whose state the portal never issued is refused: back to sign-in."""
    _, url = production
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(url + "/signin/callback?code=stolen&state=forged")
    page.wait_for_url(url + "/signin")
    assert "登录没有完成" in page.inner_text("main")
    page.goto(url + "/")
    assert page.locator("#sign-out").count() == 0
    ctx.close()


def test_production_mode_refuses_to_start_with_the_dev_identity_step(
    tmp_path: Path, run_portal: Any
) -> None:
    """`onecert portal serve` exits 2, saying why, when production mode meets [dev_identity]."""
    config = tmp_path / "portal.toml"
    config.write_text(
        """
[portal]
tls_terminated_by_proxy = true
[gateway]
address = "127.0.0.1:1"
ca = "ca.pem"
cert = "c.pem"
key = "k.pem"
[oidc]
metadata_url = "https://id.test/.well-known/openid-configuration"
client_id = "portal"
redirect_uri = "https://portal.test/signin/callback"
[dev_identity]
key = "identity.key.pem"
idn_key = "idn.key"
issuer = "https://id.test"
[[dev_identity.citizens]]
sub = "c-1"
name = "A"
document = "X"
""",
        encoding="utf-8",
    )
    run = run_portal(config)
    assert run.returncode == 2
    assert "cannot be turned on in production mode" in run.stderr
