"""The site's TOML configuration: what it accepts, and an error naming the key for the rest."""

from __future__ import annotations

import copy
import subprocess
import sys
import tomllib
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from onecert.adapters.sql import ConfigError, load_config, parse_config, to_utc
from onecert.adapters.sql._values import to_bool, to_kind
from onecert.sdk import BindingKind, ProviderCategory
from tests.sql_adapter.sql_site import MINIMAL_CONFIG


def _with(changes: dict[str, Any], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL_CONFIG)
    for dotted in drop:
        table, _, key = dotted.partition(".")
        if key:
            del data[table][key]
        else:
            del data[table]
    for dotted, value in changes.items():
        *tables, key = dotted.split(".")
        target = data
        for table in tables:
            target = target.setdefault(table, {})
        target[key] = value
    return data


def test_minimal_config_and_defaults(tmp_path: Path) -> None:
    """A minimal file gets the documented defaults, paths resolved beside it."""
    config = parse_config(MINIMAL_CONFIG, base_dir=tmp_path, name="site")
    assert config.provider.id == "example-forum"
    assert config.provider.category is ProviderCategory.FORUM
    assert config.database.url == f"sqlite+aiosqlite:///{tmp_path / 'site.db'}"
    assert config.database.statement_timeout_s == 2.0
    assert config.database.pool_size == 5
    assert config.database.tz() is UTC
    assert config.queries.account_ref_type == "text"
    assert config.columns.mapped() == {"account_ref": "id", "display_name": "nickname"}
    assert config.defaults.kind is BindingKind.LOGIN
    assert config.defaults.unbindable is True
    assert config.default_country == "86"
    assert config.server.listen == "[::]:50061"
    assert config.server.gateway_jwks == tmp_path / "keys/gateway.jwks.json"
    assert config.server.gateway_issuer == "onecert-gateway"
    assert config.server.idempotency_db == tmp_path / "site.idempotency.db"


def test_documented_config_parses(tmp_path: Path) -> None:
    """The full example in docs/sql-adapter.md is a valid configuration, read as documented."""
    doc = (Path(__file__).parents[2] / "docs" / "sql-adapter.md").read_text()
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse_config(tomllib.loads(block), base_dir=tmp_path, name="site")
    assert config.database.url == "postgresql+asyncpg://onecert@db.internal/site"
    assert config.columns.mapped()["kind"] == "account_kind"
    assert config.columns.bound_not_before == "created_at"
    assert config.times["bound_not_before"].format == "unix"
    assert config.queries.max_unbind_rows == 10
    assert "{phone:" not in config.queries.list_bindings
    assert "REPLACE(phone, ' ', '')" in config.queries.list_bindings
    assert config.defaults.kinds == {
        "wallet": BindingKind.PAYMENT,
        "sms_2fa": BindingKind.TWO_FACTOR,
    }
    assert config.server.tls is not None
    assert config.server.tls.client_ca == tmp_path / "keys/ca.pem"
    assert config.server.idempotency_db == tmp_path / "site.idempotency.db"
    assert config.queries.numbers == "SELECT phone FROM users WHERE phone IS NOT NULL"
    assert config.routing is not None
    assert config.routing.gateway == "gateway.example:443"
    assert config.routing.cert == tmp_path / "keys/site-client.pem"


def test_load_config_reads_the_example(tmp_path: Path) -> None:
    """The shipped example parses, its database beside it."""
    example = Path(__file__).parents[2] / "examples" / "sql-site" / "site.toml"
    config = load_config(example)
    assert config.provider.id == "example-forum"
    assert config.database.url.endswith("/examples/sql-site/site.db")
    assert config.database.timezone == "Asia/Shanghai"
    assert config.server.idempotency_db == example.parent / "site.idempotency.db"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:////srv/site.db", "sqlite+aiosqlite:////srv/site.db"),
        ("sqlite+aiosqlite:////srv/site.db?mode=rw", "sqlite+aiosqlite:////srv/site.db?mode=rw"),
        ("postgresql://u:p@db/site", "postgresql+asyncpg://u:p@db/site"),
        ("postgres://u@db/site", "postgresql+asyncpg://u@db/site"),
        ("postgresql+asyncpg://u@db/site", "postgresql+asyncpg://u@db/site"),
        ("mysql://root@db:3306/site", "mysql+aiomysql://root@db:3306/site"),
        ("mariadb://root@db/site", "mariadb+aiomysql://root@db/site"),
        # A plain file path is a SQLite file, as everywhere onecert takes a database.
        ("/srv/site.db", "sqlite+aiosqlite:////srv/site.db"),
        ("site.db", "sqlite+aiosqlite:////tmp/site.db"),
    ],
)
def test_sync_url_spellings_map_to_async_drivers(given: str, expected: str) -> None:
    """The URLs a site copies from its app settings map to the async drivers."""
    config = parse_config(_with({"database.url": given}), base_dir="/tmp")
    assert config.database.url == expected


