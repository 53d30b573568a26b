"""Declared formats: [times.<key>] for time columns, [phones] for {phone:<column>},
several unbind statements, and binding-time columns in the config."""

from __future__ import annotations

import copy
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onecert.adapters.sql import ConfigError, parse_config, phone_variants
from onecert.adapters.sql._config import PhonesConfig, expand_phone_macros
from onecert.adapters.sql._values import to_utc_as
from tests.sql_adapter.sql_site import MINIMAL_CONFIG

# A Discuz!-like members table, where the minimal configuration has users.
MINIMAL: dict[str, Any] = {
    **MINIMAL_CONFIG,
    "queries": {
        "list_bindings": "SELECT uid, regdate, changed FROM members WHERE mobile IN :phones",
        "unbind": "UPDATE members SET mobile = '' WHERE uid = :account_ref AND mobile IN :phones",
    },
    "columns": {"account_ref": "uid", "bound_not_before": "regdate"},
}
REGISTERED = datetime(2021, 3, 1, 1, 30, tzinfo=UTC)


def config(tmp_path: Path, **tables: dict[str, Any]) -> Any:
    data = copy.deepcopy(MINIMAL)
    for name, values in tables.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data, base_dir=tmp_path)


# ------------------------------------------------------------------ times


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        (1614562200, {"format": "unix"}, REGISTERED),
        ("1614562200", {"format": "unix"}, REGISTERED),
        (b"1614562200", {"format": "unix"}, REGISTERED),
        (Decimal("1614562200.0"), {"format": "unix"}, REGISTERED),
        (0, {"format": "unix", "zero_is_null": True}, None),
        ("0", {"format": "unix", "zero_is_null": True}, None),
        ("", {"format": "unix", "zero_is_null": True}, None),
        ("0000-00-00 00:00:00", {"zero_is_null": True}, None),
        (0, {"format": "unix"}, datetime(1970, 1, 1, tzinfo=UTC)),
        (1614533400, {"format": "unix", "offset_s": 28800}, REGISTERED),
        (
            "2021-03-01 09:30:00",
            {"format": "text", "timezone": ZoneInfo("Asia/Shanghai")},
            REGISTERED,
        ),
        (datetime(2021, 3, 1, 1, 30), {}, REGISTERED),  # noqa: DTZ001  # a naive DATETIME, read in UTC
        (None, {"format": "unix"}, None),
    ],
)
def test_declared_time_formats(value: object, kwargs: dict[str, Any], expected: object) -> None:
    """Unix seconds as numbers or text, 0 as never, a shifted clock and a zone read as declared."""
    assert to_utc_as(value, **kwargs) == expected


@pytest.mark.parametrize(
    ("value", "fmt", "error"),
    [
        ("2021-03-01", "unix", ValueError),
        ("16145e6", "unix", ValueError),
        (datetime(2021, 3, 1, tzinfo=UTC), "unix", TypeError),
        (True, "unix", TypeError),
        (1614562200, "text", TypeError),
        ("yesterday", "text", ValueError),
    ],
)
def test_values_not_of_the_declared_format_are_refused(
    value: object, fmt: str, error: type[Exception]
) -> None:
    """A value the declared format does not describe is an error (logged, left out)."""
    with pytest.raises(error):
        to_utc_as(value, format=fmt)


def test_times_section_parses_with_defaults(tmp_path: Path) -> None:
    """[times.<key>] sets the format; unix defaults zero_is_null to true, auto to false."""
    parsed = config(
        tmp_path,
        columns={"bound_not_after": "changed"},
        times={
            "bound_not_before": {"format": "unix", "offset_s": 28800},
            "bound_not_after": {"timezone": "Asia/Shanghai"},
        },
    )
    before, after = parsed.times["bound_not_before"], parsed.times["bound_not_after"]
    assert (before.format, before.zero_is_null, before.offset_s) == ("unix", True, 28800)
    assert (after.format, after.zero_is_null, after.timezone) == ("auto", False, "Asia/Shanghai")
    assert parsed.columns.mapped() == {
        "account_ref": "uid",
        "bound_not_before": "regdate",
        "bound_not_after": "changed",
    }


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ({"registered": {"format": "unix"}}, r"times\.registered"),
        (
            {"last_used_at": {"format": "unix"}},
            r"describes columns\.last_used_at, which is not mapped",
        ),
        (
            {"bound_not_before": {"format": "epoch"}},
            r"times\.bound_not_before\.format must be one of",
        ),
        ({"bound_not_before": {"offset_s": 100_000}}, r"times\.bound_not_before\.offset_s"),
        ({"bound_not_before": {"timezone": "Mars/Base"}}, r"IANA time zone"),
        ({"bound_not_before": {"unit": "s"}}, r"times\.bound_not_before\.unit"),
    ],
)
def test_bad_times_are_refused_naming_the_key(
    tmp_path: Path, times: dict[str, Any], message: str
) -> None:
    """Each mistake in [times] is refused with the key named."""
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, times=times)


