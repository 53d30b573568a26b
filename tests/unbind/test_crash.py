"""A gateway killed with SIGKILL mid-delivery loses nothing: restarted on the same
database, it finishes every committed ticket, and the provider applies each once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from onecert.gateway.testing import GatewayProcess
from onecert.sdk import Binding, BindingKind
from tests.unbind.unbind_support import UnbindWorld

TICKETS = 5


async def test_sigkill_mid_delivery_then_restart_finishes_every_ticket(
    env: UnbindWorld, tmp_path: Path
) -> None:
    """Tickets committed by a gateway process that is SIGKILLed while the provider is
    still answering are all delivered by the restarted process: each ends final, with
    a reason when it failed, and no unbind is applied twice."""
    bindings = {
        env.FORMER: [
            Binding(
                account_ref=f"acct-{i}",
                kind=BindingKind.PAYMENT,
                bound_at=datetime(2013, 1, 1 + i, tzinfo=UTC),
            )
            for i in range(TICKETS)
        ]
    }
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
