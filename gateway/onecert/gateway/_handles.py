"""Handles: what a citizen passes back to act on a binding, sealed by the gateway.

A handle is opaque to everyone but the gateway: AES-256-GCM over the
binding's provider, number, account reference, attribution, query id and
expiry, with the citizen's ``sub`` bound in as associated data, so a handle
opens only for the citizen it was made for. Layout (version 1), as unpadded
base64url::

    version (1) | key id (4) | nonce (12) | ciphertext + tag (16)

    associated data = version | key id | sub (UTF-8)
    plaintext       = attribution (1) | expires_at (4, seconds, big-endian)
                      | then provider_id, msisdn, query_id, account_ref,
                        each as length (2, big-endian) + UTF-8

The ``sub`` is not inside the handle (it would double its length for nothing):
a handle opened with another ``sub`` fails authentication exactly like an
altered one. A typical handle is 130 to 180 characters; it grows with the
provider's account reference (at most 256 characters by the contract).

Keys rotate: seal with the new key, keep the old one in ``previous_keys``
until the handles it sealed have expired. Nonces are random, so rotate a key
well before it has sealed 2**32 handles.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onecert.gateway._attribution import Attribution
from onecert.gateway._refusal import CheckError
from onecert.sdk._keys import KeyConfigError, load_hex_key
from onecert.sdk._msisdn import is_e164

HANDLE_VERSION = 1
KEY_BYTES = 32
_KID_BYTES = 4
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HEADER_BYTES = 1 + _KID_BYTES
# attribution + expires_at + four empty length prefixes.
_MIN_PLAINTEXT = 1 + 4 + 4 * 2
_MIN_HANDLE_BYTES = _HEADER_BYTES + _NONCE_BYTES + _MIN_PLAINTEXT + _TAG_BYTES
# Longer than any handle this module makes (every field at its limit),
# refused before decoding.
MAX_HANDLE_CHARS = 2048
_MAX_PROVIDER_ID = 128
_MAX_QUERY_ID = 128
_MAX_ACCOUNT_REF = 1024  # bytes: 256 characters of up to 4 UTF-8 bytes
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class HandleClaims:
    """What a handle says.

    Attributes:
        sub: the citizen it was sealed for.
        provider_id: the provider holding the account.
        msisdn: the number, E.164.
        account_ref: the provider's reference to the account (never shown).
        attribution: MINE or LEFT_BEHIND (unbind), PREVIOUS_HOLDER (release).
        expires_at: seconds since the epoch; whole seconds (sealing rounds down).
        query_id: the lookup that showed the binding.
    """

    sub: str
    provider_id: str
    msisdn: str
    account_ref: str
    attribution: Attribution
    expires_at: float
    query_id: str


class HandleError(CheckError):
    """A handle was refused.

    Attributes:
        code: INVALID_ARGUMENT (malformed, truncated, unknown version, expired)
            or PERMISSION_DENIED (forged, altered, another citizen's, or sealed
            with a key this gateway does not hold).
        reason: a short machine-readable code for metrics.
        message: a clear explanation, safe to send to the caller.
    """


def _malformed(message: str = "the handle is malformed; use a handle from a lookup") -> HandleError:
    return HandleError(grpc.StatusCode.INVALID_ARGUMENT, "malformed", message)


def _denied(reason: str) -> HandleError:
    return HandleError(
        grpc.StatusCode.PERMISSION_DENIED,
        reason,
        "the handle was not issued to you by this gateway, or it was altered",
    )


def key_id(key: bytes) -> bytes:
    """The short id a handle carries to name the key that sealed it."""
    return hashlib.sha256(b"onecert handle key id\x00" + key).digest()[:_KID_BYTES]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise _malformed()
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise _malformed() from None
    # One handle, one spelling: refuse non-canonical trailing bits so that a
    # handle cannot be varied without changing what it seals.
    if _b64encode(data) != text:
        raise _malformed()
    return data


def _utf8(text: str) -> bytes:
    # surrogatepass: a str that is not valid Unicode still seals and opens
    # consistently instead of raising.
    return text.encode("utf-8", "surrogatepass")


def _field(name: str, value: str, *, limit: int, required: bool = True) -> bytes:
    data = _utf8(value)
    if required and not data:
        raise ValueError(f"handle claim {name} is required")
    if len(data) > limit:
        raise ValueError(f"handle claim {name} is longer than {limit} bytes")
    return struct.pack(">H", len(data)) + data


class HandleSealer:
    """Seals and opens handles with AES-256-GCM.

    Args:
        key: the current 32-byte key; seals every new handle.
        previous_keys: older keys still accepted when opening, for rotation.
    """

    def __init__(self, key: bytes, *, previous_keys: Sequence[bytes] = ()) -> None:
        keys = [key, *previous_keys]
        for k in keys:
            if len(k) != KEY_BYTES:
                raise KeyConfigError(f"a handle key must be {KEY_BYTES} bytes")
        # What every handle this sealer makes begins with: version and key id.
        self._header = bytes([HANDLE_VERSION]) + key_id(key)
        self._aead = AESGCM(key)
        self._by_kid: dict[bytes, AESGCM] = {}
        for k in keys:
            kid = key_id(k)
            if kid in self._by_kid:
                raise KeyConfigError("the same handle key is configured twice")
            self._by_kid[kid] = AESGCM(k)

    def seal(self, claims: HandleClaims) -> str:
        """The handle for ``claims``.

        Raises:
            ValueError: a claim out of bounds (empty sub or provider id, a
                number that is not E.164, an over-long field, an expiry outside
                0 to 2**32 - 1 seconds).
        """
        if not claims.sub:
            raise ValueError("handle claim sub is required")
        if not is_e164(claims.msisdn):
            raise ValueError("handle claim msisdn must be E.164")
        if not 0 <= claims.expires_at < 2**32:
            raise ValueError("handle claim expires_at is out of range")
        plaintext = b"".join(
            (
                struct.pack(">BI", claims.attribution.proto, math.floor(claims.expires_at)),
                _field("provider_id", claims.provider_id, limit=_MAX_PROVIDER_ID),
                _field("msisdn", claims.msisdn, limit=16),
                _field("query_id", claims.query_id, limit=_MAX_QUERY_ID, required=False),
                _field("account_ref", claims.account_ref, limit=_MAX_ACCOUNT_REF),
            )
        )
        header = self._header
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, header + _utf8(claims.sub))
        return _b64encode(header + nonce + sealed)

    def open(
        self, handle: str, *, sub: str, now: float | None = None, allow_expired: bool = False
    ) -> HandleClaims:
        """The claims of ``handle`` if it was sealed for ``sub``; else :class:`HandleError`.

        Args:
            handle: the text from a lookup.
            sub: the citizen acting on it (from their verified assertion).
            now: the current time, seconds since the epoch; for tests.
            allow_expired: accept an expired handle (the delivery worker, which
                acts on a ticket accepted while the handle was valid).
        """
        data = check_handle_form(handle)
        header = data[:_HEADER_BYTES]
        aead = self._by_kid.get(header[1:])
        if aead is None:
            raise _denied("key")
        nonce = data[_HEADER_BYTES : _HEADER_BYTES + _NONCE_BYTES]
        try:
            plaintext = aead.decrypt(
                nonce, data[_HEADER_BYTES + _NONCE_BYTES :], header + _utf8(sub)
            )
        except InvalidTag:
            raise _denied("forged") from None
        claims = _parse(plaintext, sub)
        current = time.time() if now is None else now
        if not allow_expired and current >= claims.expires_at:
            raise HandleError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "expired",
                "the handle has expired; look up again to get a fresh one",
            )
        return claims


def check_handle_form(handle: str) -> bytes:
    """The bytes of ``handle`` if it has a handle's form; else :class:`HandleError`.

    Needs no key and says nothing of authenticity (:meth:`HandleSealer.open`
    checks that): callers check the form first to refuse a malformed request
    before anything is spent on it, such as the citizen's assertion.
    """
    if not handle:
        raise _malformed("a handle is required")
    if len(handle) > MAX_HANDLE_CHARS:
        raise _malformed()
    data = _b64decode(handle)
    if len(data) < _MIN_HANDLE_BYTES:
        raise _malformed("the handle is truncated; use a handle from a lookup")
    if data[0] != HANDLE_VERSION:
        raise _malformed("the handle has an unknown version; use a handle from a lookup")
    return data


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise _malformed() from None


def _parse(plaintext: bytes, sub: str) -> HandleClaims:
    # Authenticated, so only a gateway bug could make this fail; still answer
    # INVALID_ARGUMENT rather than crash.
    try:
        attribution_value, expires_at = struct.unpack_from(">BI", plaintext)
        attribution = Attribution(attribution_value)
    except (struct.error, ValueError):
        raise _malformed() from None
    offset = 5
    fields: list[str] = []
    for _ in range(4):
        if offset + 2 > len(plaintext):
            raise _malformed()
        (length,) = struct.unpack_from(">H", plaintext, offset)
        offset += 2
        if offset + length > len(plaintext):
            raise _malformed()
        fields.append(_text(plaintext[offset : offset + length]))
        offset += length
    if offset != len(plaintext):
        raise _malformed()
    provider_id, msisdn, query_id, account_ref = fields
    return HandleClaims(
        sub=sub,
        provider_id=provider_id,
        msisdn=msisdn,
        account_ref=account_ref,
        attribution=attribution,
        expires_at=float(expires_at),
        query_id=query_id,
    )


def load_handle_key(path: str | Path) -> bytes:
    """Read a handle key file: 32 random bytes as hex (``onecert keys init`` makes it).

    Raises:
        KeyConfigError: unreadable, not hex, or not 32 bytes.
    """
    return load_hex_key(path, what="handle key", size=KEY_BYTES)
