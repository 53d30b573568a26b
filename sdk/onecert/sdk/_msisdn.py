"""Phone numbers (msisdns) in E.164: validation, hashing, masking, and the prefix
ranges that say which carrier's a number is."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_PREFIX = re.compile(r"\+[0-9]{1,15}")

# Phone numbers in free text (logs, errors, provider reasons). Ids, hashes and
# column names hold long digit runs too ("conformance-9e240d585348d4",
# "phone_20240101"), so a number counts only where it stands alone: not glued
# to a letter or digit on either side. The forms masked:
# - international: "+" (or "00") and 8 to 15 digits, optionally grouped by
#   blanks, dashes, dots or brackets ("+86 138-0013-8000", "(+86) 13800138000",
#   "+1 (415) 555-2671");
# - a Chinese mobile number, bare or grouped 3-4-4, optionally after the
#   country code without "+" ("13800138000", "138 0013 8000", "86-13800138000").
# Digits include full-width ones, as typed on Chinese keyboards.
_D = "[0-9\uff10-\uff19]"
_SEP = "[ \u00a0.\\-]"
_ALONE_BEFORE = "(?<![A-Za-z0-9\uff10-\uff19])"
# "00" and digits after an underscore or a hyphen is part of a name or an id
# (``users_0010000000``, a uuid's last group); "+" numbers and 11-digit mobiles
# are masked even there (``u_13800138000`` is a phone number used as a name).
_ALONE_BEFORE_00 = "(?<![A-Za-z0-9_\\-\uff10-\uff19])"
_ALONE_AFTER = "(?![A-Za-z0-9\uff10-\uff19])"
_GROUPED = f"[1-9](?:(?:{_SEP}|{_SEP}?[()]{_SEP}?)?{_D}){{7,14}}"
_NUMBER_IN_TEXT = re.compile(
    "(?:"
    + f"{_ALONE_BEFORE}\\+{_GROUPED}"
    + "|"
    + f"{_ALONE_BEFORE_00}00{_GROUPED}"
    + "|"
    + f"{_ALONE_BEFORE}(?:[8\uff18][6\uff16]{_SEP}?)?[1\uff11][3-9\uff13-\uff19]{_D}"
    + f"(?:{_D}{{8}}|{_SEP}{_D}{{4}}{_SEP}{_D}{{4}})"
    + ")"
    + _ALONE_AFTER
)


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
    """Mask every phone number inside free text; ids and names with digits stay whole.

    International numbers ("+" or "00" and 8 to 15 digits, grouped or not) and
    Chinese mobile numbers (with or without the country code, grouped 3-4-4 or
    not) are masked where they stand alone, not glued to a letter or digit.
    """
    return _NUMBER_IN_TEXT.sub(lambda m: mask_msisdn(m.group(0)), text)


def parse_number_range(text: str) -> tuple[str, str]:
    """``"+86138"`` -> ``("+86138", "+86138")``; ``"+861380-+861384"`` -> both ends.

    Raises ValueError unless both ends are ``+`` and 1 to 15 digits, of
    equal length, low end first.
    """
    low, sep, high = text.strip().partition("-")
    if not sep:
        high = low
    low, high = low.strip(), high.strip()
    if not (_PREFIX.fullmatch(low) and _PREFIX.fullmatch(high)):
        raise ValueError("a prefix is '+' and 1 to 15 digits; a range is 'PREFIX-PREFIX'")
    if len(low) != len(high) or low > high:
        raise ValueError("a range's ends must have the same length, the lower end first")
    return low, high


def in_number_ranges(msisdn: str, ranges: Iterable[str]) -> bool:
    """Whether ``msisdn`` (E.164) falls in one of ``ranges``: prefixes or ranges of
    prefixes as :func:`parse_number_range` reads them (a carrier's numbers)."""
    for text in ranges:
        low, high = parse_number_range(text)
        head = msisdn[: len(low)]
        if len(head) == len(low) and low <= head <= high:
            return True
    return False
