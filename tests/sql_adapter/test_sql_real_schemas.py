"""Real sites' table definitions on MariaDB: Discuz! X3.4 (MyISAM), WooCommerce
(a number in two meta rows) and ECShop (MyISAM, shifted unix times).

The schemas and configs are the committed examples under ``examples/``; each
test loads one into a database of its own and drops it afterwards.
"""

from __future__ import annotations

import secrets
import tomllib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from structlog.testing import capture_logs

from onecert.adapters.sql import MappingError, SqlSite, check_report, parse_config
from onecert.sdk import UnbindOutcome
from onecert.sdk.testing import CallError, FakeGateway, ProviderEnvironment
from tests.sql_adapter.sql_site import NUMBER, OTHER_NUMBER, UNBIND_NUMBER, conformance_report
from tests.sql_adapter.sql_site import opened as opened_site

pytestmark = pytest.mark.mysql

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# The account the conformance kit may unbind in each example.
UNBIND_ACCOUNT = {"discuz": "5", "woocommerce": "5", "ecshop": "4"}


@dataclass
class Example:
    """One example site loaded into a fresh MariaDB database."""

    name: str
    url: str
    engine: AsyncEngine

    def data(self) -> dict[str, Any]:
        """The example's site.toml, pointed at this database, served in memory."""
        data = tomllib.loads((EXAMPLES / self.name / "site.toml").read_text())
        del data["database"]["url_env"]
        data["database"]["url"] = self.url
        data["server"] = {
            "listen": "127.0.0.1:0",
            "gateway_jwks": "gateway.jwks.json",
            "insecure": True,
            "idempotency_db": ":memory:",
        }
        return data

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        async with self.engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(sql))).all()]

    async def run(self, sql: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text(sql))


@asynccontextmanager
async def loaded(mysql_url: str, name: str) -> AsyncIterator[Example]:
    """The example ``name``'s schema.sql in a database of its own."""
    database = f"onecert_{name}_{secrets.token_hex(4)}"
    admin = create_async_engine(mysql_url)
    async with admin.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE {database} CHARACTER SET utf8mb4"))
    url = make_url(mysql_url).set(database=database, query={"charset": "utf8mb4"})
    engine = create_async_engine(url)
    try:
        schema = (EXAMPLES / name / "schema.sql").read_text(encoding="utf-8")
        lines = [ln for ln in schema.splitlines() if not ln.lstrip().startswith("--")]
        async with engine.begin() as conn:
            for statement in "\n".join(lines).split(";"):
                if statement.strip():
                    await conn.execute(text(statement))
        yield Example(name, url.render_as_string(hide_password=False), engine)
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS {database}"))
        await admin.dispose()


def opened(
    data: dict[str, Any], gateway: FakeGateway, tmp_path: Path
) -> AbstractAsyncContextManager[ProviderEnvironment]:
    """The example opened from its site.toml ``data``, as :func:`sql_site.opened` opens it."""
    return opened_site(parse_config(data, base_dir=tmp_path), gateway)


@pytest.mark.parametrize("name", ["discuz", "woocommerce", "ecshop"])
async def test_example_site_passes_the_conformance_kit(
    name: str, mysql_url: str, tmp_path: Path
) -> None:
    """Each example, configuration alone on its real table definitions, passes every
    check of the conformance kit, unbind included, over gRPC."""
    async with loaded(mysql_url, name) as example:
        data = example.data()
        gateway = FakeGateway(audience=data["provider"]["id"])
        report = await conformance_report(
            parse_config(data, base_dir=tmp_path),
            gateway,
            unbind=(UNBIND_NUMBER, UNBIND_ACCOUNT[name]),
        )
    assert report.ok, report.to_table()
    assert all(r.passed for r in report.results), report.to_table()


async def test_declared_normalisation_finds_every_typed_form(
    mysql_url: str, gateway: FakeGateway, tmp_path: Path
) -> None:
    """Discuz: 86-13800138000, (+86) 138-0013-8000 and full-width digits are found
    through {phone:...} and [phones] fullwidth, with no REPLACE() in the config."""
    async with loaded(mysql_url, "discuz") as example:
        data = example.data()
        data["provider"]["id"] = "test-site"
        assert "REPLACE" not in (EXAMPLES / "discuz" / "site.toml").read_text()
        async with opened(data, gateway, tmp_path) as env:
            found = {b.account_ref for b in await env.list_bindings(NUMBER)}
            other = {b.account_ref for b in await env.list_bindings(OTHER_NUMBER)}
    assert found == {"2", "3"}
    assert other == {"4", "6"}


