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

from onecert.sdk._tomlconfig import ConfigError, Table, load_toml

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


@dataclass(frozen=True)
class GatewayTarget:
    """Where the gateway is and the portal's mutual TLS credentials for it."""

    address: str
    ca: Path
    cert: Path
    key: Path
    lookup_timeout_s: float = 30.0
    call_timeout_s: float = 10.0


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
    audience: str
    acr: str
    citizens: tuple[DevCitizen, ...]


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
    client_secret_file: Path | None
    redirect_uri: str
    scope: str
    assertion_audience: str
    assertion_token_type: str
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

    mode: str
    listen: str
    gateway: GatewayTarget
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_terminated_by_proxy: bool = False
    session_idle_s: float = 900.0
    session_max_s: float = 3600.0
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
    mode = portal.string("mode", "production")
    if mode not in _MODES:
        raise ConfigError(f"portal.mode must be one of {', '.join(_MODES)}")
    listen = portal.string("listen", "127.0.0.1:8080")
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError("portal.listen must be host:port")
    tls = portal.optional_table("tls")
    tls_cert = tls_key = None
    if tls is not None:
        tls_cert, tls_key = tls.path("cert"), tls.path("key")
        tls.finish()
    proxy = portal.boolean("tls_terminated_by_proxy", False)
    idle = portal.seconds("session_idle_s", 900.0)
    longest = portal.seconds("session_max_s", 3600.0)
    if idle > longest:
        raise ConfigError("portal.session_idle_s must not exceed portal.session_max_s")
    log_json = portal.boolean("log_json", False)
    portal.finish()

    gw = root.table("gateway", required=True)
    gateway = GatewayTarget(
        address=gw.string("address"),
        ca=gw.path("ca"),
        cert=gw.path("cert"),
        key=gw.path("key"),
        lookup_timeout_s=gw.seconds("lookup_timeout_s", 30.0),
        call_timeout_s=gw.seconds("call_timeout_s", 10.0),
    )
    gw.finish()

    oidc = _oidc(root.optional_table("oidc"))
    dev = _dev_identity(root.optional_table("dev_identity"))
    root.finish()

    if mode == "production":
        if dev is not None:
            raise ConfigError(
                "[dev_identity] signs citizens in without the identity service: it cannot "
                'be turned on in production mode (set portal.mode = "development")'
            )
        if oidc is None:
            raise ConfigError("production mode needs [oidc], the identity service to sign in with")
        if tls is None and not proxy:
            raise ConfigError(
                "production mode needs TLS: give [portal.tls] cert and key, or set "
                "portal.tls_terminated_by_proxy = true behind a proxy that terminates it"
            )
    elif oidc is None and dev is None:
        raise ConfigError("give [oidc] or [dev_identity]: citizens need a way to sign in")
    return PortalConfig(
        mode=mode,
        listen=listen,
        gateway=gateway,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_terminated_by_proxy=proxy,
        session_idle_s=idle,
        session_max_s=longest,
        log_json=log_json,
        oidc=oidc,
        dev_identity=dev,
    )


def _oidc(table: Table | None) -> OIDCConfig | None:
    if table is None:
        return None
    config = OIDCConfig(
        metadata_url=table.string("metadata_url"),
        client_id=table.string("client_id"),
        client_secret_file=table.path("client_secret_file", None),
        redirect_uri=table.string("redirect_uri"),
        scope=table.string("scope", "openid"),
        assertion_audience=table.string("assertion_audience", "onecert-gateway"),
        assertion_token_type=table.string(
            "assertion_token_type", "urn:onecert:params:oauth:token-type:identity-assertion"
        ),
        ca_file=table.path("ca_file", None),
    )
    table.finish()
    if "openid" not in config.scope.split():
        raise ConfigError("oidc.scope must include openid")
    return config


def _dev_identity(table: Table | None) -> DevIdentityConfig | None:
    if table is None:
        return None
    citizens = []
    for row in table.tables("citizens", required=True, what="citizen"):
        citizens.append(
            DevCitizen(
                sub=row.string("sub"), name=row.string("name"), document=row.string("document")
            )
        )
        row.finish()
    subs = [c.sub for c in citizens]
    if len(set(subs)) != len(subs):
        raise ConfigError("dev_identity.citizens: each sub must be different")
    config = DevIdentityConfig(
        key=table.path("key"),
        idn_key=table.path("idn_key"),
        issuer=table.string("issuer"),
        audience=table.string("audience", "onecert-gateway"),
        acr=table.string("acr", "substantial"),
        citizens=tuple(citizens),
    )
    table.finish()
    return config
