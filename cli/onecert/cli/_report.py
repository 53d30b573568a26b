"""``onecert report compliance``: per provider, how notices and unbinds were handled.

Asking a running gateway (``--gateway``) needs only the provider-side install
(``onecert`` without the ``gateway`` extra); reading the gateway's database
(``--url``, ``--config``) needs the gateway extra, imported only then.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onecert.cli import CommandError
from onecert.cli._common import add_command, add_group, add_tls_flags, client_tls

if TYPE_CHECKING:
    from onecert.gateway._config import ProviderConfig
    from onecert.sdk._tls import ClientTLS
    from onecert.sdk.client import ComplianceReport, ProviderCompliance

_URL_ENV = "ONECERT_DB_URL"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """reports for the regulator"""
    report_sub = add_group(sub, "report", register, metavar="REPORT")
    parser = add_command(report_sub, "compliance", _compliance)
    source = parser.add_argument_group("source (one of)")
    source.add_argument(
        "--url",
        default=None,
        help=f"the gateway's database URL (default: ${_URL_ENV}, or the [store] of --config)",
    )
    source.add_argument("--gateway", metavar="HOST:PORT", help="ask a running gateway")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the gateway's config: provider names, and every configured provider listed",
    )
    parser.add_argument("--schema", default=None, help="PostgreSQL schema (with --url)")
    add_tls_flags(
        parser,
        what="the gateway",
        client="admin client",
        insecure_help="plaintext, as the dev admin (development only)",
        title="transport to --gateway (mutual TLS, or --insecure in development)",
    )
    parser.add_argument(
        "--since",
        metavar="ISO",
        help="only notices and tickets created at or after (2025-01-01 or 2025-01-01T08:00Z)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="give up after (30)"
    )


def parse_since(text: str) -> datetime:
    """An ISO date or date-time; without an offset it is UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(
            f"--since must be an ISO date or date-time (2025-01-01, 2025-01-01T08:00Z), "
            f"not {text!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _compliance(args: argparse.Namespace) -> int:
    """per provider: notices acted on in time, late, not received or ignored; unbinds

    Per provider: recycled-number notices delivered, acknowledged, acted on in time, late, not
    received (the deadline passed and the provider was unreachable), ignored (it received the notice
    and did not act by the deadline), or not due yet; unbind tickets done, rejected and failed, with
    the median time to the provider's answer. Read from the gateway's database (--url, or the
    [store] of --config) or asked of a running gateway (--gateway, as an admin).
    """
    if args.timeout <= 0:
        raise CommandError("--timeout must be more than zero")
    since = None if args.since is None else parse_since(args.since)
    providers, config_url = _read_config(args.config)
    if args.gateway is not None:
        if args.url is not None:
            raise CommandError("give --url or --gateway, not both")
        report = asyncio.run(
            _from_gateway(
                args.gateway,
                client_tls(args, client_cert="an admin client certificate"),
                args.insecure,
                since,
                args.timeout,
            )
        )
    else:
        if args.ca or args.cert or args.key or args.server_name or args.insecure:
            raise CommandError(
                "--ca, --cert, --key, --server-name and --insecure go with --gateway"
            )
        url = args.url or os.environ.get(_URL_ENV) or config_url
        if not url:
            raise CommandError(
                f"no source: pass --url, --gateway, or --config with a [store] (or set {_URL_ENV})"
            )
        report = _from_database(url, args.schema, providers, since)
    if args.json:
        print(json.dumps(report_to_json(report), indent=2, ensure_ascii=False))
    else:
        print(render_table(report))
    return 0


def _needs_gateway_extra(what: str) -> CommandError:
    return CommandError(
        f"{what} needs the gateway's own packages: install onecert[gateway], "
        "or ask a running gateway with --gateway"
    )


def _read_config(path: Path | None) -> tuple[tuple[ProviderConfig, ...], str | None]:
    if path is None:
        return (), None
    try:
        from onecert.gateway._config import ConfigError, load_config  # noqa: PLC0415 - lazy
    except ModuleNotFoundError as exc:
        raise _needs_gateway_extra("--config") from exc
    try:
        config = load_config(path, dev_plaintext=True)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    return config.providers, None if config.store is None else config.store.url


async def _from_gateway(
    target: str,
    tls: ClientTLS | None,
    insecure: bool,
    since: datetime | None,
    timeout: float,  # noqa: ASYNC109 - the gRPC deadline
) -> ComplianceReport:
    from onecert.sdk.client import (  # noqa: PLC0415 - keeps `onecert --help` light
        AdminGatewayClient,
        GatewayError,
    )

    try:
        async with AdminGatewayClient(target, tls=tls, insecure=insecure) as client:
            report = await client.compliance_report(since=since, timeout=timeout)
    except GatewayError as exc:
        raise CommandError(f"the gateway refused the report: {exc}") from None
    # The gateway does not echo the scope asked for; the table states it.
    return dataclasses.replace(report, since=since)


def _from_database(
    url: str, schema: str | None, providers: tuple[ProviderConfig, ...], since: datetime | None
) -> ComplianceReport:
    try:
        from sqlalchemy.engine import make_url  # noqa: PLC0415 - lazy
        from sqlalchemy.exc import ArgumentError, DBAPIError  # noqa: PLC0415 - lazy

        from onecert.gateway._compliance import build_report  # noqa: PLC0415 - lazy
        from onecert.gateway.store import Store  # noqa: PLC0415 - lazy
    except ModuleNotFoundError as exc:
        raise _needs_gateway_extra("reading the database") from exc
    from onecert.sdk._msisdn import mask_numbers_in_text  # noqa: PLC0415 - lazy

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CommandError("the database URL is not valid") from None
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not Path(path).exists():
        # Opening a missing SQLite file would create an empty database.
        raise CommandError(f"no such database file: {path}")
    try:
        store = Store.open(url, schema=schema)
    except ValueError as exc:
        raise CommandError(str(exc)) from None

    async def run() -> ComplianceReport:
        try:
            if await store.schema_revision() is None:
                raise CommandError("the database has no onecert schema: run `onecert db upgrade`")
            return await build_report(store, providers=providers, since=since)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (OSError, DBAPIError) as exc:
        cause = getattr(exc, "orig", None) or exc
        first = (str(cause).splitlines() or [type(cause).__name__])[0]
        where = store.engine.url.render_as_string(hide_password=True)
        raise CommandError(
            f"cannot use the database {where}: {mask_numbers_in_text(first)}"
        ) from None


def report_to_json(report: ComplianceReport) -> dict[str, Any]:
    """The report as a JSON-ready dict (times ISO 8601, durations in seconds)."""
    return {
        "generated_at": None if report.generated_at is None else report.generated_at.isoformat(),
        "since": None if report.since is None else report.since.isoformat(),
        "providers": [
            {
                "provider_id": p.provider_id,
                "provider_name": p.provider_name,
                "status": p.status.value,
                "notices": p.notices,
                "notices_delivered": p.notices_delivered,
                "notices_acknowledged": p.notices_acknowledged,
                "acted_on_time": p.acted_on_time,
                "acted_late": p.acted_late,
                "never_acted": p.never_acted,
                "never_received": p.never_received,
                "ignored": p.ignored,
                "awaiting_action": p.awaiting_action,
                "unbinds_done": p.unbinds_done,
                "unbinds_rejected": p.unbinds_rejected,
                "unbinds_failed": p.unbinds_failed,
                "unbind_median_s": (
                    None
                    if p.unbind_median_time is None
                    else round(p.unbind_median_time.total_seconds(), 3)
                ),
                "registry_status": None if p.registry_status is None else p.registry_status.value,
                "onboarded_at": None if p.onboarded_at is None else p.onboarded_at.isoformat(),
                "certificate_not_after": (
                    None if p.certificate_not_after is None else p.certificate_not_after.isoformat()
                ),
            }
            for p in report.providers
        ],
    }


def format_duration(value: timedelta | None) -> str:
    """``"-"``, ``"850ms"``, ``"42s"``, ``"3m05s"``, ``"2h05m"``, ``"1d03h"``."""
    if value is None:
        return "-"
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


_COLUMNS = (
    "provider",
    "status",
    "notices",
    "delivered",
    "acked",
    "on time",
    "late",
    "not received",
    "ignored",
    "awaiting",
    "unbinds done",
    "rejected",
    "failed",
    "median answer",
)
# What the columns that are not self-evident count, printed under the table.
_LEGEND = (
    "not received: the deadline passed and the notice never reached the provider "
    "(it was unreachable)",
    "ignored: the notice reached the provider, and the deadline passed without an action",
    "median answer: the median time from an unbind request to the provider's final answer",
)


def _registry_line(p: ProviderCompliance) -> str:
    assert p.registry_status is not None
    name = (
        p.provider_name
        if p.provider_name == p.provider_id
        else f"{p.provider_name} ({p.provider_id})"
    )
    parts = [f"{name}: {p.registry_status.value}"]
    if p.onboarded_at is not None:
        parts.append(f"onboarded {p.onboarded_at.date().isoformat()}")
    if p.certificate_not_after is not None:
        parts.append(f"certificate expires {p.certificate_not_after.isoformat(timespec='minutes')}")
    return ", ".join(parts)


def render_table(report: ComplianceReport) -> str:
    """The report as a plain-text table for a terminal."""
    rows = [
        [
            p.provider_name
            if p.provider_name == p.provider_id
            else f"{p.provider_name} ({p.provider_id})",
            p.status.value,
            str(p.notices),
            str(p.notices_delivered),
            str(p.notices_acknowledged),
            str(p.acted_on_time),
            str(p.acted_late),
            str(p.never_received),
            str(p.ignored),
            str(p.awaiting_action),
            str(p.unbinds_done),
            str(p.unbinds_rejected),
            str(p.unbinds_failed),
            format_duration(p.unbind_median_time),
        ]
        for p in report.providers
    ]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(_COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        # Names left-aligned, numbers right-aligned.
        parts = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    scope = "" if report.since is None else f" (since {report.since.isoformat()})"
    at = (
        ""
        if report.generated_at is None
        else f" at {report.generated_at.isoformat(timespec='seconds')}"
    )
    out = [
        f"Compliance report{at}{scope}",
        "",
        line(_COLUMNS),
        line(["-" * w for w in widths]),
    ]
    out.extend(line(r) for r in rows)
    if not rows:
        out.append("(no providers)")
    registry = [_registry_line(p) for p in report.providers if p.registry_status is not None]
    if registry:
        out += ["", "In the registry:", *registry]
    out += ["", *_LEGEND]
    notes = []
    for p in report.providers:
        if p.ignored:
            notes.append(
                f"{p.provider_name}: {p.ignored} notice(s) received and never acted on "
                "before the deadline"
            )
        if p.never_received:
            notes.append(
                f"{p.provider_name}: {p.never_received} notice(s) never received before the "
                "deadline (unreachable)"
            )
    if notes:
        out += ["", *notes]
    return "\n".join(out)
