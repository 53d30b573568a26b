"""``onecert demo``: a whole federation on this machine, and one citizen's lookup.

It makes fresh dev keys, starts the demo carriers and providers (one process
each, mutual TLS), starts a production-mode gateway, looks up the citizen of
the demo's story as the portal would, prints the merged list, and stops
every process again. See ``onecert.adapters.demo`` for the data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from onecert.cli import CommandError

if TYPE_CHECKING:
    from onecert.adapters.demo import Federation, ProviderSpec
    from onecert.sdk.client import Result, Started, Summary

_WIDTH = 78


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "demo",
        help="run a demo federation on this machine and look up one citizen",
        description=(
            "Start two carriers, seven providers (one slow, one down) and a gateway on this "
            "machine, each its own process speaking mutual TLS with fresh dev keys; look up "
            "a citizen whose old number was recycled; print her merged list; stop everything."
        ),
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(".demo"),
        metavar="DIR",
        help="where keys, logs and the gateway config go (default .demo)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N", help="seed of the synthetic data"
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the federation running after the lookup, until Ctrl-C",
    )
    parser.set_defaults(handler=_demo)


class _Out:
    """Writes the demo's output, flushed at once so progress is live."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def heading(self, text: str) -> None:
        self()
        self(text)
        self("-" * len(text))


def _demo(args: argparse.Namespace) -> int:
    from onecert.adapters.demo import DEFAULT_SEED, Federation  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    out = _Out(sys.stdout)
    begun = time.perf_counter()
    seed = DEFAULT_SEED if args.seed is None else args.seed
    if args.dir.exists() and not args.dir.is_dir():
        raise CommandError(f"--dir {args.dir} exists and is not a directory")
    federation = Federation(args.dir, seed=seed)
    status = 1
    try:
        status = asyncio.run(_run(federation, out, keep_running=args.keep_running))
    except (KeyboardInterrupt, asyncio.CancelledError):
        out()
        out("Interrupted.")
        status = 130
    finally:
        stopping = time.perf_counter()
        if federation.processes:
            out()
            out(f"Stopping {len(federation.processes)} processes ...")
        # A second Ctrl-C must not leave processes behind: stopping has its
        # own timeout (then SIGKILL), so it always ends soon.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            report = federation.stop()
        finally:
            signal.signal(signal.SIGINT, previous)
        if federation.processes:
            line = f"  stopped in {time.perf_counter() - stopping:.2f} s"
            if report.killed:
                line += f"; killed after the timeout: {', '.join(report.killed)}"
            out(line)
            for name, code in report.failed:
                out(f"  {name} exited with status {code}: see {federation.logs / name}.log")
                status = status or 1
    out()
    out(f"Total: {time.perf_counter() - begun:.1f} s. Logs and config are in {args.dir}/.")
    return status


async def _run(federation: Federation, out: _Out, *, keep_running: bool) -> int:
    from onecert.adapters.demo import StartupError  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stop_waiting = asyncio.Event()
    waiting = False

    def on_signal() -> None:
        # While the federation merely waits (--keep-running) a signal ends the
        # wait; at any other time it cancels the run, and _demo cleans up.
        if waiting:
            stop_waiting.set()
        else:
            main.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        _intro(federation, out)
        _story(federation, out)
        out.heading("Setting up")
        (federation.directory / "lookup.json").unlink(missing_ok=True)
        begun = time.perf_counter()
        try:
            await federation.start(on_step=lambda step, took: _step(federation, out, step, took))
        except StartupError as exc:
            out()
            out("Some processes did not start:")
            out(str(exc))
            return 1
        ok = await _lookup(federation, out, setup_s=time.perf_counter() - begun)
        if not ok:
            return 1
        if keep_running:
            _keep_running_help(federation, out)
            waiting = True
            await stop_waiting.wait()
        return 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


# ------------------------------------------------------------------ set-up


def _notes(spec: ProviderSpec) -> str:
    category = spec.category.value.replace("_", "-")
    if spec.down:
        return f"{category}; DOWN: configured in the gateway, not running"
    if spec.delay_s:
        return f"{category}; slow: answers after {spec.delay_s:g} s"
    return category


