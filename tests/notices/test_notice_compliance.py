"""The compliance report: on time, late, never; for admins only; and the CLI."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from onecert.cli import main
from onecert.cli._report import format_duration, render_table
from onecert.gateway.store import DeliveryState
from onecert.sdk.client import ComplianceReport, ComplianceStatus, ProviderCompliance
from tests.routing.routing_support import ELSEWHERE, publish

if TYPE_CHECKING:
    from onecert.gateway import GatewayServer
    from onecert.gateway.store.testing import Database
    from tests.notices.notices_support import NoticeWorld


async def _story(world: NoticeWorld) -> tuple[GatewayServer, str]:
    """pay acts at once, chat only records, forum polls and confirms after the deadline."""
    await world.push_provider("pay", acts=2)
    await world.push_provider("chat", acts=None)
    world.poll_provider("forum", name="Small Forum")
    gateway = await world.gateway()
    answer = await world.caller(gateway, "carrier:cm").report("ev-1", world.CM_NUMBER)
    await world.settled(answer.notice_id, providers=["pay", "chat"], what="the pushes")
    async with world.provider_client(gateway, "forum") as forum:
        (event,) = (await forum.poll_events()).events
        await forum.poll_events(acks=[event.jti])
        world.clock.advance(timedelta(days=4))
        assert await forum.confirm_event_action(event.jti, 1)
    return gateway, answer.notice_id


def _lines(report: Any) -> dict[str, Any]:
    return {p.provider_id: p for p in report.providers}


async def test_on_time_late_and_never(world: NoticeWorld) -> None:
    """Acted at once: on time; confirmed after the deadline: late; never acted: never."""
    gateway, _ = await _story(world)
    report = await world.caller(gateway, "admin").compliance()
    lines = _lines(report)
    assert set(lines) == {"pay", "chat", "forum"}
    pay, chat, forum = lines["pay"], lines["chat"], lines["forum"]
    assert (pay.notices_delivered, pay.notices_acknowledged, pay.acted_on_time) == (1, 1, 1)
    assert (chat.notices_acknowledged, chat.never_acted, chat.acted_on_time) == (1, 1, 0)
    assert chat.never_received == 0  # it received the notice: ignored, not unreachable
    assert (forum.acted_late, forum.never_acted, forum.provider_name) == (1, 0, "Small Forum")
    assert all(p.awaiting_action == 0 for p in report.providers)
    assert not pay.HasField("unbind_median_time")
    generated = report.generated_at.ToDatetime(tzinfo=UTC)
    assert generated >= world.T0 + timedelta(days=4)
    # Configured providers are listed even with nothing in the period.
    later = await world.caller(gateway, "admin").compliance(since=world.clock())
    assert {p.provider_id: p.never_acted for p in later.providers} == {
        "pay": 0,
        "chat": 0,
        "forum": 0,
    }
    rows = [r for r in await world.audit_rows() if r["kind"] == "admin.compliance_report"]
    assert [r["actor"] for r in rows] == [f"admin:{world.ADMIN_CN}"] * 2


async def test_awaiting_until_the_deadline(dev_world: NoticeWorld) -> None:
    """Before the deadline an unconfirmed notice is awaiting, not never."""
    dev_world.poll_provider("forum")
    gateway = await dev_world.gateway()
    await dev_world.caller(gateway, "carrier:cm").report("ev-1", dev_world.CM_NUMBER)
    report = await dev_world.caller(gateway, "admin").compliance()
    forum = _lines(report)["forum"]
    assert (forum.awaiting_action, forum.never_acted, forum.notices_delivered) == (1, 0, 0)


@pytest.mark.parametrize("who", ["provider:pay", "carrier:cm", "cn:intruder"])
async def test_report_is_for_admins_only(world: NoticeWorld, who: str) -> None:
    """Anyone but an admin is refused the report."""
    await world.push_provider("pay")
    gateway = await world.gateway()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.caller(gateway, who).compliance()
    expected = (
        grpc.StatusCode.UNAUTHENTICATED
        if who.startswith("cn:")
        else grpc.StatusCode.PERMISSION_DENIED
    )
    assert err.value.code() == expected


def _cli(*argv: str) -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(list(argv))
    return status, out.getvalue()


async def test_cli_from_the_database(world: NoticeWorld, database: Database) -> None:
    """`onecert report compliance --url` prints the table, and JSON with --json."""
    await _story(world)
    source = ["--url", database.url]
    if database.schema is not None:
        source += ["--schema", database.schema]
    status, text = await asyncio.to_thread(_cli, "report", "compliance", *source, "--json")
    assert status == 0
    document = json.loads(text)
    by_id = {p["provider_id"]: p for p in document["providers"]}
    assert by_id["pay"]["status"] == "ok"
    assert by_id["forum"]["acted_late"] == 1
    # The CLI reads the real clock, days behind the test gateway's: chat's
    # deadline has not passed by it yet.
    assert (by_id["chat"]["awaiting_action"], by_id["chat"]["status"]) == (1, "awaiting")
    status, table = await asyncio.to_thread(_cli, "report", "compliance", *source)
    assert status == 0
    assert table.splitlines()[0].startswith("Compliance report at ")
    # The database's provider registry knows the names, without --config.
    lines = table.splitlines()
    assert any(line.startswith("Small Forum (forum) ") and " late " in line for line in lines)
    assert "Small Forum (forum): active, onboarded " in table


async def test_cli_from_the_gateway_as_admin(world: NoticeWorld) -> None:
    """`onecert report compliance --gateway` with the admin certificate shows the gateway's view."""
    gateway, _ = await _story(world)
    keys = world.keys
    tls = [
        "--ca",
        str(keys.ca_cert),
        "--cert",
        str(keys.client_cert(world.ADMIN_CN)),
        "--key",
        str(keys.client_key(world.ADMIN_CN)),
    ]
    target = f"127.0.0.1:{gateway.port}"
    status, text = await asyncio.to_thread(
        _cli, "report", "compliance", "--gateway", target, *tls, "--json"
    )
    assert status == 0
    by_id = {p["provider_id"]: p for p in json.loads(text)["providers"]}
    assert (by_id["chat"]["never_acted"], by_id["chat"]["status"]) == (1, "non-compliant")
    assert by_id["forum"]["provider_name"] == "Small Forum"
    status, table = await asyncio.to_thread(_cli, "report", "compliance", "--gateway", target, *tls)
    assert status == 0
    assert "chat: 1 notice(s) received and never acted on before the deadline" in table
    # A provider's certificate is refused.
    other = ["--ca", str(keys.ca_cert), "--cert", str(keys.client_cert("pay"))]
    other += ["--key", str(keys.client_key("pay"))]
    status, _ = await asyncio.to_thread(_cli, "report", "compliance", "--gateway", target, *other)
    assert status == 2


