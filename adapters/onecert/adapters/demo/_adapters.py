"""The demo's carriers and providers: in-memory tables behind the SDK."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Iterable

from onecert.adapters.demo._data import (
    DEFAULT_SEED,
    Subscription,
    UserRecord,
    carrier_subscriptions,
    provider_spec,
    provider_users,
)
from onecert.sdk import (
    Binding,
    Carrier,
    Provider,
    ProviderCategory,
    RecycledNotice,
    Tenure,
    UnbindRequest,
    UnbindResult,
)
from onecert.sdk._idn import compute_idn


class DemoProvider:
    """A provider's users table in memory; unbinding really changes it.

    Args:
        users: the table's rows.
        delay_s: how long every lookup takes (a slow provider).
        ignore_notices: acknowledge recycled-number notices and never act
            on them (a provider the compliance report should name).
    """

    def __init__(
        self, users: Iterable[UserRecord], *, delay_s: float = 0.0, ignore_notices: bool = False
    ) -> None:
        if delay_s < 0:
            raise ValueError("delay_s must not be negative")
        self.delay_s = delay_s
        self.ignore_notices = ignore_notices
        self._users: dict[str, UserRecord] = {}
        self._by_phone: defaultdict[str, set[str]] = defaultdict(set)
        for user in users:
            if user.account_ref in self._users:
                raise ValueError(f"account_ref {user.account_ref!r} appears twice")
            self._users[user.account_ref] = user
            if user.phone is not None:
                self._by_phone[user.phone].add(user.account_ref)

    def user(self, account_ref: str) -> UserRecord | None:
        """The row of this account, or None."""
        return self._users.get(account_ref)

    def __len__(self) -> int:
        return len(self._users)

    def _detach(self, account_ref: str) -> None:
        user = self._users[account_ref]
        if user.phone is not None:
            self._by_phone[user.phone].discard(account_ref)
        self._users[account_ref] = dataclasses.replace(user, phone=None)

    async def list_bindings(self, msisdn: str) -> list[Binding]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return [
            Binding(
                account_ref=user.account_ref,
                kind=user.kind,
                bound_at=user.bound_at,
                display_name=user.display_name,
                last_used_at=user.last_used_at,
            )
            for user in (self._users[ref] for ref in sorted(self._by_phone.get(msisdn, ())))
        ]

    async def unbind(self, request: UnbindRequest) -> UnbindResult:
        user = self._users.get(request.account_ref)
        if user is None or user.phone != request.msisdn:
            return UnbindResult.rejected("no such account on this number")
        self._detach(request.account_ref)
        return UnbindResult.done()

    async def on_recycled(self, notice: RecycledNotice) -> int | None:
        if self.ignore_notices:
            # Recorded (the SDK acknowledges it), never acted on, never
            # confirmed: the notice's deadline passes and the report says so.
            return None
        # Accounts bound before the number changed hands are a previous
        # holder's: detach them, as a provider that honours notices would.
        stale = [
            ref
            for ref in self._by_phone.get(notice.msisdn, ())
            if (bound := self._users[ref].bound_at) is None or bound < notice.recycled_at
        ]
        for ref in stale:
            self._detach(ref)
        return len(stale)


class DemoCarrier:
    """A carrier's subscriber records, answered by idn.

    Args:
        subscriptions: the records; each keeps its document number, which
            the carrier hashes with the idn key it shares with the identity
            service.
        idn_key: that key.
    """

    def __init__(self, subscriptions: Iterable[Subscription], *, idn_key: bytes) -> None:
        self._by_idn: defaultdict[str, list[Tenure]] = defaultdict(list)
        idns: dict[str, str] = {}
        for sub in subscriptions:
            idn = idns.get(sub.document_number)
            if idn is None:
                idn = idns[sub.document_number] = compute_idn(idn_key, sub.document_number)
            self._by_idn[idn].append(
                Tenure(
                    msisdn=sub.msisdn,
                    held_from=sub.held_from,
                    held_until=sub.held_until,
                    state=sub.state,
                )
            )

    async def list_numbers(self, idn: str) -> list[Tenure]:
        return list(self._by_idn.get(idn, ()))


def build_provider(
    provider_id: str,
    *,
    seed: int = DEFAULT_SEED,
    delay_s: float | None = None,
    users: Iterable[UserRecord] | None = None,
    name: str | None = None,
    category: ProviderCategory | str | None = None,
    ignore_notices: bool | None = None,
) -> Provider:
    """A demo provider ready to serve.

    Its name, category, delay, users and way with notices come from the
    demo's list when it knows ``provider_id``; otherwise it is a filler
    provider (category "other", 200 filler users, acts on notices). Each
    keyword overrides one of them.
    """
    spec = provider_spec(provider_id)
    table = DemoProvider(
        provider_users(provider_id, seed) if users is None else users,
        delay_s=(spec.delay_s if spec else 0.0) if delay_s is None else delay_s,
        ignore_notices=(
            (spec.ignores_notices if spec else False) if ignore_notices is None else ignore_notices
        ),
    )
    return Provider(
        provider_id=provider_id,
        name=name or (spec.name if spec else provider_id),
        category=category or (spec.category if spec else ProviderCategory.OTHER),
        implementation=table,
    )


def build_carrier(carrier_id: str, *, idn_key: bytes, seed: int = DEFAULT_SEED) -> Carrier:
    """A demo carrier ready to serve, with the story's and the filler's records."""
    return Carrier(
        carrier_id=carrier_id,
        implementation=DemoCarrier(carrier_subscriptions(carrier_id, seed), idn_key=idn_key),
    )