def _intro(federation: Federation, out: _Out) -> None:
    running = sum(not p.down for p in federation.providers)
    out(
        f"onecert demo: {len(federation.carriers)} carriers, {len(federation.providers)} "
        f"providers ({running} running) and a gateway on this machine."
    )
    out("Each is its own process and every connection is mutual TLS with fresh dev keys.")
    out("All companies, people and numbers are made up.")


def _step(federation: Federation, out: _Out, step: str, took: float) -> None:
    if step == "keys":
        out(f"  dev keys and certificates in {federation.keys.directory}  ({took:.2f} s)")
        return
    if step == "adapters":
        by_name = {p.name: p for p in federation.processes}
        rows = [["carrier", c.name, by_name[c.id].address, ""] for c in federation.carriers]
        rows += [
            [
                "provider",
                p.name,
                "-" if p.down else by_name[p.id].address,
                _notes(p),
            ]
            for p in federation.providers
        ]
        for line in _columns(rows, indent="    "):
            out(line)
        out(f"  {len(rows) - sum(p.down for p in federation.providers)} adapters ready  "
            f"({took:.2f} s)")  # fmt: skip
        return
    out(
        f"  gateway on {federation.gateway_address}: production mode (TLS, client "
        f"certificates, mutual TLS upstream)  ({took:.2f} s)"
    )


