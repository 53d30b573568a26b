"""The SQL adapter against real databases: SQLite always, PostgreSQL and MariaDB when set.

Each test runs once per backend on its own users table (see conftest.py).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from sqlalchemy import event
from structlog.testing import capture_logs

from onecert.adapters.sql import (
    NO_SUCH_ACCOUNT,
    DatabaseUnavailableError,
    MappingError,
    SqlSite,
    parse_config,
)
from onecert.sdk import BindingKind, CallInfo, UnbindOutcome, UnbindReason, UnbindRequest
from onecert.sdk.testing import CallError, FakeGateway, ProviderEnvironment
from tests.sql_adapter.sql_site import (
    NUMBER,
    OTHER_NUMBER,
    UNBIND_ACCOUNT,
    UNBIND_NUMBER,
    SiteDB,
    conformance_report,
    opened,
)

SLOW_NUMBER = "+8613600136000"


async def test_stored_formats_found_and_columns_mapped(
    site_db: SiteDB, gateway: FakeGateway
) -> None:
    """Accounts holding the number in any stored format are found, with names, kinds,
    flags and times mapped as configured."""
    async with opened(site_db.config(), gateway) as env:
        bindings = {b.account_ref: b for b in await env.list_bindings(NUMBER)}
    # u7 holds a number one digit away, u6 another number: neither is listed.
    assert sorted(bindings) == ["u1", "u2", "u3", "u4"]
    u1, u2, u3, u4 = (bindings[ref] for ref in ("u1", "u2", "u3", "u4"))
    assert [b.display_name for b in (u1, u2, u3, u4)] == ["zhangsan", "lisi", "wangwu", "zhaoliu"]
    # "wallet" and "2FA" through [kinds]; NULL falls back to the default kind.
    assert [b.kind for b in (u1, u2, u3, u4)] == [
        BindingKind.LOGIN,
        BindingKind.PAYMENT,
        BindingKind.LOGIN,
        BindingKind.TWO_FACTOR,
    ]
    # 0 is "not unbindable"; NULL falls back to the default (true).
    assert [b.unbindable for b in (u1, u2, u3, u4)] == [True, True, False, True]
    # Naive times in the table are Beijing time.
    assert u1.bound_at == datetime(2021, 3, 1, 1, 30, tzinfo=UTC)
    assert u2.bound_at == datetime(2014, 6, 9, 12, 15, tzinfo=UTC)
    assert u1.last_used_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert u3.last_used_at is None


async def test_unknown_number_is_an_empty_list(site_db: SiteDB, gateway: FakeGateway) -> None:
    """A number no account holds is an empty list."""
    async with opened(site_db.config(), gateway) as env:
        assert await env.list_bindings("+8613500135000") == []
        assert await env.list_bindings("+14155550100") == []


async def test_rows_holding_another_number_are_dropped(
    site_db: SiteDB, gateway: FakeGateway
) -> None:
    """A row the query matches loosely but whose phone reads as another number is dropped."""
    loose = (
        f"SELECT id, nickname, phone FROM {site_db.table} "
        "WHERE phone IN :phones OR phone LIKE '1380013800%'"
    )
    config = parse_config(
        site_db.config_data(queries={"list_bindings": loose})
        | {"columns": {"account_ref": "id", "display_name": "nickname", "phone": "phone"}},
        base_dir=site_db.base_dir,
    )
    async with opened(config, gateway) as env:
        refs = sorted(b.account_ref for b in await env.list_bindings(NUMBER))
    assert refs == ["u1", "u2", "u3", "u4"]
    # Without the phone column mapped, the site's query is taken at its word.
    unchecked = parse_config(
        site_db.config_data(queries={"list_bindings": loose})
        | {"columns": {"account_ref": "id", "display_name": "nickname"}},
        base_dir=site_db.base_dir,
    )
    async with opened(unchecked, gateway) as env:
        refs = sorted(b.account_ref for b in await env.list_bindings(NUMBER))
    assert refs == ["u1", "u2", "u3", "u4", "u7"]


async def test_unbind_detaches_the_number_and_keeps_the_account(
    site_db: SiteDB, gateway: FakeGateway
) -> None:
    """An unbind sets the number to NULL, the account row stays, and the same
    request id twice changes the table once."""
    rows_before = len(await site_db.snapshot())
    async with opened(site_db.config(), gateway) as env:
        first = await env.unbind(UNBIND_NUMBER, UNBIND_ACCOUNT, request_id="ticket-1")
        assert first.outcome is UnbindOutcome.DONE
        assert await site_db.phone_of(UNBIND_ACCOUNT) is None
        assert len(await site_db.snapshot()) == rows_before
        assert await env.list_bindings(UNBIND_NUMBER) == []

        # The user binds the number again; a redelivery of the old ticket
        # must not take it away a second time.
        await site_db.sql("UPDATE {t} SET phone = '13700137000' WHERE id = 'u5'")
        again = await env.unbind(UNBIND_NUMBER, UNBIND_ACCOUNT, request_id="ticket-1")
        assert again == first
        assert await site_db.phone_of(UNBIND_ACCOUNT) == "13700137000"

        # A new ticket is a new unbind.
        fresh = await env.unbind(UNBIND_NUMBER, UNBIND_ACCOUNT, request_id="ticket-2")
        assert fresh.outcome is UnbindOutcome.DONE
        assert await site_db.phone_of(UNBIND_ACCOUNT) is None


async def test_resumed_unbind_of_a_detached_account_answers_done(
    site_db: SiteDB, gateway: FakeGateway
) -> None:
    """An unbind whose earlier call committed and then died before its answer was recorded
    (the SDK marks the redelivery resumed) answers DONE, not "no such account", and
    changes nothing more; an unbind that is not resumed still answers REJECTED."""
    site = await SqlSite.open(site_db.config())
    try:
        info = CallInfo(audience=site.provider.id, purpose="unbind", query_id="", warrant_id="")

        def request(request_id: str, *, resumed: bool) -> UnbindRequest:
            return UnbindRequest(
                request_id=request_id,
                msisdn=UNBIND_NUMBER,
                account_ref=UNBIND_ACCOUNT,
                reason=UnbindReason.OWNER_REQUEST,
                resumed=resumed,
            )

        first = await site.unbind(request("ticket-r", resumed=False), info)
        assert first.outcome is UnbindOutcome.DONE
        after_first = await site_db.snapshot()
        resumed = await site.unbind(request("ticket-r", resumed=True), info)
        assert resumed.outcome is UnbindOutcome.DONE
        assert await site_db.snapshot() == after_first
        fresh = await site.unbind(request("ticket-s", resumed=False), info)
        assert fresh.outcome is UnbindOutcome.REJECTED
    finally:
        await site.close()


async def test_unbind_of_an_account_without_the_number_is_rejected(
    site_db: SiteDB, gateway: FakeGateway
) -> None:
    """No such account, or an account holding another number: REJECTED, nothing changes."""
    before = await site_db.snapshot()
    async with opened(site_db.config(), gateway) as env:
        for msisdn, ref in ((NUMBER, "no-such-user"), (NUMBER, "u5"), (OTHER_NUMBER, "u1")):
            result = await env.unbind(msisdn, ref)
            assert result.outcome is UnbindOutcome.REJECTED
            assert result.reason == NO_SUCH_ACCOUNT
    assert await site_db.snapshot() == before


@pytest.mark.parametrize(
    "account_ref",
    [
        "u1' OR '1'='1",
        "u1'; DROP TABLE {t}; --",
        "' OR 1=1 --",
        "u1\\' OR 1=1 #",
        'u1" OR "1"="1',
    ],
)
async def test_sql_injection_through_account_ref_is_only_data(
    site_db: SiteDB, gateway: FakeGateway, account_ref: str
) -> None:
    """An account ref written as SQL is bound as a value: REJECTED, the table unchanged."""
    before = await site_db.snapshot()
    async with opened(site_db.config(), gateway) as env:
        result = await env.unbind(NUMBER, account_ref.format(t=site_db.table))
    assert result.outcome is UnbindOutcome.REJECTED
    assert await site_db.snapshot() == before


async def test_sql_injection_through_msisdn_never_reaches_sql(
    site_db: SiteDB, gateway: FakeGateway
) -> None:
    """A number that is not E.164 is refused with INVALID_ARGUMENT before any statement runs."""
    before = await site_db.snapshot()
    site = await SqlSite.open(site_db.config())
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(site.engine.sync_engine, "before_cursor_execute", record)
    try:
        env = ProviderEnvironment(site.provider, gateway=gateway)
        for msisdn in ("+86' OR '1'='1", "13800138000' OR 1=1 --", "+8613800138000; DROP"):
            with pytest.raises(CallError) as err:
                await env.list_bindings(msisdn, warrant=gateway.warrant(msisdn))
            assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(CallError) as err:
                await env.unbind(msisdn, "u1", warrant=gateway.warrant(msisdn, purpose="unbind"))
            assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        event.remove(site.engine.sync_engine, "before_cursor_execute", record)
        await site.close()
    assert statements == []
    assert await site_db.snapshot() == before


async def test_conformance_kit_passes(site_db: SiteDB, gateway: FakeGateway) -> None:
    """Served over gRPC, the site passes every check of the conformance kit, unbind included."""
    report = await conformance_report(
        site_db.config(), gateway, unbind=(UNBIND_NUMBER, UNBIND_ACCOUNT)
    )
    assert report.ok, report.to_table()
    assert all(r.passed for r in report.results), report.to_table()
    assert await site_db.phone_of(UNBIND_ACCOUNT) is None


async def test_mismatched_mapping_is_refused_at_start(site_db: SiteDB) -> None:
    """Mapped columns the query does not return are all named, with what it does return."""
    config = site_db.config(columns={"display_name": "nick", "bound_at": "bound"})
    with pytest.raises(MappingError) as err:
        await SqlSite.open(config)
    message = str(err.value)
    assert "'nick' (columns.display_name)" in message
    assert "'bound' (columns.bound_at)" in message
    assert "it returns id, nickname, phone, phone_bound_at, last_login_at, kind, unbindable" in (
        message
    )


async def test_statements_that_fail_are_refused_at_start(site_db: SiteDB) -> None:
    """A query on a missing table or column, or an unbind matching rows it must not,
    stops the start with the key named, and changes nothing."""
    before = await site_db.snapshot()
    t = site_db.table
    cases = [
        (
            {"list_bindings": "SELECT id FROM no_such_table_x WHERE phone IN :phones"},
            r"queries\.list_bindings fails against the database",
        ),
        (
            {
                "unbind": f"UPDATE {t} SET no_such_col = NULL WHERE id = :account_ref "
                "AND phone IN :phones"
            },
            r"queries\.unbind fails against the database",
        ),
        (
            {
                "unbind": f"UPDATE {t} SET phone = NULL WHERE (id = :account_ref "
                "AND phone IN :phones) OR id <> ''"
            },
            r"queries\.unbind matched 8 rows .* \(rolled back\)",
        ),
    ]
    for queries, message in cases:
        with pytest.raises(MappingError, match=message):
            await SqlSite.open(site_db.config(queries=queries))
    assert await site_db.snapshot() == before


async def test_integer_account_ids(site_db: SiteDB, gateway: FakeGateway) -> None:
    """With account_ref_type = "integer" integer ids work everywhere; a ref that is no
    integer is rejected without a query, one the column cannot hold is rejected too."""
    table = site_db.table + "_int"
    await site_db.sql(
        f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, phone VARCHAR(32), bound BIGINT)"
    )
    try:
        await site_db.sql(f"INSERT INTO {table} VALUES (7, '138 0013 8000', 1600000000)")
        queries = {
            "list_bindings": f"SELECT id, bound FROM {table} WHERE phone IN :phones",
            "unbind": f"UPDATE {table} SET phone = NULL WHERE id = :account_ref "
            "AND phone IN :phones",
        }
        data = site_db.config_data(queries=queries)
        data["columns"] = {"account_ref": "id", "bound_at": "bound"}
        if site_db.backend == "postgresql":
            # PostgreSQL will not compare an integer column with text: the
            # start-up check says what to do.
            with pytest.raises(MappingError, match="account_ref_type = 'integer'"):
                await SqlSite.open(parse_config(data, base_dir=site_db.base_dir))
        data["queries"]["account_ref_type"] = "integer"
        config = parse_config(data, base_dir=site_db.base_dir)
        async with opened(config, gateway) as env:
            [binding] = await env.list_bindings(NUMBER)
            assert binding.account_ref == "7"
            assert binding.bound_at == datetime.fromtimestamp(1600000000, UTC)
            for ref in ("abc", "7 OR 1=1", "99999999999999999999", "9999999999", "8"):
                rejected = await env.unbind(NUMBER, ref)
                assert rejected.outcome is UnbindOutcome.REJECTED
            done = await env.unbind(NUMBER, "7")
            assert done.outcome is UnbindOutcome.DONE
    finally:
        await site_db.sql(f"DROP TABLE IF EXISTS {table}")


_SLOW = {
    "sqlite": (
        "(WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r "
        "WHERE i < 2000000000) SELECT count(*) FROM r) > 0"
    ),
    "postgresql": "pg_sleep(3) IS NOT NULL",
    "mysql": "SLEEP(3) = 0",
}


@pytest.mark.parametrize(
    ("statement_timeout_s", "time_limit", "code"),
    [
        # The database's limit comes first: it stops the statement.
        (0.3, 10.0, grpc.StatusCode.UNAVAILABLE),
        # The gateway's deadline comes first: the statement ends with the call.
        (10.0, 0.3, grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
    ids=["statement_timeout", "deadline"],
)
async def test_statement_timeout_ends_a_slow_query(
    site_db: SiteDB,
    gateway: FakeGateway,
    statement_timeout_s: float,
    time_limit: float,
    code: grpc.StatusCode,
) -> None:
    """A query running past statement_timeout_s is stopped by the database and answered
    UNAVAILABLE; past the gateway's shorter deadline, DEADLINE_EXCEEDED; the site then
    answers normally (the pool serves the next call)."""
    await site_db.sql(
        "INSERT INTO {t} (id, nickname, phone) VALUES ('slow', 'slow', :phone)",
        {"phone": SLOW_NUMBER},
    )
    slow = (
        f"SELECT id, nickname FROM {site_db.table} WHERE phone IN :phones "
        f"AND (:msisdn <> '{SLOW_NUMBER}' OR {_SLOW[site_db.backend]})"
    )
    base = site_db.config_data(queries={"list_bindings": slow})
    base["columns"] = {"account_ref": "id", "display_name": "nickname"}
    base["database"]["statement_timeout_s"] = statement_timeout_s
    async with opened(parse_config(base, base_dir=site_db.base_dir), gateway) as env:
        started = time.monotonic()
        with pytest.raises(CallError) as err:
            await env.list_bindings(SLOW_NUMBER, time_limit=time_limit)
        assert err.value.code is code
        assert time.monotonic() - started < 0.3 + 1.5
        assert [b.account_ref for b in await env.list_bindings(NUMBER)] == ["u1", "u2", "u3", "u4"]


async def test_unreachable_database(site_db: SiteDB, gateway: FakeGateway) -> None:
    """An unreachable database stops the start; once running, calls answer UNAVAILABLE."""
    data = site_db.config_data()
    data["database"]["url"] = "postgresql://nobody@127.0.0.1:1/none"
    data["database"]["statement_timeout_s"] = 1.0
    config = parse_config(data, base_dir=site_db.base_dir)
    with pytest.raises(DatabaseUnavailableError):
        await SqlSite.open(config)
    site = await SqlSite.open(config, check=False)
    try:
        env = ProviderEnvironment(site.provider, gateway=gateway)
        with pytest.raises(CallError) as err:
            await env.list_bindings(NUMBER)
        assert err.value.code is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(CallError) as err:
            await env.unbind(NUMBER, "u1")
        assert err.value.code is grpc.StatusCode.UNAVAILABLE
    finally:
        await site.close()


async def test_failing_query_is_internal_and_logs_no_number(
    site_db: SiteDB, gateway: FakeGateway
) -> None:
    """A statement failing after start (the table was dropped) answers INTERNAL, and
    nothing logged contains the number in any of its formats."""
    async with opened(site_db.config(), gateway) as env:
        await site_db.sql("DROP TABLE {t}")
        with capture_logs() as logs, pytest.raises(CallError) as err:
            await env.list_bindings(NUMBER)
        assert err.value.code is grpc.StatusCode.INTERNAL
        with capture_logs() as more, pytest.raises(CallError):
            await env.unbind(NUMBER, "u1")
    text = repr(logs + more)
    assert "queries.list_bindings failed" in text
    for digits in ("13800138000", "138 0013 8000", "138-0013-8000", "0013"):
        assert digits not in text
