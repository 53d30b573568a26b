"""Phone numbers as real user tables hold them, to and from E.164.

Two pure functions. :func:`normalize_phone` reads what a site stored
("138-0013-8000", "0086 138 0013 8000", "+86 13800138000") as E.164 or
None. :func:`phone_variants` goes the other way: the formats a users table
may hold for one E.164 number, bound as the ``:phones`` list of the site's
query. A variant is generated only if :func:`normalize_phone` reads it back
as the same number, so a stored value that could mean another number is
never matched to this one.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from onecert.sdk._msisdn import is_e164

__all__ = [
    "DEFAULT_COUNTRY",
    "is_country_code",
    "normalize_phone",
    "phone_variants",
    "split_country_code",
]

DEFAULT_COUNTRY: Final = "86"

# ITU-T E.164 country codes form a prefix code: "1" and "7" are the one-digit
# codes, these are the two-digit ones, and every other code has three digits.
_TWO_DIGIT_CODES: Final = frozenset(
    {
        *("20", "27", "30", "31", "32", "33", "34", "36", "39"),
        *("40", "41", "43", "44", "45", "46", "47", "48", "49"),
        *("51", "52", "53", "54", "55", "56", "57", "58"),
        *("60", "61", "62", "63", "64", "65", "66"),
        *("81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98"),
    }
)

# Mainland China: mobile numbers are 11 digits starting 13-19; other numbers
# (landlines, 400/800 lines) are an area code (10, 2x or three digits from
# 3xx) and 7 or 8 digits.
_CN_MOBILE: Final = re.compile(r"1[3-9][0-9]{9}")
_CN_OTHER: Final = re.compile(r"(?:10|2[0-9]|[3-9][0-9]{2})[0-9]{7,8}")
_NATIONAL: Final = re.compile(r"[1-9][0-9]{3,13}")

# Characters people put between digits; dropped before reading.
_SEPARATORS: Final = frozenset(" -.()/\u00a0\u2010\u2011\u2012\u2013\u2014\u2015\u3000")
_DIGITS: Final = frozenset("0123456789")
# Longer input is not a phone number; refusing it early bounds the work.
_MAX_RAW: Final = 64


def split_country_code(msisdn: str) -> tuple[str, str]:
    """Split an E.164 number into (country code, national number).

    ``"+8613800138000"`` -> ``("86", "13800138000")``. The caller passes E.164.
    """
    digits = msisdn.removeprefix("+")
    if digits[0] in "17":
        size = 1
    elif digits[:2] in _TWO_DIGIT_CODES:
        size = 2
    else:
        size = 3
    return digits[:size], digits[size:]


def is_country_code(code: str) -> bool:
    """Whether ``code`` is an E.164 country code ("86", "1", "852")."""
    return (
        code.isascii()
        and code.isdigit()
        and 1 <= len(code) <= 3
        and code[0] != "0"
        and split_country_code("+" + code + "0000000")[0] == code
    )


def _plausible_national(country: str, national: str) -> bool:
    # A national (significant) number of ``country``, written without a trunk prefix.
    if country == "86":
        return bool(_CN_MOBILE.fullmatch(national) or _CN_OTHER.fullmatch(national))
    return bool(_NATIONAL.fullmatch(national)) and is_e164("+" + country + national)


def _clean(raw: object) -> str | None:
    # The value with separators dropped: "+" and digits only, or None.
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        raw = str(raw)
    if not isinstance(raw, str) or len(raw) > _MAX_RAW:
        return None
    # NFKC turns full-width digits and the full-width plus sign into ASCII.
    text = unicodedata.normalize("NFKC", raw).strip()
    kept = "".join(c for c in text if c not in _SEPARATORS and not c.isspace())
    body = kept.removeprefix("+")
    if not body or any(c not in _DIGITS for c in body):
        return None
    return kept


def normalize_phone(raw: object, *, default_country: str = DEFAULT_COUNTRY) -> str | None:
    """Read a phone number as a site stored it; E.164, or None if it is not one.

    Spaces, dashes, dots, parentheses and slashes between digits are ignored,
    and full-width characters read as ASCII. Then:

    - ``+<digits>``: E.164 as written.
    - ``00<digits>``: the international prefix, read as ``+<digits>``.
    - digits starting with ``default_country`` followed by a national number
      of that country: ``+<digits>`` ("8613800138000").
    - ``0`` then a national number: the trunk prefix, read in
      ``default_country`` ("013800138000", "010 1234 5678").
    - a national number of ``default_country`` ("13800138000").

    For China (86) a national number is a mobile number (11 digits, 13x to
    19x) or an area code and 7 or 8 digits; for other countries any 4 to 14
    digits not starting with 0. Anything else, including integers stored
    without their country code for a country other than the default, is None.

    Args:
        raw: the stored value (a string; an int is read as its digits).
        default_country: the country code numbers without one belong to.

    Returns:
        The number in E.164 ("+8613800138000"), or None.
    """
    if not is_country_code(default_country):
        raise ValueError("default_country must be an E.164 country code such as '86'")
    kept = _clean(raw)
    if kept is None:
        return None
    if kept.startswith("+"):
        candidate = kept
    elif kept.startswith("00"):
        candidate = "+" + kept[2:]
    elif kept.startswith(default_country) and _plausible_national(
        default_country, kept[len(default_country) :]
    ):
        candidate = "+" + kept
    elif kept.startswith("0") and _plausible_national(default_country, kept[1:]):
        candidate = "+" + default_country + kept[1:]
    elif _plausible_national(default_country, kept):
        candidate = "+" + default_country + kept
    else:
        return None
    return candidate if is_e164(candidate) else None


def _grouped_cn_mobile(national: str) -> str:
    # The 3-4-4 grouping Chinese mobile numbers are written in.
    return f"{national[:3]} {national[3:7]} {national[7:]}"


def phone_variants(msisdn: str, *, default_country: str = DEFAULT_COUNTRY) -> tuple[str, ...]:
    """The formats a users table may hold for ``msisdn``, E.164 first.

    For ``+8613800138000`` with the default country 86, exactly::

        +8613800138000      8613800138000       008613800138000
        13800138000         +86 13800138000     +86-13800138000
        138 0013 8000       138-0013-8000       +86 138 0013 8000
        +86-138-0013-8000   0086 138 0013 8000

    For another number of the default country (a landline ``+861012345678``):
    E.164, without "+", with "00", the national number, the national number
    with the trunk prefix 0, "+86 <national>" and "+86-<national>". For a
    number of another country (``+14155550100``): E.164, with "00",
    "+1 <national>" and "+1-<national>".

    Only formats that :func:`normalize_phone` reads back as ``msisdn`` are
    returned. Raises ValueError if ``msisdn`` is not E.164.
    """
    if not is_e164(msisdn):
        raise ValueError("msisdn must be E.164")
    if not is_country_code(default_country):
        raise ValueError("default_country must be an E.164 country code such as '86'")
    country, national = split_country_code(msisdn)
    digits = msisdn[1:]
    candidates = [msisdn]
    if country == default_country:
        candidates += [digits, "00" + digits, national]
        if not (country == "86" and _CN_MOBILE.fullmatch(national)):
            candidates.append("0" + national)
    else:
        candidates.append("00" + digits)
    candidates += [f"+{country} {national}", f"+{country}-{national}"]
    if country == "86" and _CN_MOBILE.fullmatch(national):
        grouped = _grouped_cn_mobile(national)
        candidates += [
            grouped,
            grouped.replace(" ", "-"),
            f"+86 {grouped}",
            f"+86-{grouped.replace(' ', '-')}",
            f"0086 {grouped}",
        ]
    seen: dict[str, None] = {}
    for candidate in candidates:
        if normalize_phone(candidate, default_country=default_country) == msisdn:
            seen.setdefault(candidate, None)
    return tuple(seen)