def test_url_from_environment_and_password_hidden(tmp_path: Path) -> None:
    """url_env reads the URL from the environment; messages never show its password."""
    data = _with({"database.url_env": "SITE_DB"}, drop=("database.url",))
    config = parse_config(
        data, base_dir=tmp_path, environ={"SITE_DB": "postgresql://app:s3cret@db/site"}
    )
    assert config.database.url == "postgresql+asyncpg://app:s3cret@db/site"
    assert "s3cret" not in config.database.safe_url
    assert config.database.safe_url == "postgresql+asyncpg://app:***@db/site"
    with pytest.raises(ConfigError) as err:
        parse_config(
            _with({"database.url": "postgresql+psycopg2://app:s3cret@db/site"}),
            base_dir=tmp_path,
        )
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize(
    ("changes", "drop", "message"),
    [
        ({}, ("provider",), r"\[provider\] is required"),
        ({"provider.id": "Example Forum"}, (), r"provider\.id must be 1 to 64 characters"),
        ({"provider.category": "news"}, (), r"provider\.category must be one of"),
        ({}, ("provider.name",), r"provider\.name is required"),
        ({"provider.nmae": "x"}, (), r"unknown key 'provider\.nmae' \(did you mean 'name'\?\)"),
        ({"qeuries": {}}, (), r"unknown key 'qeuries' \(did you mean 'queries'\?\)"),
        ({}, ("database.url",), r"database needs exactly one of url .* or url_env"),
        ({"database.url_env": "X"}, (), r"database needs exactly one of url"),
        ({"database.url": ""}, (), r"database\.url must be a non-empty string"),
        ({"database.url": "oracle://db/site"}, (), r"unsupported database 'oracle'"),
        (
            {"database.url": "postgresql+psycopg2://db/site"},
            (),
            r"database\.url: the adapter uses the async driver postgresql\+asyncpg",
        ),
        ({"database.url": "sqlite:///:memory:"}, (), r"in-memory SQLite database"),
        ({"database.url": "sqlite://host/x.db"}, (), r"a SQLite URL has no host"),
        ({"database.statement_timeout_s": 0}, (), r"statement_timeout_s must be more than zero"),
        ({"database.statement_timeout_s": "2"}, (), r"statement_timeout_s must be a number"),
        ({"database.statement_timeout_s": 301}, (), r"statement_timeout_s must be at most 300"),
        ({"database.pool_size": 0}, (), r"database\.pool_size must be at least 1"),
        ({"database.timezone": "Mars/Base"}, (), r"database\.timezone must be an IANA time zone"),
        ({}, ("queries.unbind",), r"queries\.unbind is required"),
        (
            {"queries.list_bindings": "DELETE FROM users WHERE phone IN :phones"},
            (),
            r"queries\.list_bindings must start with SELECT or WITH, not 'DELETE'",
        ),
        (
            {"queries.list_bindings": "SELECT id FROM users WHERE phone = :msisdn"},
            (),
            r"queries\.list_bindings must use the bound parameter :phones",
        ),
        (
            {"queries.list_bindings": "SELECT id FROM users WHERE phone IN :phones AND x = :y"},
            (),
            r"queries\.list_bindings uses :y; the adapter binds only :msisdn, :phones",
        ),
        (
            {"queries.unbind": "SELECT 1 WHERE :account_ref IN :phones"},
            (),
            r"queries\.unbind must start with UPDATE or DELETE, not 'SELECT'",
        ),
        (
            {"queries.unbind": "UPDATE users SET phone = NULL WHERE phone IN :phones"},
            (),
            r"queries\.unbind must use the bound parameter :account_ref",
        ),
        (
            {"queries.unbind": "UPDATE users SET phone = NULL WHERE id = :account_ref"},
            (),
            r"queries\.unbind must check the number with :phones or :msisdn",
        ),
        ({"queries.account_ref_type": "uuid"}, (), r"account_ref_type must be 'text' or"),
        ({"queries.max_rows": 0}, (), r"queries\.max_rows must be at least 1"),
        ({}, ("columns.account_ref",), r"columns\.account_ref is required"),
        ({"columns.nickname": "nickname"}, (), r"unknown key 'columns\.nickname'"),
        ({"columns.display_name": ""}, (), r"columns\.display_name must be a non-empty string"),
        ({"defaults.kind": "sms"}, (), r"defaults\.kind must be one of login, payment"),
        ({"defaults.unbindable": "yes"}, (), r"defaults\.unbindable must be true or false"),
        ({"kinds.wallet": "money"}, (), r"kinds\.wallet must be one of login"),
        ({"phones.default_country": "8"}, (), r"phones\.default_country must be an E\.164"),
        ({}, ("server.gateway_jwks",), r"server\.gateway_jwks is required"),
        ({}, ("server.insecure",), r"\[server\.tls\] \(cert, key, client_ca\) is required"),
        (
            {"server.tls": {"cert": "c.pem", "key": "k.pem"}},
            (),
            r"\[server\.tls\] and server\.insecure = true contradict",
        ),
        ({"server.tls": {"cert": "c.pem"}, "server.insecure": False}, (), r"server\.tls\.key"),
        ({"server.listen": "50061"}, (), r"server\.listen must be HOST:PORT"),
        ({"server.log_level": "loud"}, (), r"server\.log_level must be one of"),
        ({"server.max_concurrent_rpcs": 0}, (), r"max_concurrent_rpcs must be at least 1"),
    ],
)
def test_config_errors_name_the_key(
    changes: dict[str, Any], drop: tuple[str, ...], message: str
) -> None:
    """Each invalid or missing key is refused with a message naming it."""
    with pytest.raises(ConfigError, match=message):
        parse_config(_with(changes, drop=drop), base_dir="/tmp")


