"""The kit's checks of ``ReceiveEvents`` (rules E-13 to E-16): notices in batches.

Batches are optional: a provider answering ``UNIMPLEMENTED`` passes each
check (the gateway then sends it one notice at a time). Every notice names the
kit's unknown number, so acting on one removes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from onecert.sdk.conformance._common import Check, CheckFailedError
from onecert.v1 import provider_pb2, provider_pb2_grpc

__all__ = ["BATCH_RULES", "batch_checks"]

BATCH_RULES = (
    ("E-13", "receive_events.valid"),
    ("E-14", "receive_events.one_per_set"),
    ("E-15", "receive_events.refused_apart"),
    ("E-16", "receive_events.redelivered"),
)
_NOT_A_JWS = "not-a-jws"
_OPTIONAL = "not implemented (optional: notices come one at a time)"


class _Batches:
    def __init__(
        self,
        stub: provider_pb2_grpc.BindingProviderAsyncStub,
        notice: Callable[[], str],
        call_s: float,
    ) -> None:
        self._stub = stub
        self.notice = notice
        self._call_s = call_s

    async def send(self, sets: list[str]) -> list[provider_pb2.EventResult] | None:
        """The results of one batch (None: not implemented); E-14's count checked."""
        call = self._stub.ReceiveEvents(
            provider_pb2.ReceiveEventsRequest(sets=sets), timeout=self._call_s
        )
        try:
            answer: provider_pb2.ReceiveEventsResponse = await call
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise CheckFailedError(
                f"ReceiveEvents with {len(sets)} SET(s) failed as a whole: {exc.code().name}"
            ) from None
        if len(answer.results) != len(sets):
            raise CheckFailedError(
                f"{len(answer.results)} result(s) for {len(sets)} SET(s): one per SET, in order"
            )
        return list(answer.results)

    async def valid(self) -> str:
        results = await self.send([self.notice()])
        if results is None:
            return _OPTIONAL
        if not results[0].HasField("response") or not results[0].response.acknowledged:
            raise CheckFailedError("a valid notice in a batch was not acknowledged")
        return "acknowledged"

    async def one_per_set(self) -> str:
        results = await self.send([self.notice(), _NOT_A_JWS, self.notice()])
        return _OPTIONAL if results is None else "3 results for 3 SETs"

    async def refused_apart(self) -> str:
        results = await self.send([_NOT_A_JWS, self.notice()])
        if results is None:
            return _OPTIONAL
        refused, valid = results
        if refused.HasField("response") or (
            refused.error_code != grpc.StatusCode.INVALID_ARGUMENT.value[0]
        ):
            raise CheckFailedError("a token that is not a JWS was not answered INVALID_ARGUMENT")
        if not valid.HasField("response"):
            raise CheckFailedError("a valid notice after a refused one was not answered")
        return "INVALID_ARGUMENT for the bad SET, an answer for the good one"

    async def redelivered(self) -> str:
        token = self.notice()
        first = await self.send([token, token])
        if first is None:
            return _OPTIONAL
        again = await self.send([token])
        assert again is not None  # it answered the first batch
        answers = [r.response for r in (*first, *again)]
        if any(a != answers[0] for a in answers):
            raise CheckFailedError(
                "the same notice got different answers within and across batches"
            )
        return "the same answer three times"


def batch_checks(
    stub: provider_pb2_grpc.BindingProviderAsyncStub, notice: Callable[[], str], call_s: float
) -> list[Check]:
    """The checks of E-13 to E-16 against ``stub``; ``notice()`` makes a fresh valid SET."""
    b = _Batches(stub, notice, call_s)
    runs = (b.valid, b.one_per_set, b.refused_apart, b.redelivered)
    calls = (1, 1, 1, 2)
    return [
        Check(rule, name, run, calls=n)
        for (rule, name), run, n in zip(BATCH_RULES, runs, calls, strict=True)
    ]
