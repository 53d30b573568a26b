"""``onecert provider``: the provider registry.

The regulator's commands (``invite``, ``list``, ``show``, ``suspend``,
``resume``, ``remove``) call the gateway's admin RPCs as an admin, the way
``onecert report compliance --gateway`` does; they need only the
provider-side install. A provider's own commands (joining, its status) are
added to the same group by :func:`_add_enrollment_commands`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from onecert.cli import CommandError
from onecert.cli._common import add_command, add_group, add_tls_flags, client_tls, refused

if TYPE_CHECKING:
    from onecert.sdk.client import (
        AdminGatewayClient,
        Invitation,
        ProviderRecord,
        RegistryChange,
    )

_T = TypeVar("_T")

_STATUSES = ("invited", "pending", "active", "suspended", "removed")
_CATEGORIES = (
    "social",
    "payment",
    "ecommerce",
    "ride_hailing",
    "dating",
    "forum",
    "gaming",
    "government",
    "other",
)
_TTL = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """the provider registry: invite, list, suspend, resume, remove

    The provider registry. The regulator invites a provider (a one-time enrollment token), lists
    and shows providers, and suspends, resumes or removes them; every gateway replica applies a
    change within seconds.
    """
    group = add_group(sub, "provider", register, metavar="ACTION")
    _add_admin_commands(group)
    _add_enrollment_commands(group)


def _add_enrollment_commands(group: argparse._SubParsersAction[Any]) -> None:
    """A provider's own commands (joining with a token, its enrollment's status)."""
    from onecert.cli._join import add_enrollment_commands  # noqa: PLC0415 - the provider's commands live in their own module

    add_enrollment_commands(group)


def _admin_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add what every admin command needs: the gateway, its TLS, --json, --timeout."""
    parser.add_argument("--gateway", required=True, metavar="HOST:PORT", help="the gateway")
    add_tls_flags(
        parser,
        what="the gateway",
        client="admin client",
        insecure_help="plaintext, as the dev admin (development only)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="give up after (30)"
    )
    return parser


def _add_admin_commands(group: argparse._SubParsersAction[Any]) -> None:
    invite = _admin_flags(add_command(group, "invite", _invite))
    invite.add_argument("--id", required=True, dest="provider_id", help="the provider's id")
    invite.add_argument("--name", default="", help="its display name")
    invite.add_argument("--category", required=True, choices=_CATEGORIES, help="its category")
    invite.add_argument(
        "--ttl", metavar="DURATION", help="the token's life: 3600, 90m, 24h, 7d (gateway default)"
    )
    listing = _admin_flags(add_command(group, "list", _list))
    listing.add_argument("--status", choices=_STATUSES, help="only those in this status")
    show = _admin_flags(add_command(group, "show", _show))
    show.add_argument("provider_id", metavar="ID")
    for name, help_text, needs_reason in (
        ("suspend", "stop calling a provider and refuse its calls, until resumed", True),
        ("resume", "call a suspended provider again", False),
        ("remove", "remove a provider for good", True),
    ):
        parser = _admin_flags(
            group.add_parser(
                name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
            )
        )
        parser.add_argument("provider_id", metavar="ID")
        if needs_reason:
            parser.add_argument("--reason", required=True, help="why (kept in the audit log)")
        parser.set_defaults(handler=_set_status, action=name)


def parse_ttl(text: str) -> timedelta:
    """``"3600"``, ``"90m"``, ``"24h"``, ``"7d"`` as a duration (CommandError otherwise)."""
    match = _TTL.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise CommandError(f"--ttl must be a positive duration (3600, 90m, 24h, 7d), not {text!r}")
    return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])


def _call(
    args: argparse.Namespace, what: str, call: Callable[[AdminGatewayClient], Awaitable[_T]]
) -> _T:
    """Run ``call`` with an admin client of ``--gateway``; a refusal is a CommandError."""
    if args.timeout <= 0:
        raise CommandError("--timeout must be more than zero")
    tls = client_tls(args, client_cert="an admin client certificate")
    from onecert.sdk.client import (  # noqa: PLC0415 - keeps `onecert --help` light
        AdminGatewayClient,
        GatewayError,
    )

    async def run() -> _T:
        async with AdminGatewayClient(args.gateway, tls=tls, insecure=args.insecure) as client:
            return await call(client)

    try:
        return asyncio.run(run())
    except GatewayError as exc:
        raise refused(what, exc, tls) from None


