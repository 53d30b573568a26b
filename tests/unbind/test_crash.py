"""A gateway killed with SIGKILL mid-delivery loses nothing: restarted on the same
database, it finishes every committed ticket, and the provider applies each once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from onecert.gateway.testing import GatewayProcess
from onecert.sdk import Binding, BindingKind
from tests.unbind.unbind_support import UnbindWorld

TICKETS = 5


def _left_behind(env: UnbindWorld, prefix: str, count: int) -> dict[str, list[Binding]]:
    """``count`` payment accounts bound in 2013 to the citizen's former number."""
    at = [datetime(2013, 1, 1 + i, tzinfo=UTC) for i in range(count)]
    return {
        env.FORMER: [
            Binding(account_ref=f"{prefix}-{i}", kind=BindingKind.PAYMENT, bound_at=when)
            for i, when in enumerate(at)
        ]
    }


async def test_sigkill_mid_delivery_then_restart_finishes_every_ticket(
    env: UnbindWorld, tmp_path: Path
) -> None:
    """Tickets committed by a gateway process that is SIGKILLed while the provider is
    still answering are all delivered by the restarted process: each ends final, with
    a reason when it failed, and no unbind is applied twice."""
    bindings = _left_behind(env, "acct", TICKETS)
    # Applies at once, answers slowly: the kill lands after the provider applied
    # some unbinds and before the gateway heard about it.
    accounts = await env.provider("pay", bindings, latency=1.0, apply_first=True)
    port = env.free_port()
    # Leases a little longer than a call: the restarted process takes the killed
    # one's tickets over soon after they run out.
    config = tmp_path / "gateway.toml"
    config.write_text(
        env.config_toml(listen_port=port, lease_s=2.5, unbind_deadline_s=2.0, workers=2)
    )
    log = tmp_path / "gateway.log"

    async with GatewayProcess(config, log) as first:
        result = env.result(await env.lookup(port), "pay", env.FORMER)
        assert len(result.bindings) == TICKETS
        tickets = [(await env.unbind(port, b.handle)).ticket_id for b in result.bindings]
        assert len(set(tickets)) == TICKETS
        async with asyncio.timeout(10):
            await accounts.started.wait()
        first.kill()  # SIGKILL: no graceful anything
        await first.wait()

    in_flight = [await env.ticket(t) for t in tickets]
    assert not all(t.state.terminal for t in in_flight), "the kill came too late to test"
    assert any(t.lease_owner is not None for t in in_flight)

    async with GatewayProcess(config, log):
        finals = [await env.wait_final(t, within=30) for t in tickets]

    for ticket in finals:
        assert ticket.state.terminal
        if ticket.state.value == "FAILED":
            assert ticket.last_error
        if ticket.state.value == "REJECTED":
            assert ticket.provider_reason
    # Nothing got in the way here, so every ticket was in fact done, each applied once.
    assert [t.state.value for t in finals] == ["DONE"] * TICKETS
    assert accounts.applied == dict.fromkeys(tickets, 1)
    assert {c.request_id for c in accounts.calls} == set(tickets)


@pytest.mark.slow
@pytest.mark.timeout(180)  # five gateway processes start one after another
async def test_tickets_of_a_provider_down_past_their_lifetime_end_failed_across_kills(
    env: UnbindWorld, tmp_path: Path
) -> None:
    """A provider down for longer than its tickets live, while the gateway is SIGKILLed
    again and again: every ticket still ends FAILED, saying it expired and with the last
    error, with its unbind.closed audit row, and the provider is never asked."""
    bindings = _left_behind(env, "gone", 3)
    accounts = await env.provider("pay", bindings)
    port = env.free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(env.config_toml(listen_port=port, lease_s=1.5, ticket_ttl_s=6.0, workers=2))
    log = tmp_path / "gateway.log"
    async with GatewayProcess(config, log) as first:
        result = env.result(await env.lookup(port), "pay", env.FORMER)
        await env.stop_provider("pay")  # down from now on, past every ticket's lifetime
        tickets = [(await env.unbind(port, b.handle)).ticket_id for b in result.bindings]
        first.kill()
        await first.wait()
    for _ in range(3):  # restarted and killed while the tickets live
        async with GatewayProcess(config, log) as gateway:
            await asyncio.sleep(1.0)
            gateway.kill()
            await gateway.wait()
    async with GatewayProcess(config, log):
        finals = [await env.wait_final(t, within=30) for t in tickets]
        closed = await env.wait_audit("unbind.closed")
    assert [t.state.value for t in finals] == ["FAILED"] * len(tickets)
    for ticket in finals:
        assert ticket.last_error is not None
        assert ticket.last_error.startswith("expired before the provider answered")
    assert sorted(r["subject"] for r in closed) == sorted(tickets)
    assert accounts.calls == []
