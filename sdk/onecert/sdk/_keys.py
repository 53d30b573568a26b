"""Signing keys and JSON Web Key Sets, with the algorithm pinned per key.

Only two algorithms exist in onecert: ES256 (EC P-256) and EdDSA (Ed25519).
The algorithm of a key follows from its type and is checked against the
JWK's ``alg`` member, so a token can never choose how it is verified
(RFC 8725 section 3.1).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

ALGORITHMS = ("ES256", "EdDSA")
# The shortest secret key file accepted when no exact size is asked for (the
# idn key: compute_idn refuses a shorter one too).
MIN_SECRET_BYTES = 16

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class KeyConfigError(ValueError):
    """A key or key set is unusable (wrong type, missing members, bad file)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Mapping[str, Any]) -> str:
    """The base64url (unpadded) of ``value`` as compact JSON: one JWS segment."""
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def sign_compact(header_segment: str, claims_segment: str, key: PrivateKey, alg: str) -> str:
    """A compact JWS of two encoded segments, signed with ``key`` as ``alg``.

    The key is not checked against the header: callers pin the algorithm to
    the key (:class:`SigningKey`) or forge on purpose (the tests' attack knobs).
    """
    signing_input = f"{header_segment}.{claims_segment}".encode("ascii")
    signature = _JWS_ALGORITHMS[alg].sign(signing_input, key)
    return f"{header_segment}.{claims_segment}.{_b64url(signature)}"


_JWS_ALGORITHMS = jwt.algorithms.get_default_algorithms()


@functools.lru_cache(maxsize=64)
def _header_segment(alg: str, kid: str, typ: str) -> str:
    # The same three members for every token a key signs: encoded once.
    return b64url_json({"alg": alg, "kid": kid, "typ": typ})


