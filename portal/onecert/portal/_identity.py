"""Who the citizen is, and where each call's identity assertion comes from.

The gateway accepts an identity assertion once (it remembers every ``jti``),
so the portal asks its :class:`AssertionSource` for a fresh one before every
gateway call. In production the identity service mints them
(:class:`TokenExchangeAssertions`, RFC 8693); in development the portal signs
them itself with the development identity key (:class:`DevAssertions`).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx2

from onecert.sdk._idn import compute_idn
from onecert.sdk._keys import SigningKey, load_hex_key

__all__ = [
    "ASSERTION_TYP",
    "AssertionSource",
    "Citizen",
    "DevAssertions",
    "SignInRequiredError",
    "TokenExchangeAssertions",
]

# The JOSE "typ" the gateway requires of an identity assertion.
ASSERTION_TYP = "onecert-id+jwt"
# Short: an assertion is used at once, for one call.
_DEV_LIFETIME_S = 60
_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN, not a secret
_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN, not a secret


@dataclass(frozen=True)
class Citizen:
    """A signed-in citizen, as the portal keeps them in the session.

    Attributes:
        sub: the identity service's opaque id for them.
        access_token: what the identity service gave the portal at sign-in,
            exchanged for assertions (empty for the development step).
        expires_at: when ``access_token`` stops working (epoch seconds; 0: never).
    """

    sub: str
    access_token: str = field(default="", repr=False)
    expires_at: float = 0.0


class SignInRequiredError(Exception):
    """No assertion could be had for the citizen: they must sign in again."""


class AssertionSource(Protocol):
    """Gives a fresh identity assertion (a JWT the gateway accepts once) per call."""

    async def assertion(self, citizen: Citizen) -> str:
        """A new assertion for ``citizen``.

        Raises:
            SignInRequiredError: the identity service refused (the citizen's
                sign-in ended, or was revoked).
        """
        ...


class DevAssertions:
    """The development identity step: signs assertions with the dev identity key.

    Stands in for the identity service for made-up citizens only; the portal's
    configuration refuses it in production mode.

    Args:
        key: the development identity key (``keys/identity.key.pem``).
        idn_key: the idn key shared with the carriers (``keys/idn.key``).
        issuer: the ``iss`` the gateway trusts for ``key``.
        audience: the gateway's id.
        acr: the assurance level to claim.
        documents: each citizen's ``sub`` and made-up document number.
    """

    def __init__(
        self,
        *,
        key: Path,
        idn_key: Path,
        issuer: str,
        audience: str,
        acr: str,
        documents: dict[str, str],
    ) -> None:
        self._key = SigningKey.load(key)
        secret = load_hex_key(idn_key, what="idn key")
        self._idns = {sub: compute_idn(secret, doc) for sub, doc in documents.items()}
        self._issuer = issuer
        self._audience = audience
        self._acr = acr

    def knows(self, sub: str) -> bool:
        """Whether ``sub`` is one of the configured made-up citizens."""
        return sub in self._idns

    async def assertion(self, citizen: Citizen) -> str:
        idn = self._idns.get(citizen.sub)
        if idn is None:
            raise SignInRequiredError("not a development citizen")
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "sub": citizen.sub,
            "aud": self._audience,
            "iat": now,
            "exp": now + _DEV_LIFETIME_S,
            "jti": secrets.token_urlsafe(16),
            "idn": idn,
            "acr": self._acr,
        }
        return self._key.sign(claims, typ=ASSERTION_TYP)


class TokenExchangeAssertions:
    """Assertions from the identity service by OAuth 2.0 token exchange (RFC 8693).

    For each call the portal posts the citizen's access token to the identity
    service's token endpoint and receives a new assertion for the gateway:
    ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``,
    ``subject_token=<access token>``, ``subject_token_type=...:access_token``,
    ``requested_token_type=<assertion_token_type>``, ``audience=<gateway id>``;
    the portal authenticates as its OAuth client. The answer's
    ``access_token`` is the assertion and ``issued_token_type`` must equal
    ``assertion_token_type``.

    Args:
        token_endpoint: the identity service's token endpoint.
        client_id: the portal's client id there.
        client_secret: the portal's client secret (HTTP Basic), if it has one.
        audience: the gateway's id, the assertion's ``aud``.
        assertion_token_type: the token type URI the identity service uses
            for gateway assertions.
        http: the HTTP client to use (one per process, reused).
    """

    def __init__(
        self,
        *,
        token_endpoint: str,
        client_id: str,
        client_secret: str | None,
        audience: str,
        assertion_token_type: str,
        http: httpx2.AsyncClient,
    ) -> None:
        self._endpoint = token_endpoint
        self._auth = httpx2.BasicAuth(client_id, client_secret) if client_secret else None
        self._client_id = client_id
        self._audience = audience
        self._type = assertion_token_type
        self._http = http

    async def assertion(self, citizen: Citizen) -> str:
        if not citizen.access_token:
            raise SignInRequiredError("no access token: sign in again")
        if citizen.expires_at and citizen.expires_at <= time.time():
            raise SignInRequiredError("the sign-in has expired")
        form = {
            "grant_type": _TOKEN_EXCHANGE,
            "subject_token": citizen.access_token,
            "subject_token_type": _ACCESS_TOKEN,
            "requested_token_type": self._type,
            "audience": self._audience,
        }
        if self._auth is None:
            form["client_id"] = self._client_id
        try:
            response = await self._http.post(
                self._endpoint,
                data=form,
                auth=self._auth if self._auth is not None else httpx2.USE_CLIENT_DEFAULT,
                headers={"Accept": "application/json"},
            )
        except httpx2.HTTPError as exc:
            raise SignInRequiredError(
                f"identity service unreachable: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise SignInRequiredError(
                f"identity service refused the exchange: {response.status_code}"
            )
        body: Any = response.json()
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or body.get("issued_token_type") != self._type:
            raise SignInRequiredError("identity service answered without an assertion")
        return token