async def test_registration_and_shifted_unix_times_are_read_as_declared(
    mysql_url: str, gateway: FakeGateway, tmp_path: Path
) -> None:
    """ECShop: reg_time (gmtime(), 8 h behind) becomes bound_not_before at the real
    instant, never bound_at; Discuz: a lastvisit of 0 is no time at all."""
    async with loaded(mysql_url, "ecshop") as example:
        data = example.data()
        data["provider"]["id"] = "test-site"
        async with opened(data, gateway, tmp_path) as env:
            bindings = {b.account_ref: b for b in await env.list_bindings(NUMBER)}
    zhangsan = bindings["1"]
    assert zhangsan.bound_at is None
    assert zhangsan.bound_not_before == datetime(2021, 3, 1, 1, 30, tzinfo=UTC)
    assert zhangsan.last_used_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert bindings["2"].last_used_at is None
    async with loaded(mysql_url, "discuz") as example:
        data = example.data()
        data["provider"]["id"] = "test-site"
        async with opened(data, gateway, tmp_path) as env:
            lisi = {b.account_ref: b for b in await env.list_bindings(NUMBER)}["3"]
    assert lisi.last_used_at is None
    assert lisi.bound_not_before == datetime(2014, 6, 9, 12, 15, tzinfo=UTC)


async def test_woocommerce_unbind_detaches_both_phone_rows_of_one_account(
    mysql_url: str, gateway: FakeGateway, tmp_path: Path
) -> None:
    """One account's billing_phone and shipping_phone are detached in one unbind
    (two rows: DONE, not "matched 2 rows"); another account with the number keeps it."""
    async with loaded(mysql_url, "woocommerce") as example:
        data = example.data()
        data["provider"]["id"] = "test-site"
        async with opened(data, gateway, tmp_path) as env:
            result = await env.unbind(NUMBER, "2", request_id="t-1")
            assert result.outcome is UnbindOutcome.DONE
            assert {b.account_ref for b in await env.list_bindings(NUMBER)} == {"3"}
        rows = await example.rows(
            "SELECT user_id, meta_key, meta_value FROM wp_usermeta "
            "WHERE meta_key LIKE '%phone' ORDER BY user_id, meta_key"
        )
    assert rows[:3] == [
        (2, "billing_phone", ""),
        (2, "shipping_phone", ""),
        (3, "billing_phone", "138-0013-8000"),
    ]


# An unbind whose WHERE reaches past the account (>= instead of =): it would
# also detach the number from a higher-numbered account holding it.
SLOPPY = {
    "woocommerce": (
        "UPDATE wp_usermeta SET meta_value = '' WHERE user_id >= :account_ref "
        "AND meta_key IN ('billing_phone', 'shipping_phone') AND {phone:meta_value} IN :phones"
    ),
    "discuz": (
        "UPDATE pre_common_member_profile SET mobile = '' "
        "WHERE uid >= :account_ref AND {phone:mobile} IN :phones"
    ),
}


async def test_an_unbind_reaching_another_account_is_rolled_back_on_innodb(
    mysql_url: str, gateway: FakeGateway, tmp_path: Path
) -> None:
    """On InnoDB an unbind that would detach another account too is rolled back for
    real, answered INTERNAL, and the log says so with nothing changed."""
    async with loaded(mysql_url, "woocommerce") as example:
        data = example.data()
        data["provider"]["id"] = "test-site"
        data["queries"]["unbind"] = SLOPPY["woocommerce"]
        before = await example.rows("SELECT * FROM wp_usermeta ORDER BY umeta_id")
        async with opened(data, gateway, tmp_path) as env:
            with capture_logs() as logs, pytest.raises(CallError) as err:
                await env.unbind(NUMBER, "2", request_id="t-1")
        assert err.value.code is grpc.StatusCode.INTERNAL
        assert await example.rows("SELECT * FROM wp_usermeta ORDER BY umeta_id") == before
    refused = [e for e in logs if str(e["event"]).startswith("queries.unbind refused")]
    assert refused, logs
    assert "1 other account" in refused[0]["event"]
    assert refused[0]["rollback"] == "; rolled back, nothing changed"


