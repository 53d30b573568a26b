"""Adapters built with the onecert SDK pass every conformance check."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

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
from onecert.sdk.conformance import (
    CARRIER_CHECKS,
    PROVIDER_CHECKS,
    Report,
    check_carrier,
    check_provider,
)
from onecert.sdk.testing import FakeGateway, serve_in_process
from tests.conformance.conformance_support import assert_passed_every_check

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


@pytest.mark.parametrize(
    ("adapter", "check", "checks", "options"),
    [
        (
            _provider,
            check_provider,
            PROVIDER_CHECKS,
            {"provider_id": "sdk-forum", "known_numbers": [NUMBER], "unbind": (NUMBER, "u1")},
        ),
        (
            _carrier,
            check_carrier,
            CARRIER_CHECKS,
            {"carrier_id": "sdk-mobile", "known_idns": [IDN]},
        ),
    ],
    ids=["provider", "carrier"],
)
async def test_sdk_adapter_passes_every_check(
    warrant_key: SigningKey,
    adapter: Callable[[], Provider | Carrier],
    check: Callable[..., Awaitable[Report]],
    checks: Sequence[tuple[str, str]],
    options: dict[str, Any],
) -> None:
    """A provider written with the SDK, as in the README, passes every provider check; a
    carrier written with it, every carrier check."""
    audience = options.get("provider_id") or options["carrier_id"]
    gateway = FakeGateway(audience=audience, key=warrant_key)
    async with serve_in_process(adapter(), gateway=gateway) as running:
        report = await check(
            target=running.address,
            warrant_key=warrant_key,
            call_timeout=2.0,
            short_deadline=0.2,
            slack=1.0,
            **options,
        )
    assert_passed_every_check(report, checks)