# ----------------------------------------------------------------- unbind


def test_several_unbind_statements(tmp_path: Path) -> None:
    """queries.unbind may be a list, run in order in one transaction; each is checked."""
    statements = [
        "UPDATE profile SET mobile = '' WHERE uid = :account_ref AND mobile IN :phones",
        "UPDATE addresses SET tel = '' WHERE uid = :account_ref AND tel IN :phones",
    ]
    parsed = config(tmp_path, queries={"unbind": statements, "max_unbind_rows": 4})
    assert parsed.queries.unbind_statements == tuple(statements)
    assert parsed.queries.max_unbind_rows == 4
    with pytest.raises(ConfigError, match=r"queries\.unbind\[1\] must use the bound parameter"):
        config(
            tmp_path, queries={"unbind": [statements[0], "UPDATE a SET b = '' WHERE c IN :phones"]}
        )
    with pytest.raises(ConfigError, match=r"queries\.unbind must be a statement, or a list"):
        config(tmp_path, queries={"unbind": []})
    with pytest.raises(ConfigError, match=r"queries\.max_unbind_rows"):
        config(tmp_path, queries={"max_unbind_rows": 0})


# ----------------------------------------------------------------- phones


def test_phone_macro_expands_once_declared(tmp_path: Path) -> None:
    """{phone:<column>} becomes one REPLACE chain from [phones]; the site writes none."""
    parsed = config(
        tmp_path,
        queries={
            "list_bindings": "SELECT uid, regdate FROM members WHERE {phone:m.mobile} IN :phones"
        },
        phones={"strip": " -", "fullwidth": False},
    )
    assert parsed.queries.list_bindings == (
        "SELECT uid, regdate FROM members WHERE REPLACE(REPLACE(m.mobile, ' ', ''), '-', '') "
        "IN :phones"
    )
    for bad in ("ab", "'", "\\", 5):
        with pytest.raises(ConfigError, match=r"phones\.strip"):
            config(tmp_path, phones={"strip": bad})


def _typed(digits: str, seps: list[str], wide: bool, prefix: str) -> str:
    """``digits`` as a person might type them: separators between groups, maybe full width."""
    groups = [digits[:3], digits[3:7], digits[7:]]
    out = prefix + groups[0] + seps[0] + groups[1] + seps[1] + groups[2]
    if wide:
        out = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() or c in "+-()" else c for c in out)
    return out


@settings(max_examples=200)
@given(
    st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
    st.lists(st.sampled_from(["", " ", "-", ".", "/"]), min_size=2, max_size=2),
    st.booleans(),
    st.sampled_from(["", "+86", "86", "86-", "(+86) ", "+86 ", "0086 ", "(86)"]),
)
def test_every_typed_form_matches_after_the_declared_normalisation(
    national: str, seps: list[str], wide: bool, prefix: str
) -> None:
    """Run in SQLite, the expression turns each typed form into one of :phones' forms."""
    phones = PhonesConfig(fullwidth=True)
    stored = _typed(national, seps, wide, prefix)
    sql = expand_phone_macros("SELECT {phone:?}", phones)
    with sqlite3.connect(":memory:") as conn:
        (normalised,) = conn.execute(sql, (stored,)).fetchone()
    assert normalised in phone_variants("+86" + national, default_country="86")


def test_other_numbers_do_not_match_after_normalisation() -> None:
    """A neighbouring number, however typed, normalises to none of the asked number's forms."""
    phones = PhonesConfig(fullwidth=True)
    sql = expand_phone_macros("SELECT {phone:?}", phones)
    with sqlite3.connect(":memory:") as conn:
        wide = _typed("13800138001", ["", ""], True, "")
        for stored in ("(+86) 138-0013-8001", "86-13800138001", wide):
            (normalised,) = conn.execute(sql, (stored,)).fetchone()
            assert normalised not in phone_variants("+8613800138000", default_country="86")


def test_a_registration_column_alone_maps(tmp_path: Path) -> None:
    """A registration column maps as bound_not_before; bound_at need not be mapped."""
    parsed = config(tmp_path)
    assert "bound_at" not in parsed.columns.mapped()
    assert parsed.columns.bound_not_before == "regdate"
