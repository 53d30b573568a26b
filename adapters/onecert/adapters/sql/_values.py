"""Reading column values: timestamps, kinds and flags as databases return them.

Pure functions: what a driver hands back (a naive or aware datetime, a date,
epoch seconds as int, float or Decimal, an ISO 8601 string) becomes what the
SDK wants (an aware UTC datetime), or a ValueError or TypeError naming the
problem and never the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Final

from onecert.sdk import BindingKind

__all__ = ["to_bool", "to_kind", "to_utc", "to_utc_as"]

# Epoch seconds accepted: from 1970 to the end of year 9999. Milliseconds
# (13 digits today) fall outside and are refused rather than read as a date
# thousands of years ahead.
_MAX_EPOCH: Final = 253_402_300_799

# What "never" looks like in a PHP site's time column: 0, "0", "", or
# MySQL's zero date.
_ZERO: Final = re.compile(r"[0\s:.-]*")
_UNIX_TEXT: Final = re.compile(r"[0-9]{1,12}(?:\.[0-9]*)?")

_TRUE: Final = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE: Final = frozenset({"0", "false", "f", "no", "n", "off"})


def to_utc(value: object, *, timezone: tzinfo = UTC) -> datetime | None:
    """A column value as an aware UTC datetime; None for NULL.

    Naive datetimes (and dates, at midnight) are read in ``timezone``;
    numbers are epoch seconds; strings are ISO 8601 ("2021-03-01 08:00:00",
    "2021-03-01T00:00:00Z"), naive ones read in ``timezone``.

    Raises:
        ValueError: a number or string that is no timestamp.
        TypeError: a value of another type.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("a boolean is not a timestamp")
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time())
    elif isinstance(value, int | float | Decimal):
        seconds = float(value)
        if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_EPOCH:
            raise ValueError("epoch seconds out of range (1970 to 9999)")
        return datetime.fromtimestamp(seconds, UTC)
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("not an ISO 8601 timestamp") from None
    else:
        raise TypeError(f"a {type(value).__name__} is not a timestamp")
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=timezone)
    return moment.astimezone(UTC)


def to_utc_as(
    value: object,
    *,
    format: str = "auto",
    zero_is_null: bool = False,
    offset_s: int = 0,
    timezone: tzinfo = UTC,
) -> datetime | None:
    """A column value read as the config's ``[times.<key>]`` declares; None for NULL.

    Args:
        value: what the driver returned.
        format: "auto" (:func:`to_utc`), "unix" (epoch seconds as a number or
            as digit text) or "text" (ISO 8601 text only).
        zero_is_null: 0, "0", "" and MySQL's zero date mean no time.
        offset_s: seconds added to the time read (a site's shifted clock).
        timezone: the zone naive values are read in.

    Raises:
        ValueError: a value that is not of the declared format.
        TypeError: a value of a type the format does not take.
    """
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", errors="replace")
    if zero_is_null and not isinstance(value, bool | datetime | date):
        if isinstance(value, int | float | Decimal) and value == 0:
            return None
        if isinstance(value, str) and _ZERO.fullmatch(value.strip()):
            return None
    if format == "unix":
        if isinstance(value, str):
            text = value.strip()
            if not _UNIX_TEXT.fullmatch(text):
                raise ValueError("not unix seconds (digits)")
            value = Decimal(text)
        elif isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise TypeError(f"a {type(value).__name__} is not unix seconds")
    elif format == "text" and not isinstance(value, str):
        raise TypeError(f"a {type(value).__name__} is not ISO 8601 text")
    moment = to_utc(value, timezone=timezone)
    if moment is None or not offset_s:
        return moment
    return moment + timedelta(seconds=offset_s)


def to_bool(value: object) -> bool | None:
    """A column value as a flag; None for NULL.

    Booleans, the integers 0 and 1, and the strings true/false, t/f, yes/no,
    y/n, on/off, 1/0 (any case).

    Raises:
        ValueError: anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal) and value in (0, 1):
        return bool(value)
    if isinstance(value, bytes) and value in (b"\x00", b"\x01"):
        # MySQL BIT(1) columns come back as one byte.
        return value == b"\x01"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError("not a flag (true/false, 1/0, yes/no)")


def to_kind(value: object, *, aliases: Mapping[str, BindingKind]) -> BindingKind | None:
    """A column value as a :class:`BindingKind`; None for NULL.

    ``aliases`` (the config's ``[kinds]``) is tried first, exactly, then
    case-insensitively; then the kind names themselves ("login", "payment",
    "recovery", "two_factor", "contact"), in any case.

    Raises:
        ValueError: a value neither knows.
    """
    if value is None:
        return None
    text = str(value).strip()
    if text in aliases:
        return aliases[text]
    folded = text.lower()
    for alias, kind in aliases.items():
        if alias.lower() == folded:
            return kind
    try:
        return BindingKind(folded)
    except ValueError:
        raise ValueError("not a known binding kind (map it under [kinds])") from None
