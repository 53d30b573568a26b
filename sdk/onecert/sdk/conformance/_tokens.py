"""Tokens the kit forges: good ones, and bad ones that each break one rule.

A :class:`Forge` signs warrants and Security Event Tokens the way the gateway
does, and lets a case change one header member or claim, drop one, sign with
another key, or sign the ways an attacker would (``alg: none``, HS256 keyed
with the gateway's public key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import jwt
from cryptography.hazmat.primitives import serialization

from onecert.sdk._keys import SigningKey
from onecert.sdk._msisdn import sha256_hex
from onecert.sdk._set import RISC_IDENTIFIER_RECYCLED, SET_TYP
from onecert.sdk._warrant import WARRANT_TYP

# Lifetime of a good warrant the kit signs (the gateway's default).
WARRANT_LIFETIME = 30


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(part: Mapping[str, Any]) -> str:
    return b64url(json.dumps(part, separators=(",", ":")).encode())


def impostor_key(key: SigningKey) -> SigningKey:
    """Another private key under ``key``'s kid and algorithm.

    A verifier that trusts the kid without checking the signature accepts
    what it signs.
    """
    return SigningKey(
        private_key=SigningKey.generate(key.alg).private_key, kid=key.kid, alg=key.alg
    )


def public_pem(key: SigningKey) -> bytes:
    """The PEM of ``key``'s public half: the secret of the HS256 key-confusion attack."""
    return key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class Signer:
    """How a forged token is signed: ``normal`` with ``key``, ``none`` or ``hs256``."""

    how: str = "normal"
    key: SigningKey | None = None


class Tampering(TypedDict, total=False):
    """The one deliberate change a forged token carries (none: a good token).

    ``change`` overrides claims and ``drop`` removes some; ``signer``,
    ``header``, ``drop_header`` and ``typ`` change how it is signed, as for
    :meth:`Forge.sign`.
    """

    change: Mapping[str, Any]
    drop: Iterable[str]
    signer: Signer
    header: Mapping[str, Any]
    drop_header: Iterable[str]
    typ: str


def tampered(claims: Mapping[str, Any], tampering: Tampering) -> dict[str, Any]:
    """``claims`` with ``tampering``'s claims changed and dropped."""
    out = {**claims, **tampering.get("change", {})}
    for name in tampering.get("drop", ()):
        out.pop(name, None)
    return out


class Forge:
    """Signs tokens as the gateway would, with one deliberate change when asked.

    Args:
        key: the gateway's signing key, trusted by the target.
        issuer: the gateway id.
        audience: the target's id.
    """

    def __init__(self, *, key: SigningKey, issuer: str, audience: str) -> None:
        self.key = key
        self.issuer = issuer
        self.audience = audience
        self._impostor: SigningKey | None = None
        self._stranger: SigningKey | None = None

    @property
    def impostor(self) -> SigningKey:
        if self._impostor is None:
            self._impostor = impostor_key(self.key)
        return self._impostor

    @property
    def stranger(self) -> SigningKey:
        if self._stranger is None:
            self._stranger = SigningKey.generate(self.key.alg)
        return self._stranger

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        typ: str,
        signer: Signer = Signer(),
        header: Mapping[str, Any] | None = None,
        drop_header: Iterable[str] = (),
    ) -> str:
        """A compact JWS of ``claims``; ``header`` members override the usual ones."""
        key = signer.key or self.key
        alg = {"none": "none", "hs256": "HS256"}.get(signer.how, key.alg)
        head: dict[str, Any] = {"alg": alg, "typ": typ, "kid": key.kid, **(header or {})}
        for name in drop_header:
            head.pop(name, None)
        if signer.how == "normal" and not header and not drop_header:
            return key.sign(claims, typ=typ)
        signing_input = f"{_segment(head)}.{_segment(claims)}"
        if signer.how == "none":
            return signing_input + "."
        if signer.how == "hs256":
            mac = hmac.new(public_pem(key), signing_input.encode(), hashlib.sha256).digest()
            return f"{signing_input}.{b64url(mac)}"
        # A normal signature over a header PyJWT would not write (no kid, ...).
        algorithm = jwt.get_algorithm_by_name(key.alg)
        signature = algorithm.sign(signing_input.encode(), key.private_key)
        return f"{signing_input}.{b64url(signature)}"

    def warrant_claims(
        self, target: str, purpose: str, *, now: float | None = None
    ) -> dict[str, Any]:
        """The claims of a good warrant for a call about ``target``."""
        issued = int(time.time() if now is None else now)
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": issued,
            "exp": issued + WARRANT_LIFETIME,
            "jti": secrets.token_urlsafe(12),
            "purpose": purpose,
            "qid": f"conformance-{secrets.token_hex(6)}",
            "target_sha256": sha256_hex(target),
        }

    def warrant(self, target: str, purpose: str, **tampering: Unpack[Tampering]) -> str:
        """A warrant, good unless ``tampering`` asks for a change."""
        return self.forged(self.warrant_claims(target, purpose), tampering, typ=WARRANT_TYP)

    def set_claims(self, msisdn: str, *, now: float | None = None) -> dict[str, Any]:
        """The claims of a good recycled-number notice about ``msisdn``."""
        issued = int(time.time() if now is None else now)
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": issued,
            "jti": f"conformance-notice-{secrets.token_hex(8)}",
            "toe": issued - 86400,
            "events": {
                RISC_IDENTIFIER_RECYCLED: {
                    "subject": {"format": "phone_number", "phone_number": msisdn},
                    "act_by": issued + 7 * 86400,
                }
            },
        }

    def notice(self, msisdn: str, **tampering: Unpack[Tampering]) -> str:
        """A Security Event Token, good unless ``tampering`` asks for a change."""
        return self.forged(self.set_claims(msisdn), tampering, typ=SET_TYP)

    def forged(self, claims: Mapping[str, Any], tampering: Tampering, *, typ: str) -> str:
        """``claims`` signed as a ``typ`` token, with the change ``tampering`` asks for."""
        return self.sign(
            tampered(claims, tampering),
            typ=tampering.get("typ", typ),
            signer=tampering.get("signer", Signer()),
            header=tampering.get("header"),
            drop_header=tampering.get("drop_header", ()),
        )
