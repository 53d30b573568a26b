"""Log masking: phone numbers in the forms people write them are masked; ids are not."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from onecert.sdk._logging import configure_logging, mask_phone_numbers
from onecert.sdk._msisdn import mask_numbers_in_text

_DIGITS = "0123456789"
_FULL_WIDTH = {str(d): chr(0xFF10 + d) for d in range(10)}


# An 11-digit Chinese mobile number.
_CN_MOBILES = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
# An E.164 number of any country: '+', then 8 to 15 digits.
_E164_NUMBERS = st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True)


@st.composite
def _written_numbers(draw: st.DrawFn) -> str:
    """A mobile number the way people and systems write it."""
    mobile = draw(_CN_MOBILES)
    grouped = f"{mobile[:3]}{{sep}}{mobile[3:7]}{{sep}}{mobile[7:]}"
    sep = draw(st.sampled_from([" ", "-"]))
    form = draw(
        st.sampled_from(
            [
                "{m}",
                "+86{m}",
                "+86 {m}",
                "86-{m}",
                "0086 {m}",
                "(+86) {m}",
                "+86 {g}",
                "(+86) {g}",
                "{g}",
                "fullwidth",
            ]
        )
    )
    if form == "fullwidth":
        return "".join(_FULL_WIDTH[d] for d in mobile)
    return form.format(m=mobile, g=grouped.format(sep=sep))


@st.composite
def _ids(draw: st.DrawFn) -> str:
    """Ids as the system writes them: prefixed hex, uuids, digit runs glued to letters."""
    kind = draw(st.sampled_from(["hex", "uuid", "glued", "column"]))
    if kind == "hex":
        prefix = draw(st.sampled_from(["conformance-", "q-", "req_", ""]))
        body = draw(st.text("0123456789abcdef", min_size=12, max_size=32))
        # Starts and ends with a letter: a run of digits in the middle stays glued.
        return f"{prefix}a{body}f"
    if kind == "uuid":
        return str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    if kind == "glued":
        head = draw(st.text("abcdefxyz", min_size=1, max_size=6))
        digits = draw(st.text(_DIGITS, min_size=8, max_size=20))
        tail = draw(st.text("abcdefxyz", max_size=3))
        return head + digits + tail
    # A column or table name: letters, an underscore, a date-like suffix.
    name = draw(st.sampled_from(["phone", "mobile", "tel", "users"]))
    return f"{name}_{draw(st.text(_DIGITS, min_size=8, max_size=10))}"


@given(number=_written_numbers(), before=st.sampled_from(["", "call ", "手机", "x=", "("]))
def test_written_mobile_numbers_are_masked(number: str, before: str) -> None:
    """A Chinese mobile number in any common written form loses its middle digits."""
    masked = mask_numbers_in_text(f"{before}{number}, thanks")
    assert number not in masked
    assert "*" in masked
    assert masked.endswith(", thanks")


@given(number=_E164_NUMBERS)
def test_e164_numbers_of_any_country_are_masked(number: str) -> None:
    """An E.164 number of any country is masked in free text."""
    masked = mask_numbers_in_text(f"msisdn={number} refused")
    assert number not in masked
    assert masked.startswith("msisdn=" + number[:4])


@given(ident=_ids())
def test_ids_with_digit_runs_survive(ident: str) -> None:
    """Ids, uuids and column names holding long digit runs are not masked."""
    line = f"request_id={ident} column {ident} failed"
    assert mask_numbers_in_text(line) == line


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("request_id=conformance-9e240d585348d4", "request_id=conformance-9e240d585348d4"),
        ('no such column "phone_20240101"', 'no such column "phone_20240101"'),
        ("table users_0010000000", "table users_0010000000"),
        ("u_13800138000", "u_1380*****00"),
        ("key_+8613800138000", "key_+861********00"),
        ("query 1733400000123456 took 3 ms", "query 1733400000123456 took 3 ms"),
        ("+8613800138000", "+861********00"),
        ("13800138000", "1380*****00"),
        ("86-13800138000", "86-1********00"),
        ("(+86) 138-0013-8000", "(+86)************00"),
    ],
)
def test_examples(text: str, masked: str) -> None:
    """Ids keep every digit; phone numbers keep their first four and last two characters."""
    assert mask_numbers_in_text(text) == masked


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """structlog configured as in production, writing JSON lines into a buffer."""
    out = io.StringIO()
    configure_logging(json=True)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
    try:
        yield out
    finally:
        structlog.reset_defaults()


def test_log_lines_mask_numbers_and_keep_ids(captured: io.StringIO) -> None:
    """A log line masks a phone number, in text or as an integer, and keeps ids and counts."""
    structlog.get_logger("t").info(
        "unbind.applied",
        request_id="conformance-9e240d585348d4",
        reason="no account for 13800138000",
        number=8613800138000,
        elapsed_ns=1733400000123,
    )
    line = json.loads(captured.getvalue())
    assert line["request_id"] == "conformance-9e240d585348d4"
    assert line["reason"] == "no account for 1380*****00"
    assert line["number"] == "8613*******00"
    assert line["elapsed_ns"] == 1733400000123


def test_processor_leaves_the_timestamp_alone() -> None:
    """The timestamp is never taken for a number."""
    event = {"timestamp": "2026-12-05T13800138000", "msg": "+8613800138000"}
    assert mask_phone_numbers(None, "info", event) == {
        "timestamp": "2026-12-05T13800138000",
        "msg": "+861********00",
    }
