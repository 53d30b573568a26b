"""``onecert demo``: a whole federation on this machine, and one citizen's story.

It makes fresh dev keys, starts the demo carriers and providers (one process
each, mutual TLS), starts a production-mode gateway (its state in a SQLite
file), looks up the citizen of the demo's story as the portal would, prints
the merged list, unbinds her left-behind account and shows the receipt,
has a carrier report a recycled number that one provider ignores, prints the
regulator's compliance report, verifies the audit chain, and stops every
process again. Each caller uses its own client certificate. See
``onecert.adapters.demo`` for the data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from onecert.cli import CommandError
from onecert.cli._common import add_command, onecert_command

if TYPE_CHECKING:
    from onecert.adapters.demo import DemoFederation, ProviderSpec
    from onecert.gateway.store import Delivery
    from onecert.sdk.client import (
        GatewayClient,
        Receipt,
        Result,
        Started,
        Summary,
        TicketState,
    )

    _Line = Callable[[str], None]

_WIDTH = 78
# How often the citizen's receipt and the notice's deliveries are looked at.
_WATCH_S = 0.1
# The longest the demo waits for an unbind to be final, or for a notice's
# deliveries to settle after its deadline.
_UNBIND_PATIENCE_S = 20.0
_NOTICE_PATIENCE_S = 5.0
# How long a notice's line is held back, so that lines come in time order.
_HOLD_S = 0.3


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = add_command(sub, "demo", _demo)
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
        help="leave the federation running at the end, until Ctrl-C",
    )


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

    def paragraph(self, text: str) -> None:
        """``text`` wrapped to the demo's width, indented like the steps."""
        self(textwrap.fill(text, _WIDTH, initial_indent="  ", subsequent_indent="  "))

    def bullet(self, text: str) -> None:
        """``text`` as a list item, wrapped to the demo's width."""
        self(textwrap.fill(text, _WIDTH, initial_indent="  * ", subsequent_indent="    "))


def _demo(args: argparse.Namespace) -> int:
    """run a demo federation on this machine: lookup, unbind, notices, compliance

    Start two carriers, seven providers (one slow, one down, one that ignores recycled-number
    notices) and a gateway on this machine, each its own process speaking mutual TLS with fresh dev
    keys; look up a citizen whose old number was recycled; print her merged list; unbind her
    left-behind account and show the receipt; have a carrier report a recycled number; print the
    regulator's compliance report; verify the audit log; stop everything.
    """
    from onecert.adapters.demo import DEFAULT_SEED, DemoFederation, DirectoryInUseError  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    out = _Out(sys.stdout)
    begun = time.perf_counter()
    seed = DEFAULT_SEED if args.seed is None else args.seed
    if args.dir.exists() and not args.dir.is_dir():
        raise CommandError(f"--dir {args.dir} exists and is not a directory")
    federation = DemoFederation(args.dir, seed=seed)
    try:
        # Before anything is written: a second demo here would replace the
        # first one's keys and config and delete its database.
        federation.lock()
    except DirectoryInUseError as exc:
        who = f" (pid {exc.holder})" if exc.holder else ""
        raise CommandError(
            f"another onecert demo is running in {args.dir}{who}. Stop it (Ctrl-C in its "
            f"terminal), or give this one a directory of its own: "
            f"{onecert_command()} demo --dir {args.dir.with_name(args.dir.name + '-2')}"
        ) from None
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


async def _run(federation: DemoFederation, out: _Out, *, keep_running: bool) -> int:
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
        for name in ("lookup.json", "lookup-after-unbind.json"):
            (federation.directory / name).unlink(missing_ok=True)
        begun = time.perf_counter()
        try:
            await federation.start(on_step=lambda step, took: _step(federation, out, step, took))
        except StartupError as exc:
            out()
            out("Some processes did not start:")
            out(str(exc))
            return 1
        if not _join_by_invitation(federation, out):
            return 1
        portal = _Portal(federation)
        results = await _lookup(federation, out, portal, setup_s=time.perf_counter() - begun)
        if results is None:
            return 1
        if not await _unbind_left_behind(federation, out, portal, results):
            return 1
        if not await _check_at_login(federation, out):
            return 1
        if not await _recycled_notice(federation, out):
            return 1
        if not await _compliance(federation, out):
            return 1
        if not await _audit(federation, out):
            return 1
        if keep_running:
            await _start_portal(federation, out)
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
    if spec.joins:
        return f"{category}; not configured: joins by invitation"
    if spec.down:
        return f"{category}; DOWN: configured in the gateway, not running"
    if spec.delay_s:
        return f"{category}; slow: answers after {spec.delay_s:g} s"
    return category


