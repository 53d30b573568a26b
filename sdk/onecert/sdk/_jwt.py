"""Strict JWT verification shared by warrants, assertions and SETs (RFC 8725).

The token never chooses how it is checked: the key is found by ``kid`` in a
configured key set, and only that key's pinned algorithm is accepted. Header
members that would fetch or embed keys (``jku``, ``x5u``, ``jwk``, ``x5c``)
are ignored; an unknown ``crit`` header is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt

from onecert.sdk._keys import KeySet, SigningKey, VerificationKey

# A token larger than this is refused before any parsing (a warrant or an
# assertion is a few hundred bytes).
MAX_TOKEN_BYTES = 8192
# The most clock skew a verifier may allow on exp, nbf and iat (W-9, W-10).
MAX_CLOCK_SKEW = 10.0


class TokenError(Exception):
    """A token was refused. ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TokenIssuer:
    """What token issuers share: the signing key and the ``iss`` they name (the
    gateway's warrants and SETs, and the dev identity service's assertions)."""

    def __init__(self, *, key: SigningKey, issuer: str) -> None:
        self._key = key
        self._issuer = issuer

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def key(self) -> SigningKey:
        """The signing key (the conformance gate signs its own test warrants with it)."""
        return self._key


class GatewayTokenVerifier:
    """What the verifiers of the gateway's tokens share: its keys, the ``iss`` and
    ``aud`` a token must name, and the clock skew allowed (at most
    :data:`MAX_CLOCK_SKEW`). ``kind`` names the token in messages."""

    kind = "token"

    def __init__(self, *, keys: KeySet, issuer: str, audience: str, leeway: float = 5.0) -> None:
        if not keys:
            raise ValueError(f"a {self.kind} verifier needs at least one gateway key")
        if not 0 <= leeway <= MAX_CLOCK_SKEW:
            raise ValueError(f"leeway must be in [0, {MAX_CLOCK_SKEW:.0f}] s")
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway

    @property
    def audience(self) -> str:
        return self._audience

    #: What a refusal is raised as, and the words it starts with.
    error: type[TokenError] = TokenError
    refused = "token refused"

    def _claims(
        self,
        token: str,
        *,
        typ: str,
        max_lifetime: float | None,
        required: Iterable[str],
        now: float | None,
    ) -> dict[str, Any]:
        """``token``'s claims, checked against the gateway's keys, the ``iss`` and ``aud``
        and the clock (:func:`verify_jwt`); a refusal is raised as :attr:`error`."""
        try:
            return verify_jwt(
                token,
                keys=self._keys,
                typ=typ,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                max_lifetime=max_lifetime,
                required=required,
                now=now,
            )
        except TokenError as exc:
            raise self.error(exc.reason, f"{self.refused}: {exc.message}") from exc


def verify_jwt(
    token: str,
    *,
    keys: KeySet,
    typ: str,
    issuer: str,
    audience: str,
    leeway: float = 5.0,
    max_lifetime: float | None,
    required: Iterable[str] = ("iss", "aud", "iat", "exp", "jti"),
    now: float | None = None,
) -> dict[str, Any]:
    """Verify ``token`` and return its claims, or raise :class:`TokenError`.

    Args:
        token: a JWS in compact form.
        keys: the trusted keys by ``kid``, each with its pinned algorithm.
        typ: the exact ``typ`` header required (explicit typing, RFC 8725 3.11).
        issuer: the exact ``iss`` required.
        audience: the ``aud`` that must be present (string or in the list).
        leeway: seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``.
        max_lifetime: if set, ``exp - iat`` may not exceed it (seconds).
        required: claims that must be present.
        now: the current time (seconds since the epoch); for tests.
    """
    key = _trusted_key(token, keys=keys, typ=typ)
    current = time.time() if now is None else now
    claims = _decode(token, key, audience=audience, issuer=issuer, leeway=leeway, required=required)
    # Exact comparison on top of PyJWT's (which accepts lists and sequences).
    if claims.get("iss") != issuer:
        raise TokenError("iss", "token issuer is not trusted")
    _check_times(claims, current=current, leeway=leeway, max_lifetime=max_lifetime)
    return claims


def _trusted_key(token: str, *, keys: KeySet, typ: str) -> VerificationKey:
    """The key ``token``'s header names, after checking the header alone."""
    if not token:
        raise TokenError("missing", "no token")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("oversized", f"token larger than {MAX_TOKEN_BYTES} bytes")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        # PyJWT itself refuses a `crit` it does not implement (RFC 7515 4.1.11).
        if "crit" in str(exc).lower():
            raise TokenError("crit", "token has critical header parameters not understood") from exc
        raise TokenError("malformed", "malformed token") from exc
    except (RecursionError, ValueError, TypeError) as exc:
        # Pathological JSON (deep nesting, odd types) is malformed, never a crash.
        raise TokenError("malformed", "malformed token") from exc
    if header.get("typ") != typ:
        raise TokenError("typ", f"token type must be {typ!r}")
    if "crit" in header:
        raise TokenError("crit", "token has critical header parameters not understood")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("kid", "token has no key id (kid)")
    key = keys.get(kid)
    if key is None:
        raise TokenError("kid", "token signed with an unknown key id")
    if header.get("alg") != key.alg:
        raise TokenError("alg", f"key {kid!r} only verifies {key.alg}")
    return key


def _decode(
    token: str,
    key: VerificationKey,
    *,
    audience: str,
    issuer: str,
    leeway: float,
    required: Iterable[str],
) -> dict[str, Any]:
    """The claims of ``token`` once its signature, ``aud``, ``iss`` and required claims hold.

    Times are checked by :func:`_check_times`, which is stricter than PyJWT.
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[key.alg],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={
                "require": list(required),
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidAudienceError as exc:
        raise TokenError("aud", "token is meant for another audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenError("iss", "token issuer is not trusted") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError("claims", f"token lacks the {exc.claim!r} claim") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError("signature", "token signature does not verify") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("malformed", f"token refused: {exc}") from exc
    except (RecursionError, ValueError, TypeError) as exc:
        raise TokenError("malformed", "malformed token payload") from exc
    return claims


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError("claims", f"claim {name!r} must be a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        raise TokenError("claims", f"claim {name!r} is out of range") from None
    # NaN compares false with everything: an "exp" of NaN would never expire.
    if not math.isfinite(number):
        raise TokenError("claims", f"claim {name!r} must be a finite number")
    return number


def _check_times(
    claims: Mapping[str, Any], *, current: float, leeway: float, max_lifetime: float | None
) -> None:
    exp = _number(claims, "exp")
    nbf = _number(claims, "nbf")
    iat = _number(claims, "iat")
    if exp is not None and current > exp + leeway:
        raise TokenError("expired", "token has expired")
    if nbf is not None and current + leeway < nbf:
        raise TokenError("nbf", "token is not valid yet (nbf)")
    if iat is not None and current + leeway < iat:
        raise TokenError("iat", "token is issued in the future (iat)")
    if max_lifetime is not None:
        if exp is None or iat is None:
            raise TokenError("claims", "token needs both iat and exp")
        if exp - iat > max_lifetime:
            raise TokenError("lifetime", f"token lifetime exceeds {max_lifetime:.0f} s")
