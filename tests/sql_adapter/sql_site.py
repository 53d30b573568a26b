"""The test site's users table: its rows, its DDL per backend, a handle on it, the site open,
the conformance kit run against it, and the committed example site."""

from __future__ import annotations

import sqlite3
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from onecert.adapters.sql import SiteConfig, SqlSite, parse_config
from onecert.sdk.conformance import Report, check_provider
from onecert.sdk.testing import FakeGateway, ProviderEnvironment, serve_in_process

SHANGHAI = ZoneInfo("Asia/Shanghai")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sql-site"


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A naive Beijing time, as the test site stores its timestamps."""
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).replace(tzinfo=None)


def example_site(tmp_path: Path) -> dict[str, Any]:
    """The committed example site's configuration (examples/sql-site), its database a
    SQLite file in ``tmp_path`` made from its schema.sql (once)."""
    db = tmp_path / "site.db"
    if not db.exists():
        with sqlite3.connect(db) as conn:
            conn.executescript((EXAMPLE / "schema.sql").read_text())
    data = tomllib.loads((EXAMPLE / "site.toml").read_text())
    data["database"]["url"] = f"sqlite:///{db}"
    return data


# The number most tests ask about, the formats it is stored in, and others.
NUMBER = "+8613800138000"
OTHER_NUMBER = "+8613900139000"
UNBIND_NUMBER = "+8613700137000"
UNBIND_ACCOUNT = "u5"

# The smallest configuration that parses (a users table; no database behind it):
# the tests of the configuration change it one key at a time.
MINIMAL_CONFIG: dict[str, Any] = {
    "provider": {"id": "example-forum", "name": "Example Forum", "category": "forum"},
    "database": {"url": "sqlite:///site.db"},
    "queries": {
        "list_bindings": "SELECT id, nickname FROM users WHERE phone IN :phones",
        "unbind": "UPDATE users SET phone = NULL WHERE id = :account_ref AND phone IN :phones",
    },
    "columns": {"account_ref": "id", "display_name": "nickname"},
    "server": {"gateway_jwks": "keys/gateway.jwks.json", "insecure": True},
}

# (id, nickname, phone as stored, bound_at (naive, the site's local time),
#  last_login_at (epoch seconds), kind, unbindable)
USERS: tuple[tuple[Any, ...], ...] = (
    ("u1", "zhangsan", "+8613800138000", local(2021, 3, 1, 9, 30), 1735689600, "login", 1),
    ("u2", "lisi", "138-0013-8000", local(2014, 6, 9, 20, 15), 1420070400, "wallet", 1),
    ("u3", "wangwu", "0086 138 0013 8000", local(2019, 11, 20, 8), None, None, 0),
    ("u4", "zhaoliu", "8613800138000", local(2016, 2, 2, 12), 1700000000, "2FA", None),
    ("u5", "sunqi", "13700137000", local(2022, 7, 15, 18, 45), 1740000000, "login", 1),
    ("u6", "zhouba", "+86 139 0013 9000", local(2020, 1, 1), 1730000000, "login", 1),
    ("u7", "wujiu", "13800138001", local(2020, 1, 1), 1730000000, "login", 1),
    ("u8", "zhengshi", None, None, 1700000000, "login", 1),
)

DDL = {
    "sqlite": (
        "CREATE TABLE {t} (id VARCHAR(64) PRIMARY KEY, nickname VARCHAR(64) NOT NULL, "
        "phone VARCHAR(32), phone_bound_at TEXT, last_login_at BIGINT, kind VARCHAR(16), "
        "unbindable INTEGER)"
    ),
    "postgresql": (
        "CREATE TABLE {t} (id VARCHAR(64) PRIMARY KEY, nickname VARCHAR(64) NOT NULL, "
        "phone VARCHAR(32), phone_bound_at TIMESTAMP, last_login_at BIGINT, "
        "kind VARCHAR(16), unbindable BOOLEAN)"
    ),
    "mysql": (
        "CREATE TABLE {t} (id VARCHAR(64) PRIMARY KEY, nickname VARCHAR(64) NOT NULL, "
        "phone VARCHAR(32), phone_bound_at DATETIME, last_login_at BIGINT, "
        "kind VARCHAR(16), unbindable TINYINT(1))"
    ),
}


@dataclass
class SiteDB:
    """A site's users table for one test: where it is and how to look inside."""

    backend: str
    url: str
    table: str
    engine: AsyncEngine
    base_dir: Path

    async def sql(self, statement: str, params: dict[str, Any] | None = None) -> None:
        """Run a statement of the test's own (``{t}`` is the table name)."""
        async with self.engine.begin() as conn:
            await conn.execute(text(statement.format(t=self.table)), params or {})

    async def phone_of(self, account: str) -> Any:
        """The phone column of ``account``; KeyError if the row is gone."""
        async with self.engine.connect() as conn:
            result = await conn.execute(
                text(f"SELECT phone FROM {self.table} WHERE id = :id"), {"id": account}
            )
            rows = result.all()
        if not rows:
            raise KeyError(account)
        return rows[0][0]

    async def snapshot(self) -> list[tuple[Any, ...]]:
        """Every row, ordered by id."""
        async with self.engine.connect() as conn:
            result = await conn.execute(text(f"SELECT * FROM {self.table} ORDER BY id"))
            return [tuple(row) for row in result.all()]

    def config_data(self, **sections: dict[str, Any]) -> dict[str, Any]:
        """A config document for this table; ``sections`` replace keys per table."""
        data: dict[str, Any] = {
            "provider": {"id": "test-site", "name": "Test Site", "category": "forum"},
            "database": {
                "url": self.url,
                "statement_timeout_s": 5.0,
                "timezone": "Asia/Shanghai",
            },
            "queries": {
                "list_bindings": (
                    "SELECT id, nickname, phone, phone_bound_at, last_login_at, kind, "
                    f"unbindable FROM {self.table} WHERE phone IN :phones"
                ),
                "unbind": (
                    f"UPDATE {self.table} SET phone = NULL "
                    "WHERE id = :account_ref AND phone IN :phones"
                ),
            },
            "columns": {
                "account_ref": "id",
                "display_name": "nickname",
                "phone": "phone",
                "bound_at": "phone_bound_at",
                "last_used_at": "last_login_at",
                "kind": "kind",
                "unbindable": "unbindable",
            },
            "kinds": {"wallet": "payment", "2fa": "two_factor"},
            "server": {
                "listen": "127.0.0.1:0",
                "gateway_jwks": "gateway.jwks.json",
                "insecure": True,
                "idempotency_db": ":memory:",
            },
        }
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        return data

    def config(self, **sections: dict[str, Any]) -> SiteConfig:
        return parse_config(self.config_data(**sections), base_dir=self.base_dir)


@asynccontextmanager
async def opened(config: SiteConfig, gateway: FakeGateway) -> AsyncIterator[ProviderEnvironment]:
    """The site opened (and checked), called as the gateway would, without a network."""
    site = await SqlSite.open(config)
    try:
        yield ProviderEnvironment(site.provider, gateway=gateway)
    finally:
        await site.close()


async def conformance_report(
    config: SiteConfig, gateway: FakeGateway, *, unbind: tuple[str, str]
) -> Report:
    """The conformance kit's report on the site served over gRPC: NUMBER and OTHER_NUMBER
    are known, ``unbind`` (number, account) may really be unbound."""
    site = await SqlSite.open(config)
    try:
        async with serve_in_process(site.provider, gateway=gateway) as running:
            return await check_provider(
                target=running.address,
                warrant_key=gateway.key,
                provider_id=config.provider.id,
                known_numbers=[NUMBER, OTHER_NUMBER],
                unbind=unbind,
            )
    finally:
        await site.close()
