"""``onecert lookup``: a citizen's lookup, printed as a table (or JSON)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import enum
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from onecert.cli import CommandError
from onecert.cli._common import (
    add_citizen_call_flags,
    add_command,
    citizen_call_tls,
    onecert_command,
    read_assertion,
    refused,
)

if TYPE_CHECKING:
    from onecert.cli._rows import Row
    from onecert.sdk._tls import ClientTLS
    from onecert.sdk.client import Result, Started, Summary


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = add_command(sub, "lookup", _lookup)
    add_citizen_call_flags(parser, good_for="one lookup", timeout=30)


def _lookup(args: argparse.Namespace) -> int:
    """look up the numbers and accounts under a citizen's identity

    Ask a gateway which numbers are registered under the identity in the assertion and which
    accounts are bound to them. Left-behind accounts (your old number, now someone else's) are
    listed first.
    """
    tls = citizen_call_tls(args)
    assertion = read_assertion(args.assertion)
    progress = sys.stderr if (not args.json and sys.stderr.isatty()) else None
    started, results, summary = asyncio.run(
        _collect(
            args.gateway,
            tls,
            insecure=args.insecure,
            assertion=assertion,
            deadline=args.timeout,
            progress=progress,
        )
    )
    _keep_rows(args.gateway, started, results)
    if args.json:
        print(json.dumps(to_json(started, results, summary), indent=2, ensure_ascii=False))
    else:
        print(render_table(started, results, summary))
    return 0


def _keep_rows(gateway: str, started: Started, results: Sequence[Result]) -> None:
    """Keep the numbered rows' handles for ``onecert unbind ROW`` (a private file)."""
    from onecert.cli._rows import number_rows, save_rows  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    try:
        save_rows(gateway, started.query_id, number_rows(results))
    except OSError as exc:
        # The lookup itself succeeded: say why row numbers will not work, and go on.
        print(
            f"onecert: cannot keep this lookup's rows for `onecert unbind ROW` "
            f"({exc.filename}: {exc.strerror}); use --handle from --json instead",
            file=sys.stderr,
        )


async def _collect(
    target: str,
    tls: ClientTLS | None,
    *,
    insecure: bool,
    assertion: str,
    deadline: float,
    progress: TextIO | None,
) -> tuple[Started, list[Result], Summary]:
    from onecert.sdk.client import (  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
        GatewayClient,
        GatewayError,
        Result,
        RoutedOut,
        Started,
        Summary,
    )

    started: Started | None = None
    routed_out = 0  # providers routing ruled out: accounted for, not asked
    results: list[Result] = []
    summary: Summary | None = None
    try:
        # Made inside the event loop that uses it: a grpc.aio channel is tied to its loop.
        async with GatewayClient(target, tls=tls, insecure=insecure) as client:
            async for update in client.lookup(assertion, timeout=deadline):
                if isinstance(update, Started):
                    started = update
                elif isinstance(update, Result):
                    results.append(update)
                elif isinstance(update, RoutedOut):
                    routed_out += update.count
                elif isinstance(update, Summary):
                    summary = update
                if progress is not None and started is not None and summary is None:
                    _progress(progress, len(results) + routed_out, started.provider_calls)
    except GatewayError as exc:
        raise refused("lookup", exc, tls) from None
    finally:
        if progress is not None:
            progress.write("\r\033[K")
            progress.flush()
    if started is None or summary is None:
        raise CommandError("the gateway ended the lookup without a summary")
    return started, results, summary


def _progress(out: TextIO, done: int, total: int) -> None:
    out.write(f"\r\033[Kwaiting for providers: {done}/{total} answered")
    out.flush()


# ------------------------------------------------------------------ output


def _day(when: datetime | None) -> str:
    return when.date().isoformat() if when is not None else "?"


def columns(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """``rows`` as lines of left-aligned columns two blanks apart (none for no rows)."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _accounts(count: int) -> str:
    return f"{count} account" if count == 1 else f"{count} accounts"


def _provider(result: Result) -> str:
    category = f" ({result.category.value.replace('_', '-')})" if result.category else ""
    return f"{result.provider_name or result.provider_id}{category}"


def plain_outcome(outcome: str, detail: str) -> str:
    """A call that was not answered, in words for a citizen, not an operator.

    Args:
        outcome: the call's outcome ("timed_out", "failed", "skipped", ...).
        detail: the gateway's technical detail ("UNAVAILABLE: ...", "breaker open").
    """
    if outcome == "timed_out":
        return "did not answer in time; try again later"
    if outcome == "skipped":
        if detail == "breaker open":
            return "has not been answering lately, so was not asked; try again later"
        return "was not asked this time; try again later"
    if detail.startswith(("UNAVAILABLE", "connection")):
        return "could not be reached; try again later"
    return "could not answer; try again later"


def _label(numbers: Sequence[int]) -> str:
    """Row numbers as printed: "3", "6-7", or nothing."""
    if not numbers:
        return ""
    return str(numbers[0]) if len(numbers) == 1 else f"{numbers[0]}-{numbers[-1]}"


def _numbers_section(started: Started) -> list[str]:
    lines = ["Numbers under your identity"]
    rows = []
    for n in started.numbers:
        if n.current:
            held = f"current, since {_day(n.held_from)}"
        else:
            state = f" ({n.state.value})" if n.state else ""
            held = f"former, held {_day(n.held_from)} to {_day(n.held_until)}{state}"
        rows.append([n.msisdn, n.carrier_id, held])
    return lines + (columns(rows) or ["  (none found)"])


def _accounts_section(results: Sequence[Result], numbered: Sequence[Row]) -> list[str]:
    from onecert.sdk.client import Attribution  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    by_account = {id(row.account): row.number for row in numbered if row.account is not None}
    accounts = [(r, a) for r in results for a in r.accounts]
    # Left behind first: someone else may be able to use these accounts now.
    accounts.sort(key=lambda item: item[1].attribution is not Attribution.LEFT_BEHIND)
    rows = [
        [
            _label([by_account[id(account)]] if id(account) in by_account else []),
            "!! left behind" if account.attribution is Attribution.LEFT_BEHIND else "mine",
            _provider(result),
            result.msisdn,
            account.display_name_masked or "-",
            account.kind.value.replace("_", "-") if account.kind else "-",
            f"bound {_day(account.bound_at)}",
            "can be unbound" if account.handle else "",
        ]
        for result, account in accounts
    ]
    return ["", "Your accounts", *(columns(rows) or ["  (none)"])]


def _previous_section(results: Sequence[Result], numbered: Sequence[Row]) -> list[str]:
    previous = [r for r in results if r.previous_holder_count]
    if not previous:
        return []
    by_result: dict[int, list[int]] = {}
    for row in numbered:
        if row.action == "release":
            by_result.setdefault(id(row.result), []).append(row.number)
    rows = [
        [
            _label(by_result.get(id(r), [])),
            _provider(r),
            r.msisdn,
            _accounts(r.previous_holder_count),
            f"{len(r.release_handles)} can be released" if r.release_handles else "",
        ]
        for r in previous
    ]
    return ["", "Previous holders' accounts on your current numbers (count only)", *columns(rows)]


def _coverage_section(results: Sequence[Result], summary: Summary) -> list[str]:
    total = summary.total
    carriers_ok = sum(c.outcome.value == "answered" for c in summary.carriers)
    lines = [
        "",
        f"Coverage: {total.asked} asked, {total.answered} answered, {total.timed_out} timed out, "
        f"{total.failed} failed, {total.skipped} skipped; carriers {carriers_ok}/"
        f"{len(summary.carriers)} answered; {summary.elapsed.total_seconds():.2f} s",
    ]
    # In plain words: the gRPC status and the breaker's state are in --json
    # (each result's "detail") and in the gateway's log, not in a citizen's list.
    problems = [
        [f"carrier {c.carrier_id}", "", plain_outcome(c.outcome.value, c.detail)]
        for c in summary.carriers
        if c.outcome.value != "answered"
    ]
    problems += [
        [_provider(r), r.msisdn, plain_outcome(r.outcome.value, r.detail)]
        for r in results
        if r.outcome.value != "answered"
    ]
    if problems:
        lines += ["", "Not answered (accounts there may be missing from this list)"]
    return lines + columns(problems)


def render_table(
    started: Started, results: Sequence[Result], summary: Summary, *, unbind_hint: bool = True
) -> str:
    """The merged list as text: numbers, your accounts (left behind first),
    previous holders' counts, then coverage and who did not answer.

    Rows that can be acted on are numbered for ``onecert unbind ROW``;
    ``unbind_hint`` says how (off where the rows are not kept, as in the demo).
    """
    from onecert.cli._rows import number_rows  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    numbered = number_rows(results)
    lines = _numbers_section(started)
    lines += _accounts_section(results, numbered)
    lines += _previous_section(results, numbered)
    if numbered and unbind_hint:
        lines += [
            "",
            "To unbind a numbered row (or release your number from previous holders' "
            f"accounts): {onecert_command()} unbind ROW, with a fresh assertion.",
        ]
    lines += _coverage_section(results, summary)
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_json(started: Started, results: Sequence[Result], summary: Summary) -> dict[str, Any]:
    """The lookup as one JSON-ready document."""
    return {
        "query_id": started.query_id,
        "numbers": _plain([dataclasses.asdict(n) for n in started.numbers]),
        "carriers": _plain([dataclasses.asdict(c) for c in started.carriers]),
        "provider_calls": started.provider_calls,
        "results": [
            _plain({k: v for k, v in dataclasses.asdict(r).items() if k != "query_id"})
            for r in results
        ],
        "summary": _plain(
            {k: v for k, v in dataclasses.asdict(summary).items() if k != "query_id"}
        ),
    }
