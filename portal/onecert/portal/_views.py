"""What the pages show, built from a lookup and a session: plain values for templates.

The order is the citizen's priority: accounts left behind on a former number
first, then the citizen's own accounts, then counts of previous holders'
accounts, then each provider's status in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from onecert.portal._i18n import Translator
from onecert.portal._lookups import LookupState
from onecert.portal._sessions import Session
from onecert.sdk import BindingKind
from onecert.sdk.client import Attribution, CallOutcome, Receipt, Result, TicketState

__all__ = [
    "AccountRow",
    "NumberRow",
    "PreviousRow",
    "ProviderRow",
    "ReceiptRow",
    "ResultsView",
    "receipt_rows",
    "results_view",
    "show_number",
]


def show_number(msisdn: str) -> str:
    """A number as the page shows it: the middle digits hidden (``139****7756``)."""
    national = msisdn[3:] if msisdn.startswith("+86") else msisdn.lstrip("+")
    if len(national) < 8:
        return "*" * max(0, len(national) - 2) + national[-2:]
    return f"{national[:3]}****{national[-4:]}"


def _date(value: datetime | None) -> str:
    return value.date().isoformat() if value is not None else ""


@dataclass(frozen=True)
class NumberRow:
    number: str
    current: bool
    since: str
    until: str


@dataclass(frozen=True)
class AccountRow:
    key: str
    provider: str
    account: str
    kind: str
    bound: str
    number: str
    left_behind: bool
    asked: bool


@dataclass(frozen=True)
class PreviousRow:
    key: str
    provider: str
    count: int
    number: str
    asked: bool


@dataclass(frozen=True)
class ProviderRow:
    provider: str
    number: str
    status: str
    ok: bool


@dataclass(frozen=True)
class ResultsView:
    """Everything the results page shows, in order."""

    numbers: list[NumberRow]
    left_behind: list[AccountRow]
    mine: list[AccountRow]
    previous: list[PreviousRow]
    providers: list[ProviderRow]
    answered: list[str]
    carriers_missing: list[str]
    # Providers not asked: their filter says they do not hold the number.
    routed_out: int
    done: bool
    error: str
    progress: str


_KINDS = {
    BindingKind.LOGIN: "kind_login",
    BindingKind.PAYMENT: "kind_payment",
    BindingKind.RECOVERY: "kind_recovery",
    BindingKind.CONTACT: "kind_contact",
}
_STATUS = {
    CallOutcome.TIMED_OUT: "status_timed_out",
    CallOutcome.FAILED: "status_failed",
    CallOutcome.SKIPPED: "status_skipped",
    CallOutcome.UNKNOWN: "status_failed",
}


def _accounts(
    session: Session, t: Translator, result: Result, attribution: Attribution
) -> list[AccountRow]:
    rows = []
    for account in result.accounts:
        if account.attribution is not attribution:
            continue
        shown = account.display_name_masked or t("kind_other")
        key = ""
        asked = False
        if account.unbindable and account.handle:
            action = session.add_action(
                kind="unbind",
                provider_id=result.provider_id,
                provider_name=result.provider_name,
                msisdn=result.msisdn,
                handles=(account.handle,),
                account=shown,
                left_behind=attribution is Attribution.LEFT_BEHIND,
            )
            key, asked = action.key, session.asked(action)
        rows.append(
            AccountRow(
                key=key,
                provider=result.provider_name,
                account=shown,
                kind=t(_KINDS.get(account.kind, "kind_other")) if account.kind else "",
                bound=_date(account.bound_at),
                number=show_number(result.msisdn),
                left_behind=attribution is Attribution.LEFT_BEHIND,
                asked=asked,
            )
        )
    return rows


def _previous_holders(session: Session, results: list[Result]) -> list[PreviousRow]:
    """One row per answer that counts previous holders of the number, with the action
    releasing them when the provider gave handles to release."""
    previous = []
    for r in results:
        if not r.previous_holder_count:
            continue
        key, asked = "", False
        if r.release_handles:
            action = session.add_action(
                kind="release",
                provider_id=r.provider_id,
                provider_name=r.provider_name,
                msisdn=r.msisdn,
                handles=r.release_handles,
            )
            key, asked = action.key, session.asked(action)
        previous.append(
            PreviousRow(key, r.provider_name, r.previous_holder_count, show_number(r.msisdn), asked)
        )
    return previous


def results_view(
    session: Session, state: LookupState, t: Translator, *, msisdn: str | None = None
) -> ResultsView:
    """The results page's content; with ``msisdn``, only what concerns that number."""
    results = [r for r in state.results if msisdn is None or r.msisdn == msisdn]
    numbers = []
    if state.started is not None:
        numbers = [
            NumberRow(
                number=show_number(n.msisdn),
                current=n.current,
                since=_date(n.held_from),
                until=_date(n.held_until),
            )
            for n in state.started.numbers
            if msisdn is None or n.msisdn == msisdn
        ]
    left = [row for r in results for row in _accounts(session, t, r, Attribution.LEFT_BEHIND)]
    mine = [row for r in results for row in _accounts(session, t, r, Attribution.MINE)]
    previous = _previous_holders(session, results)
    providers = []
    for r in results:
        if r.outcome is CallOutcome.ANSWERED:
            empty = not r.accounts and not r.previous_holder_count
            status = t("status_answered_none" if empty else "status_answered")
        else:
            status = t(_STATUS[r.outcome])
        providers.append(
            ProviderRow(
                r.provider_name, show_number(r.msisdn), status, r.outcome is CallOutcome.ANSWERED
            )
        )
    # Those a citizen must act on (look up again later) first.
    providers.sort(key=lambda row: (row.ok, row.provider, row.number))
    carriers = state.summary.carriers if state.summary is not None else ()
    missing = [c.carrier_id for c in carriers if c.outcome is not CallOutcome.ANSWERED]
    if state.error:
        progress = ""
    elif state.summary is not None:
        progress = t(
            "results_done", answered=state.summary.total.answered, asked=state.summary.total.asked
        )
    elif state.started is not None:
        progress = t("results_progress", done=state.accounted(), total=state.total())
    else:
        progress = t("results_waiting")
    if left and not state.error:
        # The live region reads this out: the dangerous case is said as soon as it is known.
        space = "" if t.language == "zh" else " "
        progress += space + t("left_found", count=len(left))
    return ResultsView(
        numbers=numbers,
        left_behind=left,
        mine=mine,
        previous=previous,
        providers=[p for p in providers if not p.ok],
        answered=sorted(
            {p.provider for p in providers if p.ok} - {p.provider for p in providers if not p.ok}
        ),
        carriers_missing=missing,
        routed_out=state.routed_out_count(msisdn),
        done=state.done,
        error=state.error,
        progress=progress,
    )


