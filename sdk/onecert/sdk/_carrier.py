"""The carrier side: :class:`Carrier` and the ``NumberRegistry`` service around it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog

from onecert.sdk._convert import InvalidResultError, tenures_to_pb
from onecert.sdk._core import (
    Adapter,
    CallError,
    Context,
    Handler,
    authorize,
    invoke,
    log,
    token_of,
)
from onecert.sdk._idn import is_idn
from onecert.sdk._keys import KeySet
from onecert.sdk._warrant import RPC_PURPOSES, WarrantVerifier
from onecert.v1 import registry_pb2, registry_pb2_grpc

# ListNumbers is part of a lookup; "conformance" lets the kit check a carrier.
LIST_NUMBERS_PURPOSES = frozenset({RPC_PURPOSES["onecert.v1.NumberRegistry/ListNumbers"]})

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class Carrier(Adapter):
    """A carrier's adapter: its id and its ``list_numbers`` function::

        carrier = Carrier(carrier_id="example-mobile")

        @carrier.list_numbers
        async def list_numbers(idn: str, info: CallInfo) -> list[Tenure]: ...

        carrier.main()

    Args:
        carrier_id: the id the gateway knows you by (1 to 64 of [a-z0-9._-]);
            it is stamped on every tenure you return.
        implementation: an object with an async ``list_numbers`` method,
            instead of the decorator.
    """

    _kind = "carrier"
    _required = ("list_numbers",)

    def __init__(self, *, carrier_id: str, implementation: object | None = None) -> None:
        super().__init__(carrier_id)
        self._list_numbers: Handler | None = None
        if implementation is not None:
            self._implement(implementation)

    @property
    def id(self) -> str:
        """The id the gateway knows this carrier by (``carrier_id=`` when built)."""
        return self._id

    def list_numbers(self, fn: F) -> F:
        """Register ``async def list_numbers(idn, info) -> list[Tenure]``.

        Return every tenure of the subscriber whose identity document hashes
        to ``idn`` (64 lowercase hex characters, already validated): current
        numbers and former ones inside your retention window. An unknown idn
        is an empty list.
        """
        self._register("list_numbers", fn, "idn")
        return fn

    def __repr__(self) -> str:
        return f"Carrier(carrier_id={self.id!r})"


class CarrierCore:
    """The ``NumberRegistry`` logic without the network."""

    def __init__(self, carrier: Carrier, *, keys: KeySet, issuer: str, leeway: float = 5.0) -> None:
        carrier.check_complete()
        self.carrier = carrier
        self._warrants = WarrantVerifier(
            keys=keys, issuer=issuer, audience=carrier.id, leeway=leeway
        )

    async def list_numbers(
        self, request: registry_pb2.ListNumbersRequest, *, token: str, remaining: float | None
    ) -> registry_pb2.ListNumbersResponse:
        if not request.idn:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, "idn is required")
        if not is_idn(request.idn):
            raise CallError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "idn must be 64 lowercase hex characters (HMAC-SHA256)",
            )
        # The idn is a keyed hash, not an identifier anyone can reverse; a
        # prefix is enough to correlate logs.
        structlog.contextvars.bind_contextvars(idn=request.idn[:12])
        info = authorize(
            self._warrants,
            token,
            target=request.idn,
            purposes=LIST_NUMBERS_PURPOSES,
            remaining=remaining,
        )
        assert self.carrier._list_numbers is not None  # checked in __init__
        result = await invoke(self.carrier._list_numbers, request.idn, info)  # same package
        try:
            tenures = tenures_to_pb(result, carrier_id=self.carrier.id)
        except InvalidResultError as exc:
            log.error("adapter.invalid_result", what=exc.what, rule=exc.rule)
            raise CallError(
                grpc.StatusCode.INTERNAL, f"adapter returned an invalid {exc.what}"
            ) from None
        log.info("numbers.listed", count=len(tenures))
        return registry_pb2.ListNumbersResponse(tenures=tenures)


class CarrierServicer(registry_pb2_grpc.NumberRegistryServicer):
    """The gRPC face of :class:`CarrierCore` (its :class:`CallError` goes up to
    the server's boundary, the one place that turns it into the call's status)."""

    def __init__(self, core: CarrierCore) -> None:
        self._core = core

    async def ListNumbers(  # noqa: N802  # gRPC method name
        self, request: registry_pb2.ListNumbersRequest, context: Context
    ) -> registry_pb2.ListNumbersResponse:
        return await self._core.list_numbers(
            request, token=token_of(context), remaining=context.time_remaining()
        )
