"""Warrants: the gateway's signed permission for one call about one number.

A provider (or carrier) answers only calls that carry a warrant signed by
the gateway, addressed to it (``aud``), and naming the SHA-256 of exactly
the msisdn (or idn) in the request (``target_sha256``), for the one purpose
that RPC allows. The rules are W-1 to W-18 of docs/contract.md.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from onecert.sdk._jwt import (
    GatewayTokenVerifier,
    TokenError,
    TokenIssuer,
)
from onecert.sdk._keys import SigningKey
from onecert.sdk._msisdn import sha256_hex

WARRANT_TYP = "onecert-warrant+jwt"
# A warrant lives long enough for one call and its retries, never longer (W-11).
MAX_WARRANT_LIFETIME = 60.0
PURPOSE_LOOKUP = "lookup"
PURPOSE_UNBIND = "unbind"
# The one purpose each RPC requires (W-13): a lookup warrant is never an
# unbind, and an unbind warrant is never a lookup.
RPC_PURPOSES = MappingProxyType(
    {
        "onecert.v1.BindingProvider/ListBindings": PURPOSE_LOOKUP,
        "onecert.v1.BindingProvider/Unbind": PURPOSE_UNBIND,
        "onecert.v1.NumberRegistry/ListNumbers": PURPOSE_LOOKUP,
    }
)
PURPOSES = frozenset(RPC_PURPOSES.values())


class WarrantError(TokenError):
    """A warrant was refused; ``message`` is safe to return to the caller."""


@dataclass(frozen=True)
class Warrant:
    """A verified warrant.

    Attributes:
        issuer: the gateway id (``iss``).
        audience: the provider or carrier id it is addressed to.
        purpose: why the gateway asks ("lookup" or "unbind").
        query_id: the gateway's query or ticket id, for correlating logs.
        target_sha256: lowercase hex SHA-256 of the msisdn or idn it covers.
        issued_at: seconds since the epoch.
        expires_at: seconds since the epoch.
        jti: the warrant's unique id.
    """

    issuer: str
    audience: str
    purpose: str
    query_id: str
    target_sha256: str
    issued_at: float
    expires_at: float
    jti: str


class WarrantIssuer(TokenIssuer):
    """Signs warrants (the gateway's side; also the conformance kit's and tests')."""

    def __init__(self, *, key: SigningKey, issuer: str, lifetime: float = 30.0) -> None:
        if not 0 < lifetime <= MAX_WARRANT_LIFETIME:
            raise ValueError(f"warrant lifetime must be in (0, {MAX_WARRANT_LIFETIME:.0f}] s")
        super().__init__(key=key, issuer=issuer)
        self._lifetime = lifetime

    def issue(
        self,
        *,
        audience: str,
        target: str,
        purpose: str = "lookup",
        query_id: str = "",
        now: float | None = None,
        lifetime: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A signed warrant for one call about ``target`` (an msisdn or idn)."""
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": audience,
            "iat": issued,
            "exp": issued + int(self._lifetime if lifetime is None else lifetime),
            "jti": secrets.token_urlsafe(12),
            "purpose": purpose,
            "qid": query_id or secrets.token_hex(8),
            "target_sha256": sha256_hex(target),
        }
        if extra:
            claims.update(extra)
        return self._key.sign(claims, typ=WARRANT_TYP)


class WarrantVerifier(GatewayTokenVerifier):
    """Checks warrants on the provider's (or carrier's) side.

    Args:
        keys: the gateway's public keys.
        issuer: the gateway id the warrant must name (``iss``).
        audience: your provider or carrier id (``aud``).
        leeway: seconds of clock skew allowed, at most :data:`MAX_CLOCK_SKEW`.
    """

    kind = "warrant"
    error = WarrantError
    refused = "warrant refused"

    def verify(self, token: str, *, target: str, now: float | None = None) -> Warrant:
        """Verify ``token`` for a call about ``target``; raise :class:`WarrantError`."""
        claims = self._claims(
            token,
            typ=WARRANT_TYP,
            max_lifetime=MAX_WARRANT_LIFETIME,
            required=("iss", "aud", "iat", "exp", "jti", "purpose", "target_sha256"),
            now=now,
        )
        purpose = claims.get("purpose")
        # Checked as a str first: an unhashable value (a list) cannot be looked up.
        if not isinstance(purpose, str) or purpose not in PURPOSES:
            raise WarrantError("purpose", "warrant refused: unknown purpose")
        if claims.get("target_sha256") != sha256_hex(target):
            raise WarrantError("target", "warrant refused: it does not cover this number")
        return Warrant(
            issuer=str(claims["iss"]),
            audience=self._audience,
            purpose=str(claims["purpose"]),
            query_id=str(claims.get("qid", "")),
            target_sha256=str(claims["target_sha256"]),
            issued_at=float(claims["iat"]),
            expires_at=float(claims["exp"]),
            jti=str(claims["jti"]),
        )