async def test_myisam_is_named_at_start_and_never_reported_rolled_back(
    mysql_url: str, gateway: FakeGateway, tmp_path: Path
) -> None:
    """Discuz on MyISAM: the start names the tables that cannot roll back; an unbind
    that also hit another account says NOT rolled back, answers what happened (DONE:
    the account's number is gone), and a redelivery gets that same answer."""
    async with loaded(mysql_url, "discuz") as example:
        data = example.data()
        data["provider"]["id"] = "test-site"
        data["queries"]["unbind"] = SLOPPY["discuz"]
        with capture_logs() as start:
            site = await SqlSite.open(parse_config(data, base_dir=tmp_path))
        try:
            env = ProviderEnvironment(site.provider, gateway=gateway)
            with capture_logs() as logs:
                first = await env.unbind(NUMBER, "2", request_id="t-1")
            again = await env.unbind(NUMBER, "2", request_id="t-1")
        finally:
            await site.close()
        mobiles = dict(await example.rows("SELECT uid, mobile FROM pre_common_member_profile"))
    warned = [e for e in start if "cannot roll back" in str(e["event"])]
    assert warned, start
    assert "pre_common_member_profile (MYISAM)" in warned[0]["tables"]
    assert first.outcome is UnbindOutcome.DONE
    assert again == first
    # The changes stand, and the log says which and why.
    assert mobiles[2] == ""
    assert mobiles[3] == ""
    refused = [e for e in logs if str(e["event"]).startswith("queries.unbind refused")]
    assert "NOT rolled back" in refused[0]["rollback"]
    assert "pre_common_member_profile (MYISAM)" in refused[0]["rollback"]
    assert not any("rolled back, nothing changed" in repr(e) for e in logs)


async def test_start_up_check_on_myisam_explains_instead_of_running(
    mysql_url: str, tmp_path: Path
) -> None:
    """On MyISAM the unbind is checked with EXPLAIN: a wrong column is still found,
    and the message does not claim a rollback."""
    async with loaded(mysql_url, "ecshop") as example:
        data = example.data()
        data["queries"]["unbind"] = (
            "UPDATE ecs_users SET mobile = '' WHERE user_id = :account_ref "
            "AND {phone:mobile_phone} IN :phones"
        )
        with pytest.raises(MappingError) as err:
            await SqlSite.open(parse_config(data, base_dir=tmp_path))
    message = str(err.value)
    assert "explained, not run" in message
    assert "'mobile'" in message
    assert "rolled back" not in message


@pytest.mark.parametrize(
    ("name", "unbind", "expected"),
    [
        (
            "discuz",
            "UPDATE pre_common_member_profile SET mobile = NULL "
            "WHERE uid = :account_ref AND {phone:mobile} IN :phones",
            "sets pre_common_member_profile.mobile = NULL, but that column is NOT NULL",
        ),
        (
            "ecshop",
            "UPDATE ecs_users SET mobile_phone = '', is_validated = 'no' "
            "WHERE user_id = :account_ref AND {phone:mobile_phone} IN :phones",
            "sets ecs_users.is_validated = 'no', but that column holds numbers",
        ),
        (
            "ecshop",
            "UPDATE ecs_users SET mobile_phone = 'removed on request by onecert' "
            "WHERE user_id = :account_ref AND {phone:mobile_phone} IN :phones",
            "that column holds at most 20 characters",
        ),
        (
            "woocommerce",
            "UPDATE wp_users u JOIN wp_usermeta m ON m.user_id = u.ID "
            "SET m.meta_value = '', u.user_registered = 'never' "
            "WHERE u.ID = :account_ref AND {phone:m.meta_value} IN :phones",
            "sets wp_users.user_registered = 'never', but that column holds times",
        ),
    ],
)
async def test_start_up_check_reads_the_real_schema(
    name: str, unbind: str, expected: str, mysql_url: str, tmp_path: Path
) -> None:
    """A value the column cannot take (NULL into NOT NULL, text into a number or a
    time, text too long) is refused at start with the column named, though the dry
    run matches no row."""
    async with loaded(mysql_url, name) as example:
        data = example.data()
        data["queries"]["unbind"] = unbind
        with pytest.raises(MappingError) as err:
            await SqlSite.open(parse_config(data, base_dir=tmp_path))
    assert expected in str(err.value)
    assert str(err.value).startswith("queries.unbind sets")