def _columns(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


# ------------------------------------------------------------------ the story


def _story(federation: Federation, out: _Out) -> None:
    from onecert.adapters.demo import STORY  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    carriers = {c.id: c.name for c in federation.carriers}
    providers = {p.id: p for p in federation.providers}
    payment = providers[STORY.left_behind[0][0]].name
    slow = [p.name for p in federation.providers if p.delay_s and not p.down]
    down = [p.name for p in federation.providers if p.down]
    s = STORY
    out.heading("The citizen")
    out(f"{s.citizen.name} signs in to the regulator's portal and proves who she is. The")
    out("gateway never sees her document number, only its keyed hash (the idn).")
    out(
        f"  * {s.former_from.year} to {s.former_until.year}: {s.former_number} at "
        f"{carriers[s.former_carrier]}. She cancelled it in"
    )
    out(
        f"    {s.former_until.year}; in {s.next_holder_from.year} the carrier gave it to "
        f"someone else. Her {payment}"
    )
    out("    wallet is still bound to it.")
    out(
        f"  * since {s.current_from.year}: {s.current_number} at {carriers[s.current_carrier]}. "
        "It came with accounts its"
    )
    out("    previous holder never unbound.")
    out.heading("What to look for")
    out("  * her left-behind payment account, listed first: whoever holds her old number")
    out("    now receives its SMS codes;")
    out("  * her own accounts on her current number, names masked;")
    out("  * the previous holder's accounts on her current number: counted, never named;")
    out("  * the new holder's accounts on her old number: neither shown nor counted;")
    if slow or down:
        parts = [f"{', '.join(slow)} is slow"] if slow else []
        parts += [f"{', '.join(down)} is down"] if down else []
        out(f"  * {' and '.join(parts)}: the other providers do not wait for them.")


# ------------------------------------------------------------------ the lookup


def _mint_assertion(federation: Federation) -> str:
    from onecert.adapters.demo import STORY  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.gateway._config import load_config  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.gateway._identity import AssertionIssuer  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk._idn import compute_idn  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk._keys import SigningKey  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk.devkeys import read_hex_key  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    config = load_config(federation.config_path)
    keys = federation.keys
    # What the identity service does after checking her: hash the document
    # number with the key it shares with the carriers, sign an assertion.
    idn = compute_idn(read_hex_key(keys.idn_key), STORY.citizen.document_number)
    issuer = AssertionIssuer(
        key=SigningKey.load(keys.identity_key), issuer=config.identity.issuers[0].issuer
    )
    return issuer.mint(
        sub=STORY.citizen_sub,
        idn=idn,
        audience=config.identity.audience,
        acr=config.identity.required_assurance,
        lifetime=120,
    )


def _result_line(result: Result) -> str:
    from onecert.sdk.client import Attribution, CallOutcome  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    if result.outcome is not CallOutcome.ANSWERED:
        what = result.outcome.value.replace("_", " ").upper()
        # The first clause is enough here; the merged list has the full detail.
        detail = result.detail.split(";", 1)[0]
        return f"{what}: {detail}" if detail else what
    left = sum(a.attribution is Attribution.LEFT_BEHIND for a in result.accounts)
    mine = len(result.accounts) - left
    parts = []
    if left:
        parts.append(f"{left} LEFT BEHIND")
    if mine:
        parts.append(f"{mine} of hers")
    if result.previous_holder_count:
        parts.append(f"{result.previous_holder_count} of a previous holder (count only)")
    return ", ".join(parts) or "nothing to show"


async def _lookup(federation: Federation, out: _Out, *, setup_s: float) -> bool:
    from onecert.cli._lookup import render_table, to_json  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk.client import GatewayClient, GatewayError, Result, Started, Summary  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    names = {p.id: p.name for p in federation.providers}
    carriers = {c.id: c.name for c in federation.carriers}
    out.heading("The lookup, as the portal runs it")
    assertion = _mint_assertion(federation)
    out("  identity assertion signed for her (2 minutes, one use); asking the gateway ...")
    started: Started | None = None
    results: list[Result] = []
    summary: Summary | None = None
    begun = time.perf_counter()
    try:
        async with GatewayClient(
            federation.gateway_address, tls=federation.client_tls("portal")
        ) as client:
            async for update in client.lookup(assertion, timeout=20):
                at = time.perf_counter() - begun
                if isinstance(update, Started):
                    started = update
                    answered = [
                        carriers.get(c.carrier_id, c.carrier_id)
                        + ("" if c.outcome.value == "answered" else f" ({c.outcome.value})")
                        for c in update.carriers
                    ]
                    out(f"  {at:5.2f} s  carriers: {', '.join(answered)}")
                    out(
                        f"  {at:5.2f} s  {len(update.numbers)} numbers under her identity; "
                        f"{update.provider_calls} provider calls (every provider, every number)"
                    )
                elif isinstance(update, Result):
                    results.append(update)
                    name = names.get(update.provider_id, update.provider_name)
                    out(f"  {at:5.2f} s  {name:<17} {update.msisdn:<15}  {_result_line(update)}")
                elif isinstance(update, Summary):
                    summary = update
    except GatewayError as exc:
        out(f"  the gateway refused the lookup: {exc}")
        _tail(federation, out, "gateway")
        return False
    took = time.perf_counter() - begun
    if started is None or summary is None:
        out("  the gateway ended the lookup without a summary")
        _tail(federation, out, "gateway")
        return False
    out.heading("Her merged list")
    out(render_table(started, results, summary))
    document = to_json(started, results, summary)
    (federation.directory / "lookup.json").write_text(
        json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    out.heading("Timing")
    out(f"  set-up: {setup_s:.2f} s (keys, {len(federation.processes)} processes, health checks)")
    slowest = max(results, key=lambda r: r.elapsed, default=None)
    out(
        f"  lookup: {took:.2f} s as the portal saw it "
        f"(the gateway counted {summary.elapsed.total_seconds():.2f} s)"
    )
    if slowest is not None:
        fastest = min(results, key=lambda r: r.elapsed)
        out(
            f"  provider calls: {fastest.elapsed.total_seconds() * 1000:.0f} ms to "
            f"{slowest.elapsed.total_seconds() * 1000:.0f} ms "
            f"(slowest: {names.get(slowest.provider_id, slowest.provider_name)})"
        )
    return True


def _tail(federation: Federation, out: _Out, name: str) -> None:
    process = next((p for p in federation.processes if p.name == name), None)
    if process is None:
        return
    out(f"  last lines of {process.log}:")
    for line in process.log_tail():
        out(f"    {line}")


def _keep_running_help(federation: Federation, out: _Out) -> None:
    from onecert.adapters.demo import IDENTITY_ISSUER, STORY  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    keys = federation.keys
    out.heading("Still running (Ctrl-C stops everything)")
    out("Look her up again (an assertion is good for one lookup and two minutes):")
    out(
        f"  onecert assertion mint --key {keys.identity_key} --issuer {IDENTITY_ISSUER} "
        f"--sub {STORY.citizen_sub} --document {STORY.citizen.document_number} "
        f"--idn-key {keys.idn_key} --out {federation.directory / 'assertion.jwt'}"
    )
    out(
        f"  onecert lookup --gateway {federation.gateway_address} --ca {keys.ca_cert} "
        f"--cert {keys.client_cert('portal')} --key {keys.client_key('portal')} "
        f"--assertion {federation.directory / 'assertion.jwt'}"
    )
