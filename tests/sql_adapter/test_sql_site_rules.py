"""Unbind as one account's transaction, schema checks, declared phone forms and error
logs, on every backend (SQLite always, PostgreSQL and MariaDB when set)."""

from __future__ import annotations

import grpc
import pytest
from structlog.testing import capture_logs
from structlog.typing import EventDict

from onecert.adapters.sql import MappingError, SiteConfig, SqlSite
from onecert.sdk import UnbindOutcome
from onecert.sdk.testing import CallError, FakeGateway
from tests.sql_adapter.sql_site import NUMBER, UNBIND_ACCOUNT, UNBIND_NUMBER, SiteDB, opened


async def _unbind_fails_changing_nothing(
    site_db: SiteDB, config: SiteConfig, gateway: FakeGateway
) -> list[EventDict]:
    """Unbind the test account: INTERNAL, the table unchanged; returns the log entries."""
    before = await site_db.snapshot()
    async with opened(config, gateway) as env:
        with capture_logs() as logs, pytest.raises(CallError) as err:
            await env.unbind(UNBIND_NUMBER, UNBIND_ACCOUNT)
    assert err.value.code is grpc.StatusCode.INTERNAL
    assert await site_db.snapshot() == before
    return logs


async def test_statements_of_one_unbind_are_all_or_nothing(
    site_db: SiteDB, gateway: FakeGateway
) -> None:
    """Two statements run in one transaction: when the second fails, the first's change
    is rolled back (INTERNAL), and the log names the failure and says nothing changed."""
    t = site_db.table
    await site_db.sql("ALTER TABLE {t} ADD COLUMN note VARCHAR(10)")
    config = site_db.config(
        queries={
            "unbind": [
                f"UPDATE {t} SET phone = NULL WHERE id = :account_ref AND phone IN :phones",
                f"UPDATE {t} SET note = NULL WHERE id = :account_ref AND :msisdn <> ''",
            ]
        }
    )
    async with opened(config, gateway) as env:
        ok = await env.unbind(UNBIND_NUMBER, UNBIND_ACCOUNT, request_id="t-1")
        assert ok.outcome is UnbindOutcome.DONE
        await site_db.sql("UPDATE {t} SET phone = '13700137000' WHERE id = 'u5'")
        await site_db.sql("ALTER TABLE {t} DROP COLUMN note")
        with capture_logs() as logs, pytest.raises(CallError) as err:
            await env.unbind(UNBIND_NUMBER, UNBIND_ACCOUNT, request_id="t-2")
    assert err.value.code is grpc.StatusCode.INTERNAL
    assert await site_db.phone_of(UNBIND_ACCOUNT) == "13700137000"
    (failed,) = [e for e in logs if e["event"] == "queries.unbind failed"]
    assert failed["rollback"] == "; rolled back, nothing changed"
    assert failed["statement"] == "queries.unbind[1]"
    assert "note" in failed["cause"]


async def test_unbind_that_leaves_the_account_bound_is_not_done(
    site_db: SiteDB, gateway: FakeGateway
) -> None:
    """A statement that changes the row but not the phone list_bindings reads is rolled
    back and answered INTERNAL, never DONE with the number still bound."""
    t = site_db.table
    config = site_db.config(
        queries={
            "unbind": f"UPDATE {t} SET nickname = 'x' WHERE id = :account_ref AND phone IN :phones"
        }
    )
    logs = await _unbind_fails_changing_nothing(site_db, config, gateway)
    assert any("still finds the account" in str(e["event"]) for e in logs)


async def test_too_many_rows_is_refused_and_rolled_back(
    site_db: SiteDB, gateway: FakeGateway
) -> None:
    """More rows than queries.max_unbind_rows, even of the one account: rolled back,
    INTERNAL, nothing changed."""
    t = site_db.table
    config = site_db.config(
        queries={
            "unbind": [
                f"UPDATE {t} SET phone = NULL WHERE id = :account_ref AND phone IN :phones",
                f"UPDATE {t} SET last_login_at = NULL WHERE id = :account_ref AND :msisdn <> ''",
            ],
            "max_unbind_rows": 1,
        }
    )
    logs = await _unbind_fails_changing_nothing(site_db, config, gateway)
    assert any("queries.max_unbind_rows is 1" in str(e["event"]) for e in logs)


async def test_null_into_a_not_null_column_is_refused_at_start(site_db: SiteDB) -> None:
    """SET col = NULL on a NOT NULL column is refused at start with the column named,
    though the dry run matches no row."""
    t = site_db.table
    config = site_db.config(
        queries={
            "unbind": (
                f"UPDATE {t} SET phone = NULL, nickname = NULL "
                "WHERE id = :account_ref AND phone IN :phones"
            )
        }
    )
    with pytest.raises(
        MappingError, match=rf"sets {t}\.nickname = NULL, but that column is NOT NULL"
    ):
        await SqlSite.open(config)


async def test_declared_phone_forms_are_found(site_db: SiteDB, gateway: FakeGateway) -> None:
    """{phone:phone} with [phones] fullwidth finds 86-..., (+86) ... and full-width
    digits, and rows holding another number still are not found."""
    t = site_db.table
    await site_db.sql(
        "INSERT INTO {t} (id, nickname, phone) VALUES "
        "('w1', 'a', '86-13800138000'), ('w2', 'b', '(+86) 138-0013-8000'), "
        "('w3', 'c', '\uff11\uff13\uff18\uff10\uff10\uff11\uff13\uff18\uff10\uff10\uff10'), "
        "('w4', 'd', '(+86) 138-0013-8001')"
    )
    config = site_db.config(
        queries={
            "list_bindings": (
                "SELECT id, nickname, phone, phone_bound_at, last_login_at, kind, "
                f"unbindable FROM {t} WHERE {{phone:phone}} IN :phones"
            )
        },
        phones={"fullwidth": True},
    )
    async with opened(config, gateway) as env:
        found = {b.account_ref for b in await env.list_bindings(NUMBER)}
    assert found == {"u1", "u2", "u3", "u4", "w1", "w2", "w3"}


async def test_failing_statement_names_its_column_in_the_log(
    site_db: SiteDB, gateway: FakeGateway
) -> None:
    """A column dropped after start: INTERNAL to the gateway; the operator's log names
    the column, on every backend (quoted names are the site's own, not values)."""
    async with opened(site_db.config(), gateway) as env:
        await site_db.sql("ALTER TABLE {t} DROP COLUMN nickname")
        with capture_logs() as logs, pytest.raises(CallError) as err:
            await env.list_bindings(NUMBER)
    assert err.value.code is grpc.StatusCode.INTERNAL
    (failed,) = [e for e in logs if e["event"] == "queries.list_bindings failed"]
    assert "nickname" in failed["cause"]
    assert "13800138000" not in repr(logs)
