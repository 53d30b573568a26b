"""``onecert unbind`` and ``onecert receipt``: act on a lookup's handle, read the receipt."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from onecert.cli import CommandError
from onecert.cli._common import (
    add_citizen_call_flags,
    add_command,
    citizen_call_tls,
    read_assertion,
    refused,
)

if TYPE_CHECKING:
    from onecert.sdk._tls import ClientTLS
    from onecert.sdk.client import GatewayClient, Receipt, TicketInfo

_T = TypeVar("_T")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    unbind = add_command(sub, "unbind", _unbind)
    unbind.add_argument(
        "row",
        nargs="?",
        type=int,
        metavar="ROW",
        help="the number of a row of your last `onecert lookup` on this gateway (its "
        "handles are kept in a file only you can read, out of your shell history)",
    )
    add_citizen_call_flags(unbind, good_for="one call", timeout=10)
    unbind.add_argument(
        "--handle",
        metavar="HANDLE",
        help="instead of ROW: a handle from `onecert lookup --json` (for scripts)",
    )

    receipt = add_command(sub, "receipt", _receipt)
    add_citizen_call_flags(receipt, good_for="one call", timeout=10)
    receipt.add_argument("--ticket", required=True, metavar="ID", help="the ticket id")


def _ask(
    args: argparse.Namespace,
    what: str,
    call: Callable[[GatewayClient, str], Awaitable[_T]],
) -> _T:
    """``call`` with a client of the gateway (as the flags say) and the citizen's
    assertion; a refusal is a :class:`CommandError` saying ``what`` was refused."""
    tls = citizen_call_tls(args)
    assertion = read_assertion(args.assertion)
    return asyncio.run(_call(args, tls, what, lambda client: call(client, assertion)))


async def _call(
    args: argparse.Namespace,
    tls: ClientTLS | None,
    what: str,
    call: Callable[[GatewayClient], Awaitable[_T]],
) -> _T:
    from onecert.sdk.client import GatewayClient, GatewayError  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    try:
        # Made inside the event loop that uses it: a grpc.aio channel is tied to its loop.
        async with GatewayClient(args.gateway, tls=tls, insecure=args.insecure) as client:
            return await call(client)
    except GatewayError as exc:
        raise refused(what, exc, tls) from None


def _handle(args: argparse.Namespace) -> tuple[str | None, str]:
    """What to unbind, from ROW or --handle: the row described (None for --handle), its handle."""
    from onecert.cli._rows import load_row  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    if (args.row is None) == (args.handle is None):
        raise CommandError("give a ROW of your last lookup, or --handle (not both)")
    if args.handle is not None:
        handle = args.handle.strip()
        if not handle:
            raise CommandError("--handle is empty")
        return None, handle
    if args.row < 1:
        raise CommandError("ROW starts at 1")
    row = load_row(args.row, gateway=args.gateway)
    if row.action == "release":
        what = f"row {row.number}: release {row.msisdn} from a previous holder's account"
        what += f" at {row.provider}"
    else:
        what = f"row {row.number}: unbind your {row.provider} account on {row.msisdn}"
    return what, row.handle


def _unbind(args: argparse.Namespace) -> int:
    """ask for an account from a lookup to be unbound

    Ask the gateway to detach a number from an account shown by a lookup (or to release it from a
    previous holder's account): `onecert unbind 2` acts on row 2 of your last `onecert lookup`.
    Answers at once with a ticket; the gateway delivers it to the provider and keeps the receipt
    (see `onecert receipt`). The same account twice gives the same ticket.
    """
    what, handle = _handle(args)
    ticket: TicketInfo = _ask(
        args,
        "unbind",
        lambda client, assertion: client.unbind(assertion, handle, timeout=args.timeout),
    )
    if args.json:
        print(json.dumps(_plain(dataclasses.asdict(ticket)), indent=2))
    else:
        if what is not None:
            print(what)
        news = "new ticket" if ticket.created else "already requested"
        print(f"ticket {ticket.ticket_id}: {ticket.state.value} ({news})")
    return 0


def _receipt(args: argparse.Namespace) -> int:
    """show the receipt of an unbind ticket

    Show where an unbind ticket stands and what the provider answered.
    """
    ticket_id = args.ticket.strip()
    if not ticket_id:
        raise CommandError("--ticket is empty")
    receipt: Receipt = _ask(
        args,
        "receipt",
        lambda client, assertion: client.get_unbind(assertion, ticket_id, timeout=args.timeout),
    )
    if args.json:
        print(json.dumps(_plain(dataclasses.asdict(receipt)), indent=2, ensure_ascii=False))
    else:
        print(render_receipt(receipt))
    return 0


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    # StrEnum members are str already; json writes their value.
    return value


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def receipt_rows(
    receipt: Receipt, *, provider: str, when: Callable[[datetime | None], str]
) -> list[tuple[str, str]]:
    """The ``(field, value)`` rows every receipt starts with, ``provider`` naming the
    provider and ``when`` writing times: ticket, provider, reason, state, attempts, requested."""
    return [
        ("ticket", receipt.ticket_id),
        ("provider", f"{provider} ({receipt.provider_id})"),
        ("reason", receipt.reason.value.replace("_", " ") if receipt.reason else "-"),
        ("state", receipt.state.value + (" (final)" if receipt.final else "")),
        ("attempts", str(receipt.attempts)),
        ("requested", when(receipt.created_at)),
    ]


def aligned(rows: Sequence[tuple[str, str]], indent: str = "") -> list[str]:
    """``field  value`` lines, the values in one column."""
    width = max(len(name) for name, _ in rows)
    return [f"{indent}{name.ljust(width)}  {value}" for name, value in rows]


def render_receipt(receipt: Receipt) -> str:
    """The receipt as aligned ``field  value`` lines."""
    rows = receipt_rows(receipt, provider=receipt.provider_name, when=_when)
    rows += [
        (
            "provider answer",
            receipt.provider_outcome.value if receipt.provider_outcome else "-",
        ),
        ("provider reason", receipt.provider_reason or "-"),
        ("answered", _when(receipt.answered_at)),
        ("last error", receipt.last_error or "-"),
        ("next attempt", _when(receipt.next_attempt_at)),
        ("expires", _when(receipt.expires_at)),
    ]
    return "\n".join(aligned(rows))