def public_jwk(public_key: PublicKey) -> dict[str, str]:
    """The public JWK of a key, with ``kid`` (RFC 7638 thumbprint) and ``alg``."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
        alg = "EdDSA"
    else:
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise KeyConfigError("only Ed25519 (EdDSA) and EC P-256 (ES256) keys are supported")
        numbers = public_key.public_numbers()
        members = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
        alg = "ES256"
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    kid = _b64url(hashlib.sha256(canonical).digest())
    return {**members, "kid": kid, "alg": alg, "use": "sig"}


@dataclass(frozen=True)
class SigningKey:
    """A private key with its pinned algorithm and key id."""

    private_key: PrivateKey
    kid: str
    alg: str

    @classmethod
    def from_private_key(cls, private_key: PrivateKey) -> SigningKey:
        jwk = public_jwk(private_key.public_key())
        return cls(private_key=private_key, kid=jwk["kid"], alg=jwk["alg"])

    @classmethod
    def generate(cls, alg: str = "EdDSA") -> SigningKey:
        """A new random key for ``alg`` ("EdDSA" or "ES256")."""
        if alg == "EdDSA":
            return cls.from_private_key(ed25519.Ed25519PrivateKey.generate())
        if alg == "ES256":
            return cls.from_private_key(ec.generate_private_key(ec.SECP256R1()))
        raise KeyConfigError(f"unsupported algorithm {alg!r}; use one of {ALGORITHMS}")

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise KeyConfigError("only Ed25519 (EdDSA) and EC P-256 (ES256) keys are supported")
        return cls.from_private_key(key)

    @classmethod
    def load(cls, path: str | Path) -> SigningKey:
        """Read a PEM (PKCS#8, unencrypted) private key file."""
        try:
            return cls.from_pem(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise KeyConfigError(f"cannot load signing key {path}: {exc}") from exc

    def to_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_jwk(self) -> dict[str, str]:
        return public_jwk(self.private_key.public_key())

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """A JWKS holding only this key's public half."""
        return {"keys": [self.public_jwk()]}

    def sign(self, claims: Mapping[str, Any], *, typ: str) -> str:
        """A compact JWS of ``claims`` with header ``alg``, ``kid`` and ``typ``.

        Encoded here rather than by ``jwt.encode``: the gateway signs one per
        provider call, and PyJWT's generic path (JSON encoders, key type
        checks, header building) cost about four times the signature itself.
        Any JWS verifier reads the result alike.
        """
        header = _header_segment(self.alg, self.kid, typ)
        return sign_compact(header, b64url_json(claims), self.private_key, self.alg)


@dataclass(frozen=True)
class VerificationKey:
    """A public key, its id and the only algorithm it may verify."""

    kid: str
    alg: str
    key: PublicKey


KeySet = Mapping[str, VerificationKey]


def _expected_alg(jwk: Mapping[str, Any]) -> str:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv == "Ed25519":
        return "EdDSA"
    if kty == "EC" and crv == "P-256":
        return "ES256"
    raise KeyConfigError(f"JWK kty={kty!r} crv={crv!r} is not allowed (Ed25519 or P-256 only)")


def parse_jwks(jwks: Mapping[str, Any]) -> dict[str, VerificationKey]:
    """Parse a JWKS into verification keys by ``kid``.

    Every key must name its ``kid`` and an ``alg`` that matches its type; private
    members are refused, so a private JWK pasted by mistake is caught early.
    """
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys:
        raise KeyConfigError("a JWKS needs a non-empty 'keys' list")
    out: dict[str, VerificationKey] = {}
    for jwk in keys:
        if not isinstance(jwk, dict):
            raise KeyConfigError("each JWKS entry must be an object")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise KeyConfigError("each JWK needs a 'kid'")
        if "d" in jwk:
            raise KeyConfigError(f"JWK {kid!r} holds a private key; publish only public keys")
        alg = _expected_alg(jwk)
        if jwk.get("alg") != alg:
            raise KeyConfigError(f"JWK {kid!r} must pin 'alg': {alg!r}")
        if jwk.get("use", "sig") != "sig":
            raise KeyConfigError(f"JWK {kid!r} is not a signing key")
        if kid in out:
            raise KeyConfigError(f"duplicate kid {kid!r} in JWKS")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except jwt.PyJWTError as exc:
            raise KeyConfigError(f"JWK {kid!r} is invalid: {exc}") from exc
        out[kid] = VerificationKey(kid=kid, alg=alg, key=key)
    return out


def load_jwks(path: str | Path) -> dict[str, VerificationKey]:
    """Read a JWKS file (the gateway's public keys) as ``SetVerifier(keys=...)`` takes them.

    Raises:
        KeyConfigError: unreadable, not JSON, or not a key set this SDK accepts.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise KeyConfigError(f"cannot read JWKS {path}: {exc}") from exc
    return parse_jwks(data)


def keys_or_jwks(keys: KeySet | str | Path) -> KeySet:
    """``keys`` as given, or read from the JWKS file it names (the ``gateway_keys=``
    a server and a notice poller both take).

    Raises:
        KeyConfigError: as :func:`load_jwks`.
    """
    return load_jwks(keys) if isinstance(keys, str | Path) else keys


def load_hex_key(path: str | Path, *, what: str, size: int | None = None) -> bytes:
    """Read a secret key file: random bytes written as hex.

    Args:
        path: the file.
        what: the key, for messages ("handle key").
        size: how many bytes the key must hold; None: at least
            :data:`MIN_SECRET_BYTES`.

    Raises:
        KeyConfigError: unreadable, not hex, or not ``size`` bytes. The message
            never quotes the file's content.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except ValueError:  # UnicodeDecodeError included; neither message is repeated
        raise KeyConfigError(f"{what} {path} is not hex") from None
    if size is None and len(key) < MIN_SECRET_BYTES:
        raise KeyConfigError(f"{what} {path} holds fewer than {MIN_SECRET_BYTES} bytes")
    if size is not None and len(key) != size:
        raise KeyConfigError(f"{what} {path} must hold {size} bytes ({2 * size} hex)")
    return key