def _intro(federation: DemoFederation, out: _Out) -> None:
    running = sum(not p.down for p in federation.providers)
    out(
        f"onecert demo: {len(federation.carriers)} carriers, {len(federation.providers)} "
        f"providers ({running} running) and a gateway on this machine."
    )
    out("Each is its own process and every connection is mutual TLS with fresh dev keys.")
    out("All companies, people and numbers are made up.")


def _step(federation: DemoFederation, out: _Out, step: str, took: float) -> None:
    if step == "keys":
        out(f"  dev keys and certificates in {federation.keys.directory}  ({took:.2f} s)")
        return
    if step == "adapters":
        from onecert.cli._lookup import columns  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

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
        for line in columns(rows, indent="    "):
            out(line)
        out(f"  {len(rows) - sum(p.down for p in federation.providers)} adapters ready  "
            f"({took:.2f} s)")  # fmt: skip
        return
    out(
        f"  gateway on {federation.gateway_address}: production mode (TLS, client "
        f"certificates, mutual TLS upstream)  ({took:.2f} s)"
    )
    if federation.history_reported:
        out(
            f"  the carriers reported {federation.history_reported} past events of their "
            "numbers as history (for CheckRecycled; no notices)"
        )


# ------------------------------------------------------------------ the story


def _story(federation: DemoFederation, out: _Out) -> None:
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
    ignoring = [p.name for p in federation.providers if p.ignores_notices and not p.down]
    out.heading("What to look for")
    out("  * her left-behind payment account, listed first: whoever holds her old number")
    out("    now receives its SMS codes;")
    out("  * her own accounts on her current number, names masked;")
    out("  * the previous holder's accounts on her current number: counted, never named;")
    out("  * the new holder's accounts on her old number: neither shown nor counted;")
    if slow or down:
        parts = [f"{', '.join(slow)} is slow"] if slow else []
        parts += [f"{', '.join(down)} is down"] if down else []
        out.bullet(f"{' and '.join(parts)}: the other providers do not wait for them;")
    out.bullet("she unbinds the left-behind wallet and gets a receipt from the provider;")
    out.bullet(
        "a provider checks her old number before an SMS login: the gateway says it was "
        "recycled, as her lookup does;"
    )
    ignores = f" ({', '.join(ignoring)} ignores it)" if ignoring else ""
    out.bullet(
        f"{carriers[s.former_carrier]} reports a number it gave to a new subscriber: every "
        f"provider must act on the notice before a deadline{ignores};"
    )
    out.bullet("the regulator's compliance report names who acted on time, and who never did.")


# ------------------------------------------------------------------ the lookup


class _Portal:
    """What the portal holds for the citizen: an identity assertion per call.

    Assertions are good for one call (the gateway remembers each ``jti``),
    so every lookup, unbind and receipt gets a fresh one.
    """

    def __init__(self, federation: DemoFederation) -> None:
        from onecert.adapters.demo import STORY  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
        from onecert.gateway._config import load_config  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
        from onecert.gateway._identity import AssertionIssuer  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
        from onecert.sdk._idn import compute_idn  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
        from onecert.sdk._keys import SigningKey  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
        from onecert.sdk.devkeys import read_hex_key  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

        self._config = load_config(federation.config_path)
        keys = federation.keys
        # What the identity service does after checking her: hash the document
        # number with the key it shares with the carriers, sign an assertion.
        self._idn = compute_idn(read_hex_key(keys.idn_key), STORY.citizen.document_number)
        self._sub = STORY.citizen_sub
        self._issuer = AssertionIssuer(
            key=SigningKey.load(keys.identity_key), issuer=self._config.identity.issuers[0].issuer
        )
        self.tls = federation.client_tls("portal")

    def assertion(self) -> str:
        """A fresh assertion for her: two minutes, one use."""
        return self._issuer.mint(
            sub=self._sub,
            idn=self._idn,
            audience=self._config.identity.audience,
            acr=self._config.identity.required_assurance,
            lifetime=120,
        )