async def test_failing_statement_logs_its_column_unmasked(
    mysql_url: str, gateway: FakeGateway, tmp_path: Path
) -> None:
    """A column gone after start: the gateway gets INTERNAL, the operator's log names
    the column (not masked) and holds no number."""
    async with loaded(mysql_url, "ecshop") as example:
        data = example.data()
        data["provider"]["id"] = "test-site"
        async with opened(data, gateway, tmp_path) as env:
            await example.run("ALTER TABLE ecs_users CHANGE last_login last_login_at INT")
            with capture_logs() as logs, pytest.raises(CallError) as err:
                await env.list_bindings(NUMBER)
    assert err.value.code is grpc.StatusCode.INTERNAL
    failed = [e for e in logs if e["event"] == "queries.list_bindings failed"]
    assert "Unknown column 'last_login'" in failed[0]["cause"]
    assert "13800138000" not in repr(logs)


async def test_redelivery_after_a_midway_failure_on_myisam_is_done(
    mysql_url: str, gateway: FakeGateway, tmp_path: Path
) -> None:
    """On MyISAM a second statement failing after the first detached the number leaves
    that change: the log says NOT rolled back, and the redelivered unbind, finding
    nothing left to change, answers DONE rather than "no such account"."""
    async with loaded(mysql_url, "discuz") as example:
        data = example.data()
        data["provider"]["id"] = "test-site"
        data["queries"]["unbind"] = [
            data["queries"]["unbind"],
            "UPDATE pre_common_member_status SET regip = '' "
            "WHERE uid = :account_ref AND regip <> '' AND :msisdn <> ''",
        ]
        async with opened(data, gateway, tmp_path) as env:
            await example.run("ALTER TABLE pre_common_member_status DROP COLUMN regip")
            with capture_logs() as logs, pytest.raises(CallError) as err:
                await env.unbind(NUMBER, "2", request_id="t-1")
            assert err.value.code is grpc.StatusCode.INTERNAL
            await example.run(
                "ALTER TABLE pre_common_member_status ADD COLUMN regip char(15) NOT NULL DEFAULT ''"
            )
            again = await env.unbind(NUMBER, "2", request_id="t-1")
            other = await env.unbind(NUMBER, "2", request_id="t-2")
        mobiles = dict(await example.rows("SELECT uid, mobile FROM pre_common_member_profile"))
    assert mobiles[2] == ""
    (failed,) = [e for e in logs if e["event"] == "queries.unbind failed"]
    assert "NOT rolled back" in failed["rollback"]
    assert again.outcome is UnbindOutcome.DONE
    # A new request for the same account finds no such binding: that one is REJECTED.
    assert other.outcome is UnbindOutcome.REJECTED


async def test_check_report_says_what_was_not_run_on_myisam(
    mysql_url: str, gateway: FakeGateway, tmp_path: Path
) -> None:
    """--check on MyISAM says the unbind was explained, not run, and names the tables;
    on InnoDB it says the dry run was rolled back."""
    async with loaded(mysql_url, "ecshop") as example:
        myisam = await check_report(parse_config(example.data(), base_dir=tmp_path))
    async with loaded(mysql_url, "woocommerce") as example:
        innodb = await check_report(parse_config(example.data(), base_dir=tmp_path))
    assert "unbind explained, not run: ecs_users (MYISAM) cannot roll back" in myisam
    assert "rolled back" not in myisam.replace("cannot roll back", "")
    assert "unbind matches no row for a made-up account (rolled back)" in innodb


async def test_ecshop_unbind_detaches_the_number_from_both_columns_of_one_row(
    mysql_url: str, gateway: FakeGateway, tmp_path: Path
) -> None:
    """ECShop: a number in mobile_phone and home_phone of one account is detached from
    both by one unbind (several columns, one account); a number only in home_phone
    is found and read back."""
    async with loaded(mysql_url, "ecshop") as example:
        data = example.data()
        data["provider"]["id"] = "test-site"
        async with opened(data, gateway, tmp_path) as env:
            by_home = {b.account_ref for b in await env.list_bindings(OTHER_NUMBER)}
            result = await env.unbind(UNBIND_NUMBER, "4", request_id="t-1")
            left = await env.list_bindings(UNBIND_NUMBER)
        phones = await example.rows(
            "SELECT mobile_phone, home_phone FROM ecs_users "
            "WHERE user_id IN (4, 6) ORDER BY user_id"
        )
    assert by_home == {"3", "6"}
    assert result.outcome is UnbindOutcome.DONE
    assert left == []
    assert phones == [("", ""), ("13600136000", "+86 139 0013 9000")]