def test_cli_needs_a_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --url, --gateway or a config the command says what it needs."""
    monkeypatch.delenv("ONECERT_DB_URL", raising=False)
    assert _cli("report", "compliance")[0] == 2
    assert _cli("report", "compliance", "--url", "sqlite:///x.db", "--since", "yesterday")[0] == 2


def test_table_rendering() -> None:
    """The table aligns columns, names each provider and flags those that never acted."""
    report = ComplianceReport(
        generated_at=datetime(2025, 3, 1, 12, tzinfo=UTC),
        providers=(
            ProviderCompliance(
                "pay",
                "Example Pay",
                3,
                3,
                3,
                unbinds_done=4,
                unbind_median_time=timedelta(seconds=95),
            ),
            ProviderCompliance("quiet", "quiet"),
            ProviderCompliance("lax", "Lax Site", 2, 1, 0, 1, 1),
        ),
    )
    lines = render_table(report).splitlines()
    assert lines[0] == "Compliance report at 2025-03-01T12:00:00+00:00"
    header = lines[2]
    assert header.split()[:3] == ["provider", "status", "notices"]
    assert lines[4].startswith("Example Pay (pay)")
    assert "1m35s" in lines[4]
    assert "no notices" in lines[5]
    assert "non-compliant" in lines[6]
    assert lines[-1] == "Lax Site: 1 notice(s) received and never acted on before the deadline"
    assert len({len(line) for line in lines[2:4]}) == 1
    statuses = [p.status for p in report.providers]
    assert statuses == [
        ComplianceStatus.OK,
        ComplianceStatus.NO_NOTICES,
        ComplianceStatus.NON_COMPLIANT,
    ]
    assert [format_duration(timedelta(seconds=s)) for s in (0.25, 5, 42, 7300, 90000)] == [
        "250ms",
        "5.0s",
        "42s",
        "2h01m",
        "1d01h",
    ]


async def test_unreachable_is_told_apart_from_ignored_with_routing_and_batches(
    dev_world: NoticeWorld,
) -> None:
    """Past the deadline, a provider that was never reached counts the notice as never
    received; one that acknowledged without acting, and one that refused it in a batch,
    count it as received and ignored; one routed out (its fresh filter lacks the number)
    has no notice at all; one that acted is on time."""
    await dev_world.refusing_provider("down", grpc.StatusCode.UNAVAILABLE)
    await dev_world.push_provider("deaf", acts=None)
    await dev_world.batch_provider("picky", {dev_world.CM_NUMBER: grpc.StatusCode.INVALID_ARGUMENT})
    await dev_world.push_provider("good", acts=1)
    await dev_world.push_provider("elsewhere")
    gateway = await dev_world.gateway()
    async with dev_world.provider_client(gateway, "elsewhere") as client:
        await publish(client, ELSEWHERE)
    answer = await dev_world.caller(gateway, "carrier:cm").report("ev-1", dev_world.CM_NUMBER)
    assert answer.providers == 4

    async def settled() -> bool:
        found = await dev_world.deliveries(answer.notice_id)
        return all(found[p].state is not DeliveryState.PENDING for p in ("deaf", "picky", "good"))

    await dev_world.eventually(settled, what="the reachable providers' answers")
    dev_world.clock.advance(timedelta(days=4))
    lines = _lines(await dev_world.caller(gateway, "admin").compliance())
    counts = {
        p: (
            line.notices_delivered,
            line.acted_on_time,
            line.never_acted,
            line.never_received,
            line.awaiting_action,
        )
        for p, line in lines.items()
    }
    assert counts == {
        "down": (0, 0, 1, 1, 0),
        "deaf": (1, 0, 1, 0, 0),
        "picky": (1, 0, 1, 0, 0),
        "good": (1, 1, 0, 0, 0),
        "elsewhere": (0, 0, 0, 0, 0),
    }