def _result_line(result: Result) -> str:
    from onecert.cli._lookup import plain_outcome  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk.client import Attribution, CallOutcome  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    if result.outcome is not CallOutcome.ANSWERED:
        # Plain words; the technical detail is in lookup.json and the gateway's log.
        return plain_outcome(result.outcome.value, result.detail)
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


def _join_by_invitation(federation: DemoFederation, out: _Out) -> bool:
    """The regulator invites each provider the configuration does not name; each joins by
    itself (key pair, CSR and token), passes the conformance gate and becomes active."""
    from onecert.adapters.demo._join import credentials_dir  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    if not federation.joined:
        return True
    out.heading("Joining by invitation")
    run = federation.gateway_address_file.parent
    for joined in federation.joined:
        spec, record = joined.spec, joined.record
        out(f"  the regulator invites {spec.name} ({spec.id}): a one-time token, kept as a hash")
        out(
            f"  {spec.name} makes its key pair, sends a CSR with the token to the join "
            f"listener (port {joined.join_port})"
        )
        serial = (record.certificate_serial or "-")[:16]
        until = record.certificate_not_after
        out(
            f"  the federation CA certifies {spec.id!r} (serial {serial}...), "
            f"until {'-' if until is None else f'{until:%Y-%m-%d %H:%M} UTC'}"
        )
        if not joined.active:
            status = "unknown" if record.status is None else record.status.value
            out(f"  {spec.name} is {status}: NOT activated")
            gate = record.last_gate
            for failure in () if gate is None else gate.failures:
                out(f"    FAIL {failure}")
            out(f"  see {federation.logs / spec.id}.log and {credentials_dir(run, spec.id)}")
            return False
        out(
            f"  the conformance gate passed against it over mutual TLS: {spec.name} is active "
            f"({joined.seconds:.2f} s from invitation)"
        )
    return True


async def _lookup(
    federation: DemoFederation, out: _Out, portal: _Portal, *, setup_s: float
) -> list[Result] | None:
    from onecert.cli._lookup import render_table, to_json  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk.client import GatewayClient, GatewayError, Result, Started, Summary  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    names = {p.id: p.name for p in federation.providers}
    carriers = {c.id: c.name for c in federation.carriers}
    out.heading("The lookup, as the portal runs it")
    assertion = portal.assertion()
    out("  identity assertion signed for her (2 minutes, one use); asking the gateway ...")
    started: Started | None = None
    results: list[Result] = []
    summary: Summary | None = None
    begun = time.perf_counter()
    try:
        async with GatewayClient(federation.gateway_address, tls=portal.tls) as client:
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
        return None
    took = time.perf_counter() - begun
    if started is None or summary is None:
        out("  the gateway ended the lookup without a summary")
        _tail(federation, out, "gateway")
        return None
    out.heading("Her merged list")
    # Her rows are numbered as `onecert lookup` numbers them; the demo keeps no
    # rows file (--keep-running shows how to unbind by row with a lookup of her own).
    out(render_table(started, results, summary, unbind_hint=False))
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
    return results


# ------------------------------------------------------------------ the unbind


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _receipt_lines(receipt: Receipt, provider: str) -> list[str]:
    from onecert.cli._unbind import aligned, receipt_rows  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    answer = receipt.provider_outcome.value if receipt.provider_outcome else "-"
    if receipt.provider_reason:
        answer += f" ({receipt.provider_reason})"
    rows = receipt_rows(receipt, provider=provider, when=_when)
    rows += [("provider's answer", answer), ("answered", _when(receipt.answered_at))]
    if receipt.last_error:
        rows.append(("last error", receipt.last_error))
    return aligned(rows, indent="    ")


def _attempts(n: int) -> str:
    return f"{n} attempt" + ("" if n == 1 else "s")