@dataclass(frozen=True)
class ReceiptRow:
    what: str
    provider: str
    status: str
    final: bool
    done: bool


# Which of several tickets of one action speaks for it: the least settled.
_SETTLED = {
    TicketState.QUEUED: 0,
    TicketState.PENDING: 0,
    TicketState.UNKNOWN: 0,
    TicketState.FAILED: 1,
    TicketState.REJECTED: 2,
    TicketState.DONE: 3,
}


def receipt_rows(
    session: Session, receipts: dict[str, Receipt | None], t: Translator
) -> list[ReceiptRow]:
    """One row per action the session asked for (a release may take several
    tickets, one per account), newest first."""
    grouped: dict[str, list[Receipt | None]] = {}
    actions = {}
    for ref in session.tickets:
        grouped.setdefault(ref.action.key, []).append(receipts.get(ref.ticket_id))
        actions[ref.action.key] = ref.action
    rows = []
    for key in reversed(list(grouped)):
        action = actions[key]
        number = show_number(action.msisdn)
        what = (
            t("receipt_release", number=number)
            if action.kind == "release"
            else t("receipt_unbind", account=action.account, number=number)
        )
        tickets = grouped[key]
        known = [r for r in tickets if r is not None]
        receipt = (
            min(known, key=lambda r: _SETTLED[r.state]) if len(known) == len(tickets) else None
        )
        name = action.provider_name
        if receipt is None:
            status, final, done = t("receipt_unknown"), False, False
        elif receipt.state is TicketState.DONE:
            last = max((r.answered_at for r in known if r.answered_at), default=None)
            when = last.strftime("%Y-%m-%d %H:%M") if last else ""
            status, final, done = t("receipt_done", provider=name, when=when), True, True
        elif receipt.state is TicketState.REJECTED:
            reason = receipt.provider_reason or t("receipt_no_reason")
            status, final, done = t("receipt_rejected", provider=name, reason=reason), True, False
        elif receipt.state is TicketState.FAILED:
            status, final, done = t("receipt_failed", provider=name), True, False
        else:
            status, final, done = t("receipt_pending", provider=name), False, False
        rows.append(ReceiptRow(what, name, status, final, done))
    return rows
