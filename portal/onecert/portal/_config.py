"""The portal's configuration (``portal.toml``), every key checked at start.

Production is the default mode. It needs an OpenID Connect identity service
(``[oidc]``) and TLS in front of the browser (``[portal.tls]`` or a proxy
that terminates it, ``tls_terminated_by_proxy = true``), and it refuses to
start when the development identity step (``[dev_identity]``) is present.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onecert.sdk._tomlconfig import ConfigError, Table, load_toml, setting

__all__ = [
    "ConfigError",
    "DevCitizen",
    "DevIdentityConfig",
    "GatewayTarget",
    "OIDCConfig",
    "PortalConfig",
    "load_config",
    "parse_config",
]

_TABLES = ("portal", "gateway", "oidc", "dev_identity")
_MODES = ("production", "development")
# The keys of [portal] that are fields of PortalConfig as they are.
_PORTAL_KEYS = (
    "mode",
    "listen",
    "tls_terminated_by_proxy",
    "session_idle_s",
    "session_max_s",
    "log_json",
)


@dataclass(frozen=True)
class GatewayTarget:
    """Where the gateway is and the portal's mutual TLS credentials for it."""

    address: str
    ca: Path
    cert: Path
    key: Path
    lookup_timeout_s: float = setting(30.0, seconds=True)
    call_timeout_s: float = setting(10.0, seconds=True)


@dataclass(frozen=True)
class DevCitizen:
    """A made-up citizen the development identity step can sign in as."""

    sub: str
    name: str
    document: str


@dataclass(frozen=True)
class DevIdentityConfig:
    """The development identity step: signs assertions itself, with a dev key."""

    key: Path
    idn_key: Path
    issuer: str
    citizens: tuple[DevCitizen, ...]
    audience: str = "onecert-gateway"
    acr: str = "substantial"


@dataclass(frozen=True)
class OIDCConfig:
    """The identity service, for production sign-in and assertions.

    ``metadata_url`` is its OpenID Connect discovery document. The token
    endpoint found there must also accept the RFC 8693 token exchange that
    turns the citizen's access token into a gateway assertion (see
    docs/portal.md).
    """

    metadata_url: str
    client_id: str
    redirect_uri: str
    client_secret_file: Path | None = None
    scope: str = "openid"
    assertion_audience: str = "onecert-gateway"
    # A token type URN (RFC 8693), not a secret.
    assertion_token_type: str = "urn:onecert:params:oauth:token-type:identity-assertion"  # noqa: S105
    ca_file: Path | None = None


@dataclass(frozen=True)
class PortalConfig:
    """Everything ``onecert portal serve`` needs.

    Attributes:
        mode: "production" (the default) or "development".
        listen: ``host:port`` to serve HTTP on (port 0: any free port).
        tls_cert, tls_key: the portal's own TLS certificate, if it terminates TLS.
        tls_terminated_by_proxy: a reverse proxy in front terminates TLS.
        session_idle_s: a session ends after this long without a request.
        session_max_s: a session ends this long after sign-in, whatever happens.
        log_json: one JSON object per log line.
    """

    gateway: GatewayTarget
    mode: str = setting("production", choices=_MODES)
    listen: str = "127.0.0.1:8080"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_terminated_by_proxy: bool = False
    session_idle_s: float = setting(900.0, seconds=True)
    session_max_s: float = setting(3600.0, seconds=True)
    log_json: bool = False
    oidc: OIDCConfig | None = None
    dev_identity: DevIdentityConfig | None = None

    @property
    def production(self) -> bool:
        return self.mode == "production"


def load_config(path: str | Path) -> PortalConfig:
    """Read and validate a ``portal.toml``; relative paths are resolved against its folder.

    Raises:
        ConfigError: unreadable file, invalid TOML, or an invalid key.
    """
    return load_toml(path, lambda data, base: parse_config(data, base_dir=base))


def parse_config(data: Mapping[str, Any], *, base_dir: str | Path) -> PortalConfig:
    """Validate a parsed TOML document (see :func:`load_config`)."""
    root = Table(data, "", Path(base_dir))
    root.refuse_unknown(_TABLES)
    portal = root.table("portal", required=True)
    general = portal.read_fields(PortalConfig, _PORTAL_KEYS)
    host, sep, port = general["listen"].rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError("portal.listen must be host:port")
    if general["session_idle_s"] > general["session_max_s"]:
        raise ConfigError("portal.session_idle_s must not exceed portal.session_max_s")
    tls = portal.optional_table("tls")
    if tls is not None:
        general["tls_cert"], general["tls_key"] = tls.path("cert"), tls.path("key")
        tls.finish()
    portal.finish()
    gateway = root.table("gateway", required=True).read_whole(GatewayTarget)
    oidc = _oidc(root.optional_table("oidc"))
    dev = _dev_identity(root.optional_table("dev_identity"))
    root.finish()
    config = PortalConfig(gateway=gateway, oidc=oidc, dev_identity=dev, **general)
    _check_mode(config)
    return config


def _check_mode(config: PortalConfig) -> None:
    oidc, dev = config.oidc, config.dev_identity
    if config.production:
        if dev is not None:
            raise ConfigError(
                "[dev_identity] signs citizens in without the identity service: it cannot "
                'be turned on in production mode (set portal.mode = "development")'
            )
        if oidc is None:
            raise ConfigError("production mode needs [oidc], the identity service to sign in with")
        if config.tls_cert is None and not config.tls_terminated_by_proxy:
            raise ConfigError(
                "production mode needs TLS: give [portal.tls] cert and key, or set "
                "portal.tls_terminated_by_proxy = true behind a proxy that terminates it"
            )
    elif oidc is None and dev is None:
        raise ConfigError("give [oidc] or [dev_identity]: citizens need a way to sign in")


def _oidc(table: Table | None) -> OIDCConfig | None:
    if table is None:
        return None
    config = table.read_whole(OIDCConfig)
    if "openid" not in config.scope.split():
        raise ConfigError("oidc.scope must include openid")
    return config


def _dev_identity(table: Table | None) -> DevIdentityConfig | None:
    if table is None:
        return None
    citizens = tuple(
        row.read_whole(DevCitizen)
        for row in table.tables("citizens", required=True, what="citizen")
    )
    subs = [c.sub for c in citizens]
    if len(set(subs)) != len(subs):
        raise ConfigError("dev_identity.citizens: each sub must be different")
    return table.read_whole(DevIdentityConfig, citizens=citizens)