def _invite(args: argparse.Namespace) -> int:
    """invite a provider: a one-time enrollment token

    Invite a provider to join: prints a one-time enrollment token, bound to the provider id
    and short-lived. The gateway keeps only its hash: this is the only time it is shown.
    Inviting an invited or pending provider again replaces its token.
    """
    ttl = None if args.ttl is None else parse_ttl(args.ttl)
    invitation: Invitation = _call(
        args,
        "the invitation",
        lambda c: c.invite_provider(
            args.provider_id,
            category=args.category,
            name=args.name,
            ttl=ttl,
            timeout=args.timeout,
        ),
    )
    if args.json:
        print(
            json.dumps(
                {
                    **record_json(invitation.provider),
                    "enrollment_token": invitation.token,
                    "expires_at": _iso(invitation.expires_at),
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    record = invitation.provider
    print(f"Invited {_named(record)}: {record.status.value if record.status else 'unknown'}.")
    print(f"Enrollment token (shown this once; valid until {_iso(invitation.expires_at)}):")
    print(f"  {invitation.token}")
    print(
        "Give it to the provider over a channel you trust; it joins with "
        "`onecert provider join` before the token expires."
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    """list the providers

    Every provider in the registry.
    """
    from onecert.sdk.client import ProviderStatus  # noqa: PLC0415 - lazy

    status = None if args.status is None else ProviderStatus(args.status)
    records: Sequence[ProviderRecord] = _call(
        args, "the list", lambda c: c.list_providers(status=status, timeout=args.timeout)
    )
    if args.json:
        print(json.dumps([record_json(r) for r in records], indent=2, ensure_ascii=False))
    else:
        print(render_list(records))
    return 0


def _show(args: argparse.Namespace) -> int:
    """one provider and its history

    One provider.
    """
    record, history = _call(
        args, "the request", lambda c: c.get_provider(args.provider_id, timeout=args.timeout)
    )
    if args.json:
        out = {**record_json(record), "history": [change_json(c) for c in history]}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(render_record(record, history))
    return 0


def _set_status(args: argparse.Namespace) -> int:
    def call(client: AdminGatewayClient) -> Awaitable[ProviderRecord]:
        if args.action == "suspend":
            return client.suspend_provider(
                args.provider_id, reason=args.reason, timeout=args.timeout
            )
        if args.action == "resume":
            return client.resume_provider(args.provider_id, timeout=args.timeout)
        return client.remove_provider(args.provider_id, reason=args.reason, timeout=args.timeout)

    record = _call(args, f"the {args.action}", call)
    if args.json:
        print(json.dumps(record_json(record), indent=2, ensure_ascii=False))
    else:
        status = record.status.value if record.status else "unknown"
        print(f"{_named(record)} is now {status}.")
    return 0


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def _named(record: ProviderRecord) -> str:
    return f"{record.name} ({record.provider_id})" if record.name else record.provider_id


def record_json(record: ProviderRecord) -> dict[str, Any]:
    """A provider record as a JSON-ready dict (times ISO 8601)."""
    gate = record.last_gate
    return {
        "provider_id": record.provider_id,
        "name": record.name,
        "category": record.category,
        "status": None if record.status is None else record.status.value,
        "address": record.address,
        "delivery": record.delivery,
        "origin": record.origin,
        "invited_at": _iso(record.invited_at),
        "joined_at": _iso(record.joined_at),
        "activated_at": _iso(record.activated_at),
        "status_changed_at": _iso(record.status_changed_at),
        "status_actor": record.status_actor,
        "status_reason": record.status_reason or None,
        "certificate_serial": record.certificate_serial or None,
        "certificate_not_after": _iso(record.certificate_not_after),
        "last_gate": None
        if gate is None
        else {"passed": gate.passed, "failures": list(gate.failures), "at": _iso(gate.at)},
    }


def change_json(change: RegistryChange) -> dict[str, Any]:
    """A history entry as a JSON-ready dict."""
    return {
        "at": _iso(change.at),
        "actor": change.actor,
        "action": change.action,
        "from_status": None if change.from_status is None else change.from_status.value,
        "to_status": None if change.to_status is None else change.to_status.value,
        "detail": change.detail,
    }


_LIST_COLUMNS = ("id", "name", "category", "status", "since", "onboarded", "cert expires")


def render_list(records: Sequence[ProviderRecord]) -> str:
    """The providers as a plain-text table."""
    rows = [
        [
            r.provider_id,
            r.name or "-",
            r.category,
            r.status.value if r.status else "?",
            _day(r.status_changed_at),
            _day(r.activated_at),
            _day(r.certificate_not_after),
        ]
        for r in records
    ]
    if not rows:
        return "(no providers)"
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(_LIST_COLUMNS)]
    lines = [_cells(_LIST_COLUMNS, widths), _cells(["-" * w for w in widths], widths)]
    lines.extend(_cells(r, widths) for r in rows)
    return "\n".join(lines)


def _cells(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def _day(value: datetime | None) -> str:
    return "-" if value is None else value.date().isoformat()


def render_record(record: ProviderRecord, history: Sequence[RegistryChange]) -> str:
    """One provider and its history as plain text."""
    fields = record_json(record)
    gate = fields.pop("last_gate")
    lines = [
        f"{key.replace('_', ' ')}: {value}"
        for key, value in fields.items()
        if value not in (None, "")
    ]
    if gate is not None:
        verdict = "passed" if gate["passed"] else "failed"
        lines.append(f"last gate: {verdict} at {gate['at']}")
        lines.extend(f"  - {failure}" for failure in gate["failures"])
    lines += ["", "history:"]
    for change in history:
        move = ""
        if change.from_status != change.to_status and change.to_status is not None:
            before = change.from_status.value if change.from_status else "-"
            move = f" {before} -> {change.to_status.value}"
        reason = change.detail.get("reason")
        why = f" ({reason})" if reason else ""
        lines.append(f"  {_iso(change.at)}  {change.action}{move} by {change.actor}{why}")
    return "\n".join(lines)