async def _unbind_left_behind(
    federation: DemoFederation, out: _Out, portal: _Portal, results: Sequence[Result]
) -> bool:
    from onecert.sdk.client import Attribution, GatewayClient, GatewayError  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    names = {p.id: p.name for p in federation.providers}
    out.heading("She unbinds the left-behind wallet")
    found = next(
        (
            (result, account)
            for result in results
            for account in result.accounts
            if account.attribution is Attribution.LEFT_BEHIND and account.handle
        ),
        None,
    )
    if found is None:
        out("  the lookup showed no left-behind account to unbind")
        return False
    result, account = found
    provider = names.get(result.provider_id, result.provider_name)
    out.paragraph(
        f"Unbind with the handle of her {provider} account on {result.msisdn} (sealed by "
        "the gateway, for her alone) and a fresh assertion; the gateway commits a ticket and "
        "delivers it to the provider in the background. She watches the ticket, each look "
        "with a fresh assertion too."
    )
    begun = time.perf_counter()

    def line(text: str) -> None:
        out(f"  {time.perf_counter() - begun:5.2f} s  {text}")

    try:
        async with GatewayClient(federation.gateway_address, tls=portal.tls) as client:
            ticket = await client.unbind(portal.assertion(), account.handle)
            news = "new" if ticket.created else "already requested"
            line(f"ticket {ticket.ticket_id}: {ticket.state.value} ({news}), answered at once")
            receipt = await _watch_ticket(client, portal, ticket.ticket_id, ticket.state, line)
            if receipt is None:
                _tail(federation, out, "gateway")
                return False
            out("  The receipt:")
            for text in _receipt_lines(receipt, provider):
                out(text)
            if receipt.state.value != "done":
                out(f"  {provider} did not unbind the account")
                return False
            return await _look_again(federation, out, client, portal, unbound=result, line=line)
    except GatewayError as exc:
        out(f"  the gateway refused: {exc}")
        _tail(federation, out, "gateway")
        return False


async def _watch_ticket(
    client: GatewayClient, portal: _Portal, ticket_id: str, state: TicketState, line: _Line
) -> Receipt | None:
    """Poll the receipt until it is final; print each change of state."""
    patience = time.perf_counter() + _UNBIND_PATIENCE_S
    while True:
        receipt = await client.get_unbind(portal.assertion(), ticket_id)
        if receipt.state is not state:
            state = receipt.state
            text = f"{state.value} after {_attempts(receipt.attempts)}"
            if receipt.last_error and not receipt.final:
                text += f"; last error: {receipt.last_error}"
            line(text)
        if receipt.final:
            return receipt
        if time.perf_counter() > patience:
            line(f"still {state.value} after {_UNBIND_PATIENCE_S:g} s; giving up watching")
            return None
        await asyncio.sleep(_WATCH_S)


