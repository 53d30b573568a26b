"""Configuration of notices, checks and roles: prefixes, delivery modes, CNs, defaults."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onecert.gateway import ConfigError, parse_config
from onecert.gateway._config import CarrierConfig, parse_number_range

BASE: dict[str, Any] = {
    "gateway": {"dev_plaintext": True},
    "keys": {"warrant_key": "w.pem", "handle_key": "h.key"},
    "identity": {"issuers": [{"issuer": "https://id.example.test", "jwks": "i.json"}]},
    "carriers": [
        {"id": "cm", "address": "127.0.0.1:1", "plaintext": True, "prefixes": ["+86138"]},
    ],
    "providers": [{"id": "pay", "address": "127.0.0.1:2", "plaintext": True}],
}


def _parse(**tables: Any) -> Any:
    data = {**BASE, **tables}
    return parse_config(data, base_dir=Path("/etc/onecert"))


def _error(**tables: Any) -> str:
    with pytest.raises(ConfigError) as info:
        _parse(**tables)
    return str(info.value)


def test_defaults() -> None:
    """Unset keys take their documented defaults; CNs default to ids; push by default."""
    config = _parse()
    assert config.carriers[0].cn == "cm"
    assert config.providers[0].cn == "pay"
    assert config.providers[0].delivery == "push"
    assert config.notices.default_quiet_period_s == 90 * 86400
    assert config.notices.recycled_deadline_s == 3 * 86400
    assert config.notices.deadline_s is None
    assert config.check_recycled.rate_per_s == 10.0
    assert config.check_recycled.history_start is None
    assert config.admin.client_cns == ()


def test_explicit_values() -> None:
    """Every key is read: client CNs, poll delivery, notices, checks and admins."""
    config = _parse(
        carriers=[
            {
                "id": "cm",
                "address": "127.0.0.1:1",
                "plaintext": True,
                "prefixes": ["+86138", "+861390-+861394"],
                "client_cn": "registry.cm.example",
            }
        ],
        providers=[
            {"id": "forum", "address": "127.0.0.1:2", "plaintext": True, "delivery": "poll"}
        ],
        notices={"deadline_s": 86400, "workers": 0, "poll_wait_s": 0},
        check_recycled={"rate_per_s": 2, "burst": 5, "history_start": "2024-01-01"},
        admin={"client_cns": ["regulator"]},
    )
    assert config.carriers[0].cn == "registry.cm.example"
    assert config.carriers[0].serves("+8613920000001")
    assert config.providers[0].delivery == "poll"
    assert config.notices.deadline_s == 86400
    assert config.notices.workers == 0
    assert config.check_recycled.history_start == datetime(2024, 1, 1, tzinfo=UTC)
    assert config.admin.client_cns == ("regulator",)


def test_history_start_takes_toml_dates() -> None:
    """history_start may be a TOML date or date-time; without an offset it is UTC."""
    day = _parse(check_recycled={"history_start": date(2024, 1, 1)})
    assert day.check_recycled.history_start == datetime(2024, 1, 1, tzinfo=UTC)
    naive = _parse(check_recycled={"history_start": datetime(2024, 1, 1, 8)})  # noqa: DTZ001 - TOML local date-time
    assert naive.check_recycled.history_start == datetime(2024, 1, 1, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        (
            {"carriers": [{"id": "cm", "address": "a:1", "plaintext": True, "prefixes": ["86"]}]},
            "carriers[0].prefixes[0]: a prefix is '+' and 1 to 15 digits",
        ),
        (
            {
                "carriers": [
                    {"id": "cm", "address": "a:1", "plaintext": True, "prefixes": ["+862-+861"]}
                ]
            },
            "carriers[0].prefixes[0]: a range's ends must have the same length",
        ),
        (
            {"providers": [{"id": "p", "address": "a:1", "plaintext": True, "delivery": "pull"}]},
            "providers[0].delivery must be one of push, poll",
        ),
        ({"notices": {"lease_s": 5, "push_deadline_s": 5}}, "notices.lease_s must be longer"),
        ({"notices": {"deadlines_s": 5}}, "unknown key 'notices.deadlines_s'"),
        ({"check_recycled": {"history_start": "last year"}}, "check_recycled.history_start"),
        ({"check_recycled": {"burst": 0}}, "check_recycled.burst must be at least 1"),
        ({"admin": {"client_cns": ["pay"]}}, "client certificate CN 'pay' is claimed by"),
        (
            {
                "providers": [
                    {"id": "pay", "address": "a:1", "plaintext": True},
                    {"id": "chat", "address": "a:2", "plaintext": True, "client_cn": "pay"},
                ]
            },
            "claimed by provider 'pay' and by provider 'chat'",
        ),
    ],
)
def test_errors_name_the_key(tables: dict[str, Any], message: str) -> None:
    """A bad key stops the gateway with a message naming it."""
    assert message in _error(**tables)


def test_number_ranges() -> None:
    """Prefixes match by prefix; ranges by the leading digits, both ends included."""
    carrier = CarrierConfig(id="cm", address="a:1", prefixes=("+86138", "+861390-+861394"))
    assert carrier.serves("+8613800138000")
    assert carrier.serves("+8613900000000")
    assert carrier.serves("+8613949999999")
    assert not carrier.serves("+8613950000000")
    assert not carrier.serves("+8618000000000")
    assert not carrier.serves("+861")
    assert not CarrierConfig(id="x", address="a:1").serves("+8613800138000")
    assert parse_number_range(" +1 ") == ("+1", "+1")
    for bad in ("", "+", "1", "+1-", "+12-+1", "+2-+1", "+1234567890123456"):
        with pytest.raises(ValueError, match=r"prefix|range"):
            parse_number_range(bad)


@given(
    low=st.integers(min_value=0, max_value=9999),
    span=st.integers(min_value=0, max_value=9999),
    number=st.integers(min_value=0, max_value=10**10 - 1),
)
def test_range_membership_is_numeric_on_the_leading_digits(
    low: int, span: int, number: int
) -> None:
    """A number is in a range exactly when its leading digits lie between the ends."""
    high = min(9999, low + span)
    carrier = CarrierConfig(id="cm", address="a:1", prefixes=(f"+86{low:04d}-+86{high:04d}",))
    msisdn = f"+86{number:010d}"
    assert carrier.serves(msisdn) == (low <= int(msisdn[3:7]) <= high)
