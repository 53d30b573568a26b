"""Phone numbers (msisdns) in E.164: validation, hashing and masking."""

from __future__ import annotations

import hashlib
import re

_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
# Anything in free text that could be a phone number, with or without "+".
_NUMBER_IN_TEXT = re.compile(r"\+?[0-9]{8,15}")


class InvalidMsisdnError(ValueError):
    """The value is not an E.164 phone number."""


def is_e164(value: str) -> bool:
    """Whether ``value`` is an E.164 number: "+" then 8 to 15 digits, no spaces."""
    return _E164.fullmatch(value) is not None


def validate_msisdn(value: str) -> str:
    """Return ``value`` if it is E.164, else raise :class:`InvalidMsisdnError`.

    The message never repeats the value: it may be a real phone number.
    """
    if not value:
        raise InvalidMsisdnError("msisdn is required (E.164, for example +8613800138000)")
    if not is_e164(value):
        raise InvalidMsisdnError(
            "msisdn must be E.164: '+' then 8 to 15 digits, no spaces or dashes"
        )
    return value


def sha256_hex(value: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes of ``value`` (a warrant's target)."""
    return hashlib.sha256(value.encode()).hexdigest()


def mask_msisdn(value: str) -> str:
    """Mask a phone number for logs: keep the first four and last two characters."""
    if len(value) <= 6:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 6) + value[-2:]


def mask_numbers_in_text(text: str) -> str:
    """Mask every run of 8 to 15 digits (with or without '+') inside free text."""
    return _NUMBER_IN_TEXT.sub(lambda m: mask_msisdn(m.group(0)), text)
