"""The citizen's portal: a reference web app over the gateway (``onecert[portal]``).

``onecert portal serve --config portal.toml`` serves it. Citizens sign in
through the identity service (OpenID Connect, or in development a built-in
identity step over made-up citizens), see their lookup stream in, unbind
with a confirmation and follow each receipt. See docs/portal.md.
"""

from onecert.portal._app import CSP, SESSION_COOKIE, Identity, PortalApp
from onecert.portal._config import (
    ConfigError,
    DevCitizen,
    DevIdentityConfig,
    GatewayTarget,
    OIDCConfig,
    PortalConfig,
    load_config,
    parse_config,
)
from onecert.portal._identity import (
    ASSERTION_TYP,
    AssertionSource,
    Citizen,
    DevAssertions,
    SignInRequiredError,
    TokenExchangeAssertions,
)
from onecert.portal._serve import build_app, serve

__all__ = [
    "ASSERTION_TYP",
    "CSP",
    "SESSION_COOKIE",
    "AssertionSource",
    "Citizen",
    "ConfigError",
    "DevAssertions",
    "DevCitizen",
    "DevIdentityConfig",
    "GatewayTarget",
    "Identity",
    "OIDCConfig",
    "PortalApp",
    "PortalConfig",
    "SignInRequiredError",
    "TokenExchangeAssertions",
    "build_app",
    "load_config",
    "parse_config",
    "serve",
]
