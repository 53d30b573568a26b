"""Adapters built with the onecert SDK pass every conformance check."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from onecert.sdk import (
    Binding,
    BindingKind,
    Carrier,
    Provider,
    Tenure,
    TenureState,
    UnbindRequest,
    UnbindResult,
)
from onecert.sdk._keys import SigningKey
from onecert.sdk.conformance import Outcome, check_carrier, check_provider
from onecert.sdk.testing import FakeGateway, serve_in_process

NUMBER = "+8613800138000"
IDN = hashlib.sha256(b"sdk document").hexdigest()


def _provider() -> Provider:
    accounts = {  # account ref -> nickname, when the number was bound
        "u1": ("zhangsan", datetime(2021, 3, 1, tzinfo=UTC)),
        "u2": ("lisi", datetime(2014, 6, 9, tzinfo=UTC)),
    }
    numbers: dict[str, str | None] = {"u1": NUMBER, "u2": NUMBER}
    provider = Provider(provider_id="sdk-forum", name="SDK Forum", category="forum")

    @provider.list_bindings
    async def list_bindings(msisdn: str) -> list[Binding]:
        return [
            Binding(account_ref=ref, kind=BindingKind.LOGIN, bound_at=since, display_name=nick)
            for ref, (nick, since) in accounts.items()
            if numbers[ref] == msisdn
        ]

    @provider.unbind
    async def unbind(request: UnbindRequest) -> UnbindResult:
        if numbers.get(request.account_ref) != request.msisdn:
            return UnbindResult.rejected("no such account")
        numbers[request.account_ref] = None
        return UnbindResult.done()

    return provider


def _carrier() -> Carrier:
    carrier = Carrier(carrier_id="sdk-mobile")

    @carrier.list_numbers
    async def list_numbers(idn: str) -> list[Tenure]:
        if idn != IDN:
            return []
        return [
            Tenure(msisdn=NUMBER, held_from=datetime(2020, 1, 1, tzinfo=UTC)),
            Tenure(
                msisdn="+8613900000009",
                held_from=datetime(2012, 1, 1, tzinfo=UTC),
                held_until=datetime(2019, 1, 1, tzinfo=UTC),
                state=TenureState.RECYCLED,
            ),
        ]

    return carrier


async def test_sdk_provider_passes_every_check(warrant_key: SigningKey) -> None:
    """A provider written with the SDK, as in the README, passes every provider check."""
    gateway = FakeGateway(audience="sdk-forum", key=warrant_key)
    async with serve_in_process(_provider(), gateway=gateway) as running:
        report = await check_provider(
            target=running.address,
            warrant_key=warrant_key,
            provider_id="sdk-forum",
            known_numbers=[NUMBER],
            unbind=(NUMBER, "u1"),
            call_timeout=2.0,
            short_deadline=0.2,
            slack=1.0,
        )
    assert report.ok, report.to_table()
    assert all(r.outcome is Outcome.PASSED for r in report.results), report.to_table()


async def test_sdk_carrier_passes_every_check(warrant_key: SigningKey) -> None:
    """A carrier written with the SDK passes every carrier check."""
    gateway = FakeGateway(audience="sdk-mobile", key=warrant_key)
    async with serve_in_process(_carrier(), gateway=gateway) as running:
        report = await check_carrier(
            target=running.address,
            warrant_key=warrant_key,
            carrier_id="sdk-mobile",
            known_idns=[IDN],
            call_timeout=2.0,
            short_deadline=0.2,
            slack=1.0,
        )
    assert report.ok, report.to_table()
    assert all(r.outcome is Outcome.PASSED for r in report.results), report.to_table()