def test_unset_url_env_is_named() -> None:
    """A url_env naming an unset variable says which variable."""
    data = _with({"database.url_env": "SITE_DB_URL"}, drop=("database.url",))
    with pytest.raises(ConfigError, match=r"database\.url_env names .* SITE_DB_URL, which is not"):
        parse_config(data, base_dir="/tmp", environ={})


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    """A missing file or broken TOML is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[provider\nid = 1")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(broken)


def test_kinds_defaults_and_memory_store(tmp_path: Path) -> None:
    """Kind aliases, defaults and an in-memory answer store are read as written."""
    config = parse_config(
        _with(
            {
                "kinds.wallet": "payment",
                "kinds.SMS": "LOGIN",
                "defaults.kind": "contact",
                "defaults.unbindable": False,
                "server.idempotency_db": ":memory:",
                "server.tls": {"cert": "s.pem", "key": "s.key", "client_ca": "ca.pem"},
                "server.insecure": False,
                "queries.account_ref_type": "integer",
                "phones.default_country": "44",
            }
        ),
        base_dir=tmp_path,
    )
    assert config.defaults.kinds == {"wallet": BindingKind.PAYMENT, "SMS": BindingKind.LOGIN}
    assert config.defaults.kind is BindingKind.CONTACT
    assert config.defaults.unbindable is False
    assert config.server.idempotency_db is None
    assert config.server.tls is not None
    assert config.server.tls.client_ca == tmp_path / "ca.pem"
    assert config.queries.account_ref_type == "integer"
    assert config.default_country == "44"


SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (
            datetime(2021, 3, 1, 8, 0, tzinfo=UTC).replace(tzinfo=None),
            datetime(2021, 3, 1, 0, 0, tzinfo=UTC),
        ),
        (
            datetime(2021, 3, 1, 8, 0, tzinfo=timezone(timedelta(hours=1))),
            datetime(2021, 3, 1, 7, 0, tzinfo=UTC),
        ),
        (date(2021, 3, 1), datetime(2021, 2, 28, 16, 0, tzinfo=UTC)),
        (1614556800, datetime(2021, 3, 1, tzinfo=UTC)),
        (1614556800.5, datetime(2021, 3, 1, 0, 0, 0, 500000, tzinfo=UTC)),
        (Decimal(1614556800), datetime(2021, 3, 1, tzinfo=UTC)),
        ("2021-03-01 08:00:00", datetime(2021, 3, 1, 0, 0, tzinfo=UTC)),
        ("2021-03-01T00:00:00Z", datetime(2021, 3, 1, 0, 0, tzinfo=UTC)),
        ("2021-03-01T08:00:00+08:00", datetime(2021, 3, 1, 0, 0, tzinfo=UTC)),
    ],
)
def test_timestamps_become_aware_utc(value: object, expected: datetime | None) -> None:
    """Naive values are read in the configured zone; ints are epoch seconds; strings ISO 8601."""
    result = to_utc(value, timezone=SHANGHAI)
    assert result == expected
    if result is not None:
        assert result.tzinfo is UTC


@pytest.mark.parametrize("value", [True, "yesterday", -1, 10**13, float("nan"), b"2021", [1]])
def test_unreadable_timestamps_are_refused(value: object) -> None:
    """Booleans, free text, milliseconds and other types are not timestamps."""
    with pytest.raises((ValueError, TypeError), match=r"timestamp|epoch"):
        to_utc(value)


def test_flags_and_kinds() -> None:
    """Flags read from booleans, 0/1 and words; kinds from aliases then their own names."""
    assert [to_bool(v) for v in (True, 0, 1, "Yes", "f", b"\x01", None)] == [
        True,
        False,
        True,
        True,
        False,
        True,
        None,
    ]
    with pytest.raises(ValueError, match="not a flag"):
        to_bool(2)
    aliases = {"Wallet": BindingKind.PAYMENT}
    assert to_kind("wallet", aliases=aliases) is BindingKind.PAYMENT
    assert to_kind("TWO_FACTOR", aliases=aliases) is BindingKind.TWO_FACTOR
    assert to_kind(None, aliases=aliases) is None
    with pytest.raises(ValueError, match=r"\[kinds\]"):
        to_kind("sms", aliases=aliases)


def test_package_imports_without_sqlalchemy() -> None:
    """Importing the adapter package (config, phones) does not import SQLAlchemy."""
    code = (
        "import sys, onecert.adapters, onecert.adapters.sql; "
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
