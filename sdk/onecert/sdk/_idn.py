"""The idn: a keyed hash of an identity document number.

The identity service and the carriers share a secret key; both compute
``idn = HMAC-SHA256(key, document_number)`` so that onecert can route a
citizen to their numbers without ever seeing the document number.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_IDN = re.compile(r"[0-9a-f]{64}")


def compute_idn(key: bytes, document_number: str) -> str:
    """Lowercase hex HMAC-SHA256 of the normalised document number."""
    if len(key) < 16:
        raise ValueError("the idn key must be at least 16 bytes")
    normalised = document_number.strip().upper()
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()


def is_idn(value: str) -> bool:
    """Whether ``value`` is a well-formed idn (64 lowercase hex characters)."""
    return _IDN.fullmatch(value) is not None
