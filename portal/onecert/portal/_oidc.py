"""Production sign-in: OpenID Connect, authorization code flow with PKCE (Authlib).

The portal is a confidential client of the identity service. It sends the
citizen there with ``state``, ``nonce`` and an S256 PKCE challenge (kept in
the server-side session), and on return exchanges the code with the
verifier, checks the ID token (signature from the service's JWKS, ``iss``,
``aud``, ``nonce``, expiry) and keeps the citizen's ``sub`` and access token.
"""

from __future__ import annotations

import ssl
from typing import Any

from authlib.integrations.starlette_client import OAuth

from onecert.portal._config import OIDCConfig

__all__ = ["oidc_client", "tls_verify"]


def tls_verify(config: OIDCConfig) -> ssl.SSLContext | bool:
    """How to check the identity service's certificate: its own CA, or the system's."""
    if config.ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(config.ca_file))


async def oidc_client(config: OIDCConfig, secret: str | None) -> Any:
    """An Authlib Starlette client for the identity service, its metadata loaded.

    Args:
        config: the ``[oidc]`` table.
        secret: the portal's client secret (HTTP Basic at the token endpoint).

    Returns the client with one more attribute, ``portal_redirect_uri``.
    """
    oauth = OAuth()
    client = oauth.register(
        "identity",
        server_metadata_url=config.metadata_url,
        client_id=config.client_id,
        client_secret=secret,
        client_kwargs={
            "scope": config.scope,
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "client_secret_basic" if secret else "none",
            "verify": tls_verify(config),
            "timeout": 10.0,
        },
    )
    # Fail at start, not at the first citizen's sign-in, if the service is unreachable.
    await client.load_server_metadata()
    client.portal_redirect_uri = config.redirect_uri
    return client
