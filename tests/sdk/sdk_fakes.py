"""A fake provider and carrier for the SDK's tests: knobs for latency, failures
and answers, and a record of every call the SDK let through."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from onecert.sdk import (
    Binding,
    BindingKind,
    CallInfo,
    RecycledNotice,
    Tenure,
    TenureState,
    UnbindRequest,
    UnbindResult,
)
from onecert.v1 import common_pb2, provider_pb2

PROVIDER_ID = "example-forum"
CARRIER_ID = "example-mobile"
NUMBER = "+8613800138000"
OTHER_NUMBER = "+8613900139000"
BOUND_AT = datetime(2021, 3, 1, tzinfo=UTC)
IDN = "a" * 64


def unbind_pb(
    request_id: str,
    account_ref: str = "u1",
    *,
    msisdn: str = NUMBER,
    reason: common_pb2.UnbindReason.ValueType = common_pb2.UNBIND_REASON_OWNER_REQUEST,
) -> provider_pb2.UnbindRequest:
    """The gateway's Unbind of ``account_ref`` on ``msisdn``, asked by its owner by default."""
    return provider_pb2.UnbindRequest(
        request_id=request_id, msisdn=msisdn, account_ref=account_ref, reason=reason
    )


class FakeForum:
    """A provider implementation: two accounts on NUMBER, knobs, a call log."""

    def __init__(self) -> None:
        self.accounts: dict[str, str] = {"u1": NUMBER, "u2": NUMBER}
        self.delay = 0.0
        self.error: BaseException | None = None
        self.result: Any = None
        self.unbind_result: Any = None
        self.removed_on_notice: int | None = 2
        self.calls: list[str] = []
        self.infos: list[CallInfo] = []
        self.unbinds: list[UnbindRequest] = []
        self.notices: list[RecycledNotice] = []
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def _enter(self, name: str, info: CallInfo) -> None:
        self.calls.append(name)
        self.infos.append(info)
        self.started.set()
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        if self.error is not None:
            raise self.error

    async def list_bindings(self, msisdn: str, info: CallInfo) -> Any:
        await self._enter("list_bindings", info)
        if self.result is not None:
            return self.result
        return [
            Binding(account_ref=ref, kind=BindingKind.LOGIN, bound_at=BOUND_AT, display_name=ref)
            for ref, number in self.accounts.items()
            if number == msisdn
        ]

    async def unbind(self, request: UnbindRequest, info: CallInfo) -> Any:
        self.unbinds.append(request)
        await self._enter("unbind", info)
        if self.unbind_result is not None:
            return self.unbind_result
        if self.accounts.get(request.account_ref) != request.msisdn:
            return UnbindResult.rejected("no such account")
        self.accounts[request.account_ref] = ""
        return UnbindResult.done()

    async def on_recycled(self, notice: RecycledNotice, info: CallInfo) -> int | None:
        self.notices.append(notice)
        await self._enter("on_recycled", info)
        return self.removed_on_notice


class FakeMobile:
    """A carrier implementation: one current and one former number for IDN."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, CallInfo]] = []
        self.result: Any = None

    async def list_numbers(self, idn: str, info: CallInfo) -> Any:
        self.calls.append((idn, info))
        if self.result is not None:
            return self.result
        if idn != IDN:
            return []
        return [
            Tenure(msisdn=NUMBER, held_from=BOUND_AT),
            Tenure(
                msisdn=OTHER_NUMBER,
                held_from=datetime(2010, 1, 1, tzinfo=UTC),
                held_until=datetime(2020, 1, 1, tzinfo=UTC),
                state=TenureState.RECYCLED,
            ),
        ]
