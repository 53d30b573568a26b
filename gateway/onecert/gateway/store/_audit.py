"""The audit chain's rules: what may be written, and how a row is hashed."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from onecert.gateway.store._types import AuditValueError

__all__ = ["canonical_detail", "check_audit_fields", "looks_like_number", "row_hash"]

_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Hashed identifiers, provider ids, "role:name" and the like.
_IDENT = re.compile(r"[A-Za-z0-9._:@/+-]{0,128}")
_TOKEN = re.compile(r"[0-9A-Za-z]+")
_MAX_DETAIL_TEXT = 1024


def looks_like_number(text: str) -> bool:
    """Whether ``text`` holds something that reads like a phone or ID number.

    Tokens are maximal runs of letters and digits (so "+86 138..." and
    "tel:+86..." split at the punctuation). A token of 8 or more digits is a
    phone number (E.164 or national); 15 or more digits and a final X is a
    national ID number. Hex digests are not caught: they mix in letters (an
    all-digit 64-character digest has odds of about 1e-13).
    """
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if len(token) >= 8 and token.isdigit():
            return True
        if len(token) >= 16 and token[-1] in "xX" and token[:-1].isdigit():
            return True
    return False


def check_audit_fields(
    *, kind: str, actor: str, subject: str, detail: Mapping[str, str | int | bool]
) -> None:
    """Raise :class:`AuditValueError` unless every field is fit for the audit log.

    ``actor`` and ``subject`` must be identifiers or digests (at most 128 of
    ``[A-Za-z0-9._:@/+-]``); detail keys are ``snake_case``; detail values are
    str (at most 1024 characters), int or bool. Nothing may look like a raw
    phone or ID number (:func:`looks_like_number`); an int of 8 or more
    digits is refused too, so write instants as ISO text, not epoch numbers.
    """
    if not _KIND.fullmatch(kind):
        raise AuditValueError("audit kind must match [a-z][a-z0-9_.-]{0,63}")
    for name, ident in (("actor", actor), ("subject", subject)):
        if not _IDENT.fullmatch(ident):
            raise AuditValueError(f"audit {name} must be an identifier or a digest")
        if looks_like_number(ident):
            raise AuditValueError(f"audit {name} looks like a raw phone or ID number: hash it")
    for key, value in detail.items():
        # Callers may bypass the annotation; the check is for them.
        if not isinstance(key, str) or not _KEY.fullmatch(key):  # type: ignore[redundant-expr]
            raise AuditValueError("audit detail keys must match [a-z][a-z0-9_]{0,63}")
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if abs(value) >= 10_000_000:
                raise AuditValueError(
                    f"audit detail {key!r} is an integer of 8 or more digits"
                    " (a phone number?): hash it, or write instants as ISO text"
                )
            continue
        if not isinstance(value, str):
            raise AuditValueError(f"audit detail {key!r} must be str, int or bool")
        if len(value) > _MAX_DETAIL_TEXT:
            raise AuditValueError(f"audit detail {key!r} is longer than {_MAX_DETAIL_TEXT}")
        if looks_like_number(value):
            raise AuditValueError(
                f"audit detail {key!r} looks like a raw phone or ID number: hash it"
            )


def canonical_detail(detail: Mapping[str, str | int | bool]) -> str:
    """The detail as canonical JSON (sorted keys, no spaces, ASCII)."""
    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def row_hash(
    *,
    prev_hash: str,
    seq: int,
    ts: datetime,
    kind: str,
    actor: str,
    subject: str,
    detail: str,
) -> str:
    """SHA-256 hex over ``prev_hash`` and the canonical form of the row.

    ``detail`` is the stored canonical JSON text, hashed exactly as stored.
    """
    stamp = ts.astimezone(UTC).isoformat(timespec="microseconds")
    body = json.dumps(
        [seq, stamp, kind, actor, subject, detail], separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()
