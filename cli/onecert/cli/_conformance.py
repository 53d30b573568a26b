"""``onecert conformance``: check any provider or carrier against the contract."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onecert.cli import CommandError
from onecert.cli._common import add_command, add_tls_flags, client_tls

if TYPE_CHECKING:
    from onecert.sdk._keys import SigningKey
    from onecert.sdk.conformance import Report


class _ListChecks(argparse.Action):
    """``--list``: print every check, with the rule of docs/contract.md it checks, and exit."""

    def __init__(self, option_strings: list[str], dest: str, kinds: tuple[str, ...]) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="print every check with its rule id (docs/contract.md) and exit",
        )
        self.kinds = kinds

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        from onecert.sdk.conformance import (  # noqa: PLC0415 - lazy CLI import
            CARRIER_CHECKS,
            FILTER_CHECKS,
            PROVIDER_CHECKS,
        )

        checks = {"provider": PROVIDER_CHECKS, "carrier": CARRIER_CHECKS, "filter": FILTER_CHECKS}
        for kind in self.kinds:
            for rule, name in checks[kind]:
                print(f"{kind:<8}  {rule:<5} {name}")
        parser.exit()


def register(sub: argparse._SubParsersAction[Any]) -> None:
    conformance = sub.add_parser(
        "conformance",
        help="play the gateway against a running provider or carrier and check the contract",
        description=(
            "Play the gateway against a running provider or carrier. Every check is named "
            "by the rule of docs/contract.md it checks (--list prints them)."
        ),
    )
    conformance.add_argument("--list", action=_ListChecks, kinds=("provider", "carrier", "filter"))
    kinds = conformance.add_subparsers(dest="conformance_kind", required=True, metavar="KIND")

    provider = add_command(kinds, "provider", _provider)
    provider.add_argument("--list", action=_ListChecks, kinds=("provider",))
    _common_options(provider)
    provider.add_argument(
        "--provider-id",
        metavar="ID",
        help="the provider's id (warrant audience); default: what Describe says, "
        "and when given it must match Describe",
    )
    provider.add_argument(
        "--known-number",
        action="append",
        required=True,
        metavar="E164",
        help="a number with at least one binding (repeatable)",
    )
    provider.add_argument(
        "--unknown-number",
        metavar="E164",
        help="a number with no binding (default: a random +999 number)",
    )
    provider.add_argument(
        "--unbind",
        metavar="NUMBER:ACCOUNT_REF",
        help="a test account the provider may really unbind, for the unbind checks U-4 to "
        "U-7 (skipped without it)",
    )

    carrier = add_command(kinds, "carrier", _carrier)
    carrier.add_argument("--list", action=_ListChecks, kinds=("carrier",))
    _common_options(carrier)
    carrier.add_argument(
        "--carrier-id",
        required=True,
        metavar="ID",
        help="the carrier's id: the warrant audience and every tenure's carrier_id",
    )
    carrier.add_argument(
        "--known-idn",
        action="append",
        required=True,
        metavar="HEX",
        help="an idn with at least one tenure (repeatable)",
    )
    carrier.add_argument(
        "--unknown-idn", metavar="HEX", help="an idn with no tenure (default: a random one)"
    )
    _add_filter(kinds)


def _add_filter(kinds: argparse._SubParsersAction[Any]) -> None:
    routing = add_command(kinds, "filter", _filter)
    routing.add_argument("--list", action=_ListChecks, kinds=("filter",))
    routing.add_argument(
        "--snapshot", required=True, type=Path, metavar="FILE", help="the serialized snapshot"
    )
    routing.add_argument(
        "--key-file",
        required=True,
        type=Path,
        metavar="FILE",
        help="the routing key from GetRoutingKey, as hex (never on the command line)",
    )
    routing.add_argument("--key-version", required=True, type=int, metavar="N", help="its version")
    routing.add_argument(
        "--numbers",
        type=Path,
        metavar="FILE",
        help="numbers the snapshot must hold, one E.164 number a line",
    )
    routing.add_argument(
        "--additions", type=Path, metavar="FILE", help="serialized additions to check too"
    )
    routing.add_argument(
        "--added", type=Path, metavar="FILE", help="numbers the additions must hold"
    )
    routing.add_argument("--json", action="store_true", help="print the report as JSON")


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {what} {path}: {exc.strerror}") from None


def _lines(path: Path | None, what: str) -> list[str]:
    data = _read(path, what)
    if data is None:
        return []
    return [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]


def _filter(args: argparse.Namespace) -> int:
    """check a routing filter a provider built (offline)

    Check the snapshot (and additions) a provider would publish with Gateway.PublishFilter: the
    version 1 format, the routing key it is keyed with, and that every number it holds is in it
    (docs/contract.md, section R). Exit status 0 only if no check failed.
    """
    from onecert.sdk._keys import KeyConfigError, load_hex_key  # noqa: PLC0415 - lazy CLI import
    from onecert.sdk.conformance import check_filter  # noqa: PLC0415 - lazy CLI import

    try:
        key = load_hex_key(args.key_file, what="routing key", size=32)
    except KeyConfigError as exc:
        raise CommandError(str(exc)) from None
    snapshot = _read(args.snapshot, "the snapshot")
    assert snapshot is not None  # --snapshot is required
    report = check_filter(
        snapshot=snapshot,
        key=key,
        key_version=args.key_version,
        numbers=_lines(args.numbers, "the numbers"),
        additions=_read(args.additions, "the additions"),
        added=_lines(args.added, "the added numbers"),
    )
    return _show(report, as_json=args.json)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, metavar="HOST:PORT", help="where it listens")
    parser.add_argument(
        "--warrant-key",
        required=True,
        metavar="PEM",
        help="the gateway's warrant signing key the target trusts (keys/warrant.key.pem)",
    )
    parser.add_argument(
        "--issuer",
        default="onecert-gateway",
        help="the gateway id the target expects as issuer (default: %(default)s)",
    )
    add_tls_flags(parser, what="the target")
    timing = parser.add_argument_group("timing (seconds)")
    timing.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="deadline of each call (%(default)s)",
    )
    timing.add_argument(
        "--short-deadline",
        type=float,
        default=0.5,
        metavar="S",
        help="deadline of the short-deadline check (%(default)s)",
    )
    timing.add_argument(
        "--slack",
        type=float,
        default=1.0,
        metavar="S",
        help="how late a call may end (%(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _warrant_key(args: argparse.Namespace) -> SigningKey:
    from onecert.sdk._keys import KeyConfigError, SigningKey  # noqa: PLC0415 - lazy CLI import

    try:
        return SigningKey.load(args.warrant_key)
    except KeyConfigError as exc:
        raise CommandError(str(exc)) from exc


def _check_timing(args: argparse.Namespace) -> None:
    for name in ("timeout", "short_deadline", "slack"):
        if getattr(args, name) <= 0:
            raise CommandError(f"--{name.replace('_', '-')} must be positive")


def _show(report: Report, *, as_json: bool) -> int:
    print(report.to_json() if as_json else report.to_table())
    return 0 if report.ok else 1


def _provider(args: argparse.Namespace) -> int:
    """check a BindingProvider

    Play the gateway against a running BindingProvider, whatever it is written in, and print a table
    of checks. Exit status 0 only if no check failed (skipped checks say why and do not fail).
    Unbinds are only sent for the --unbind account and for account refs that cannot exist.
    """
    from onecert.sdk.conformance import check_provider  # noqa: PLC0415 - lazy CLI import

    unbind: tuple[str, str] | None = None
    if args.unbind is not None:
        number, sep, account_ref = args.unbind.partition(":")
        if not sep or not number or not account_ref:
            raise CommandError("--unbind takes NUMBER:ACCOUNT_REF")
        unbind = (number, account_ref)
    return _run_check(
        args,
        check_provider,
        provider_id=args.provider_id,
        known_numbers=args.known_number,
        unknown_number=args.unknown_number,
        unbind=unbind,
    )


def _carrier(args: argparse.Namespace) -> int:
    """check a NumberRegistry

    Play the gateway against a running NumberRegistry and print a table of checks. Exit status 0
    only if no check failed.
    """
    from onecert.sdk.conformance import check_carrier  # noqa: PLC0415 - lazy CLI import

    return _run_check(
        args,
        check_carrier,
        carrier_id=args.carrier_id,
        known_idns=args.known_idn,
        unknown_idn=args.unknown_idn,
    )


def _run_check(
    args: argparse.Namespace, check: Callable[..., Coroutine[Any, Any, Report]], **subject: Any
) -> int:
    """Run ``check`` with the options every check takes, plus ``subject``; print the report."""
    _check_timing(args)
    key, tls = _warrant_key(args), client_tls(args)
    try:
        report = asyncio.run(
            check(
                target=args.target,
                warrant_key=key,
                issuer=args.issuer,
                tls=tls,
                call_timeout=args.timeout,
                short_deadline=args.short_deadline,
                slack=args.slack,
                **subject,
            )
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    return _show(report, as_json=args.json)
