"""The portal's side: GatewayClient.unbind / get_unbind and ``onecert unbind`` /
``onecert receipt``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from onecert.cli import main
from onecert.sdk import UnbindOutcome, UnbindReason
from onecert.sdk.client import GatewayClient, GatewayError, Receipt, TicketInfo, TicketState
from tests.unbind.unbind_support import UnbindWorld


async def test_client_unbinds_and_reads_the_receipt(env: UnbindWorld) -> None:
    """The client returns typed values: a TicketInfo at once, and a Receipt that
    ends DONE with the provider's answer."""
    await env.provider("pay")
    gateway = await env.gateway()
    handle = await env.left_behind_handle(gateway)
    async with GatewayClient(f"127.0.0.1:{gateway.port}", insecure=True) as client:
        ticket = await client.unbind(env.assertion(), handle)
        again = await client.unbind(env.assertion(), handle)
        await env.wait_final(ticket.ticket_id)
        receipt = await client.get_unbind(env.assertion(), ticket.ticket_id)

    assert isinstance(ticket, TicketInfo)
    assert ticket.created
    assert ticket.state in (TicketState.QUEUED, TicketState.DONE)
    assert again == TicketInfo(ticket.ticket_id, again.state, created=False)
    assert isinstance(receipt, Receipt)
    assert receipt.ticket_id == ticket.ticket_id
    assert receipt.state is TicketState.DONE
    assert receipt.final
    assert receipt.provider_name == "Pay Inc"
    assert receipt.reason is UnbindReason.OWNER_REQUEST
    assert receipt.provider_outcome is UnbindOutcome.DONE
    assert receipt.attempts == 1
    assert receipt.answered_at is not None
    assert receipt.next_attempt_at is None
    assert receipt.created_at is not None
    assert receipt.expires_at is not None
    assert receipt.expires_at > receipt.created_at


async def test_client_raises_gateway_errors_with_the_status(env: UnbindWorld) -> None:
    """Refusals surface as GatewayError carrying the gRPC status."""
    await env.provider("pay")
    gateway = await env.gateway(workers=0)
    async with GatewayClient(f"127.0.0.1:{gateway.port}", insecure=True) as client:
        with pytest.raises(GatewayError) as bad_handle:
            await client.unbind(env.assertion(), "garbage")
        with pytest.raises(GatewayError) as unknown:
            await client.get_unbind(env.assertion(), "ut_" + "q" * 24)
    assert bad_handle.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert unknown.value.code is grpc.StatusCode.NOT_FOUND


async def test_cli_unbind_and_receipt(
    env: UnbindWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``onecert unbind`` prints the ticket, ``onecert receipt`` the receipt, as text
    or JSON; a refusal is a one-line error and exit status 2."""
    await env.provider("pay")
    gateway = await env.gateway()
    handle = await env.left_behind_handle(gateway)
    target = ["--gateway", f"127.0.0.1:{gateway.port}", "--insecure"]

    def run(*argv: str) -> int:
        assertion = tmp_path / "assertion.jwt"
        assertion.write_text(env.assertion())
        return main([*argv, *target, "--assertion", str(assertion)])

    assert await asyncio.to_thread(run, "unbind", "--handle", handle, "--json") == 0
    ticket = json.loads(capsys.readouterr().out)
    assert ticket["created"] is True
    await env.wait_final(ticket["ticket_id"])

    assert await asyncio.to_thread(run, "unbind", "--handle", handle) == 0
    assert "already requested" in capsys.readouterr().out

    assert await asyncio.to_thread(run, "receipt", "--ticket", ticket["ticket_id"]) == 0
    text = capsys.readouterr().out
    assert ticket["ticket_id"] in text
    assert "done (final)" in text
    assert "Pay Inc (pay)" in text
    assert env.FORMER not in text

    assert await asyncio.to_thread(run, "receipt", "--ticket", ticket["ticket_id"], "--json") == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["state"] == "done"
    assert receipt["provider_outcome"] == "done"
    assert receipt["reason"] == "owner_request"

    assert await asyncio.to_thread(run, "receipt", "--ticket", "ut_" + "n" * 24) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