async def _look_again(
    federation: DemoFederation,
    out: _Out,
    client: GatewayClient,
    portal: _Portal,
    *,
    unbound: Result,
    line: _Line,
) -> bool:
    """A second lookup (fresh assertion): the unbound account is gone."""
    from onecert.cli._lookup import to_json  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk.client import Attribution, CallOutcome, Result, Started, Summary  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    started: Started | None = None
    summary: Summary | None = None
    results: list[Result] = []
    async for update in client.lookup(portal.assertion(), timeout=20):
        if isinstance(update, Started):
            started = update
        elif isinstance(update, Result):
            results.append(update)
        elif isinstance(update, Summary):
            summary = update
    if started is None or summary is None:
        out("  the gateway ended the second lookup without a summary")
        return False
    (federation.directory / "lookup-after-unbind.json").write_text(
        json.dumps(to_json(started, results, summary), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    names = {p.id: p.name for p in federation.providers}
    provider = names.get(unbound.provider_id, unbound.provider_name)
    left = sum(a.attribution is Attribution.LEFT_BEHIND for r in results for a in r.accounts)
    same = next(
        (r for r in results if r.provider_id == unbound.provider_id and r.msisdn == unbound.msisdn),
        None,
    )
    if same is None or same.outcome is not CallOutcome.ANSWERED:
        line(f"looked up again: {provider} did not answer for {unbound.msisdn}")
        return False
    if same.accounts or left:
        line(f"looked up again: {left} account(s) still left behind")
        return False
    line(f"looked up again: {provider} lists nothing on {unbound.msisdn}; nothing left behind")
    return True


# ------------------------------------------------------------------ at login


async def _check_at_login(federation: DemoFederation, out: _Out) -> bool:
    """A provider asks CheckRecycled about her former number: the same story as her lookup."""
    from onecert.adapters.demo import STORY  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk.client import GatewayError, ProviderGatewayClient  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    # Only providers that call the gateway have a client certificate.
    checker = next((p for p in federation.providers if p.notices == "poll" and not p.down), None)
    if checker is None:
        return True
    since = STORY.former_from
    out.heading("At login: was this number recycled since?")
    out.paragraph(
        f"Before {checker.name} sends an SMS code to an account bound to {STORY.former_number} "
        f"since {since:%Y-%m-%d}, it asks the gateway (CheckRecycled, with its own client "
        "certificate). The carriers reported their numbers' history when they joined, so "
        "the answer tells the same story as her lookup:"
    )
    try:
        async with ProviderGatewayClient(
            federation.gateway_address, tls=federation.client_tls(checker.id)
        ) as client:
            answer = await client.check_recycled(STORY.former_number, since)
    except GatewayError as exc:
        out(f"  the gateway refused the check: {exc}")
        _tail(federation, out, "gateway")
        return False
    if not answer.recycled or answer.recycled_at is None:
        out(f"  {answer.status.value}: not what her lookup shows (her old number, recycled)")
        return False
    out(
        f"  RECYCLED on {answer.recycled_at:%Y-%m-%d}: someone else holds the number now, so "
        f"{checker.name} refuses the SMS login to the old account"
    )
    return True


# ------------------------------------------------------------------ the notice


def _short_error(text: str) -> str:
    """A delivery error's gist: its status code, or its first clause (numbers masked)."""
    from onecert.sdk._msisdn import mask_numbers_in_text  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    first = text.split(";", 1)[0].strip()
    code, sep, _ = first.partition(":")
    if sep and code.isupper() and code.replace("_", "").isalpha():
        return code
    return mask_numbers_in_text(first)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _delivery_update(delivery: Delivery, now: datetime) -> tuple[datetime, str] | None:
    """Where one provider's copy of the notice stands, and since when (None: nothing yet)."""
    from onecert.gateway.store import DeliveryMode, DeliveryState  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    how = "fetched by polling" if delivery.mode is DeliveryMode.POLL else "pushed"
    if delivery.state is DeliveryState.FAILED:
        # "not acknowledged before the deadline; last error: UNAVAILABLE: ..."
        codes = re.findall(r"\b[A-Z][A-Z_]{3,}\b", delivery.last_error or "")
        why = codes[0] if codes else _short_error(delivery.last_error or "no reason given")
        return now, f"never delivered ({why}); given up at the deadline"
    if delivery.state is DeliveryState.ACKNOWLEDGED:
        if delivery.acted_at is None:
            return delivery.acknowledged_at or now, f"{how}, acknowledged; no action confirmed"
        removed = _plural(delivery.bindings_removed or 0, "binding")
        return delivery.acted_at, f"{how}, acknowledged, acted: {removed} removed"
    if delivery.last_error:
        why = _short_error(delivery.last_error)
        return now, f"unreachable ({why}); retried until the deadline"
    if delivery.delivered_at is not None:
        return delivery.delivered_at, how
    return None


async def _recycled_notice(federation: DemoFederation, out: _Out) -> bool:
    from onecert.adapters.demo import number_to_recycle  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk._msisdn import mask_msisdn  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk.client import CarrierGatewayClient, GatewayError, NumberEventType  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    handed_over = number_to_recycle(federation.seed)
    carrier = next((c for c in federation.carriers if c.id == handed_over.carrier_id), None)
    if carrier is None:
        return True  # a federation without the story's carrier: nothing to report
    # The number is someone else's: shown masked, like in every log.
    number = mask_msisdn(handed_over.msisdn)
    out.heading("A recycled number: the notice, and who acts on it")
    out.paragraph(
        f"Today {carrier.name} gives {number}, given up by its last subscriber, to a new "
        "one: accounts bound to it before today are not the new holder's. The carrier "
        "reports it with ReportNumberEvent and its own client certificate (it may report "
        f"numbers in {', '.join(carrier.prefixes)} only). Every provider gets a notice "
        f"signed by the gateway and {federation.notice_deadline_s:g} s to act (days in "
        "production). As the gateway's database records it:"
    )
    try:
        async with CarrierGatewayClient(
            federation.gateway_address, tls=federation.client_tls(carrier.id)
        ) as client:
            reported = await client.report_number_event(
                event_id=f"{carrier.id}-handover-1",
                msisdn=handed_over.msisdn,
                event_type=NumberEventType.RECYCLED,
                effective_at=datetime.now(UTC),
            )
    except GatewayError as exc:
        out(f"  the gateway refused the report: {exc}")
        _tail(federation, out, "gateway")
        return False
    out(
        f"   0.00 s  notice {reported.notice_id} recorded, going to "
        f"{_plural(reported.providers, 'provider')}"
    )
    await _watch_deliveries(federation, out, reported.notice_id)
    return True


async def _watch_deliveries(federation: DemoFederation, out: _Out, notice_id: str) -> None:
    """Print each provider's copy of the notice as it changes, timed from when the
    notice was recorded, until its deadline has passed and every copy is settled."""
    from datetime import timedelta  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    from onecert.gateway.store import DeliveryState, Store  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    names = {p.id: p.name for p in federation.providers}
    width = max(len(n) for n in names.values())
    shown: dict[str, str] = {}
    # Lines wait a moment before they are printed: a copy settled a little
    # earlier may show up in the database a little later, and the lines
    # should come in the order things happened.
    held: list[tuple[float, str]] = []
    deadline_told = False
    store = Store.open(federation.store_url)
    try:
        while True:
            deliveries = await store.deliveries.for_notice(notice_id)
            now = datetime.now(UTC)
            if not deliveries:
                return
            notice = deliveries[0].notice

            def since(when: datetime, recorded: datetime = notice.recorded_at) -> float:
                return max(0.0, (when - recorded).total_seconds())

            news = []
            for delivery in deliveries:
                update = _delivery_update(delivery, now)
                if update is not None and shown.get(delivery.provider_id) != update[1]:
                    shown[delivery.provider_id] = update[1]
                    name = names.get(delivery.provider_id, delivery.provider_id)
                    news.append((since(update[0]), f"{name:<{width}}  {update[1]}"))
            if now > notice.deadline and not deadline_told:
                deadline_told = True
                never = sorted(
                    names.get(d.provider_id, d.provider_id)
                    for d in deliveries
                    if d.acted_at is None
                )
                tail = f"; no action from {', '.join(never)}" if never else ""
                news.append((since(notice.deadline), f"the deadline passed{tail}"))
            held.extend(news)
            settled = all(d.state is not DeliveryState.PENDING for d in deliveries)
            done = deadline_told and settled
            late = now > notice.deadline + timedelta(seconds=_NOTICE_PATIENCE_S)
            ripe = since(now) - _HOLD_S
            held.sort()
            while held and (done or late or held[0][0] <= ripe):
                at, text = held.pop(0)
                out(f"  {at:5.2f} s  {text}")
            if done:
                return
            if late:
                out("  (some copies are still being retried; moving on)")
                return
            await asyncio.sleep(_WATCH_S)
    finally:
        await store.close()


# ------------------------------------------------------------------ the regulator


async def _compliance(federation: DemoFederation, out: _Out) -> bool:
    from onecert.adapters.demo import ADMIN_CN  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.cli._report import render_table  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.sdk.client import AdminGatewayClient, GatewayError  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    out.heading("The regulator's compliance report")
    out(f"  GetComplianceReport, with the regulator's client certificate (CN={ADMIN_CN}):")
    try:
        async with AdminGatewayClient(
            federation.gateway_address, tls=federation.client_tls(ADMIN_CN)
        ) as client:
            report = await client.compliance_report(timeout=10)
    except GatewayError as exc:
        out(f"  the gateway refused the report: {exc}")
        _tail(federation, out, "gateway")
        return False
    out()
    for text in render_table(report).splitlines():
        out(f"  {text}".rstrip())
    specs = {p.id: p for p in federation.providers}
    notes = []
    for line in report.providers:
        spec = specs.get(line.provider_id)
        name = spec.name if spec else line.provider_name
        if line.never_received:
            notes.append(
                f"{name} was unreachable: the notice never reached it, so it could not act "
                "(a failure of its service, not a refusal to act)."
            )
        if line.never_acted - line.never_received:
            notes.append(
                f"{name} received the notice and never acted: what it has bound to "
                "that number stays bound, for whoever holds the number now."
            )
    if notes:
        out()
        for note in notes:
            out.paragraph(note)
    return True


async def _audit(federation: DemoFederation, out: _Out) -> bool:
    from onecert.gateway.store import Store  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    out.heading("The audit log")
    store = Store.open(federation.store_url)
    try:
        result = await store.audit.verify()
    finally:
        await store.close()
    if not result.ok:
        where = "" if result.first_broken_seq is None else f" at row {result.first_broken_seq}"
        out(f"  audit verify: BROKEN{where}: {result.reason}")
        return False
    out(
        f"  onecert audit verify: OK, {result.rows_checked} rows, each holding the hash of "
        "the one before"
    )
    return True


def _tail(federation: DemoFederation, out: _Out, name: str) -> None:
    process = next((p for p in federation.processes if p.name == name), None)
    if process is None:
        return
    out(f"  last lines of {process.log}:")
    for line in process.log_tail():
        out(f"    {line}")


async def _start_portal(federation: DemoFederation, out: _Out) -> None:
    """The citizen's portal over the running federation, if ``onecert[portal]`` is installed."""
    import importlib.util  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    from onecert.adapters.demo import StartupError  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    out.heading("The citizen's portal")
    if importlib.util.find_spec("starlette") is None:
        out("  not started: install the portal extra (pip install 'onecert[portal]')")
        return
    try:
        url = await federation.start_portal()
    except StartupError as exc:
        out(f"  did not start: {exc}")
        return
    out(f"  open {url} and sign in as one of the story's people (development identity")
    out("  step, made-up people); its settings are in " + str(federation.portal_config_path))


def _keep_running_help(federation: DemoFederation, out: _Out) -> None:
    from onecert.adapters.demo import ADMIN_CN, IDENTITY_ISSUER, STORY  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    keys = federation.keys
    onecert = onecert_command()
    assertion = federation.directory / "assertion.jwt"
    portal = (
        f"--gateway {federation.gateway_address} --ca {keys.ca_cert} "
        f"--cert {keys.client_cert('portal')} --key {keys.client_key('portal')} "
        f"--assertion {assertion}"
    )
    out.heading("Still running (Ctrl-C stops everything)")
    out("Every call of hers needs a fresh identity assertion (one use, two minutes):")
    out(
        f"  {onecert} assertion mint --key {keys.identity_key} --issuer {IDENTITY_ISSUER} "
        f"--sub {STORY.citizen_sub} --document {STORY.citizen.document_number} "
        f"--idn-key {keys.idn_key} --out {assertion}"
    )
    out("Look her up again; the accounts that can be unbound are numbered:")
    out(f"  {onecert} lookup {portal}")
    out("Unbind row 1 of that lookup (after a fresh assertion), then read the receipt of the")
    out("ticket it prints (after another):")
    out(f"  {onecert} unbind 1 {portal}")
    out(f"  {onecert} receipt --ticket TICKET {portal}")
    out("The regulator's report, and the audit log:")
    out(
        f"  {onecert} report compliance --gateway {federation.gateway_address} "
        f"--ca {keys.ca_cert} --cert {keys.client_cert(ADMIN_CN)} "
        f"--key {keys.client_key(ADMIN_CN)}"
    )
    out(f"  {onecert} audit verify --url {federation.store_url}")
    _join_by_hand_help(federation, out, onecert)


def _join_by_hand_help(federation: DemoFederation, out: _Out, onecert: str) -> None:
    """How to invite one more provider and join it from this shell."""
    from onecert.adapters.demo import ADMIN_CN  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light
    from onecert.adapters.demo._join import join_port  # noqa: PLC0415 - lazy CLI import keeps `onecert --help` light

    keys = federation.keys
    site = federation.directory / "my-site"
    out("Invite another provider, as the regulator (it prints a one-time token):")
    out(
        f"  {onecert} provider invite --gateway {federation.gateway_address} "
        f"--ca {keys.ca_cert} --cert {keys.client_cert(ADMIN_CN)} "
        f'--key {keys.client_key(ADMIN_CN)} --id my-site --name "My Site" --category forum'
    )
    out("Join as that site with the token it printed (the key pair is made here; a site")
    out("that only polls for its notices has no server for the gate to test, so asking")
    out("for activation activates it), then read where it stands:")
    out(
        f"  {onecert} provider join --gateway 127.0.0.1:{join_port(federation)} "
        f"--ca {keys.ca_cert} --id my-site --token TOKEN --poll --dir {site}"
    )
    out(f"  {onecert} provider activate --dir {site}")
    out(f"  {onecert} provider status --dir {site}")
