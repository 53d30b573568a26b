"""Adapters written with plain grpcio, the generated stubs and PyJWT: no onecert SDK.

They stand for a provider or a carrier written by someone else, in any
language, so that the conformance kit is shown to check the contract and not
the SDK. ``Flaws`` / ``CarrierFlaws`` break one rule each, for the tests that
the kit catches it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import jwt
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from onecert.v1 import common_pb2, provider_pb2, provider_pb2_grpc, registry_pb2, registry_pb2_grpc

PROVIDER_ID = "plain-provider"
CARRIER_ID = "plain-carrier"
ISSUER = "onecert-gateway"
PROVIDER_SERVICE = "onecert.v1.BindingProvider"
CARRIER_SERVICE = "onecert.v1.NumberRegistry"

NUMBER_A = "+8613800000001"
NUMBER_B = "+8613800000002"
# The account the kit may unbind (NUMBER_B's only binding).
UNBIND_ACCOUNT = (NUMBER_B, "acct-3")
IDN_A = hashlib.sha256(b"document A").hexdigest()
IDN_B = hashlib.sha256(b"document B").hexdigest()

_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_IDN = re.compile(r"[0-9a-f]{64}")
WARRANT_TYP = "onecert-warrant+jwt"
SET_TYP = "secevent+jwt"


def _ts(year: int, month: int = 1, day: int = 1) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime(year, month, day, tzinfo=UTC))
    return ts


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


class Refusal(Exception):  # noqa: N818 - it is a gRPC answer, not an error of the adapter
    """Answer the call with this status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TokenChecker:
    """JWT checks written from the contract with PyJWT alone."""

    def __init__(self, jwks: Mapping[str, Any], *, audience: str, issuer: str = ISSUER) -> None:
        self._keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(dict(jwks)).keys}
        self._audience = audience
        self._issuer = issuer

    def claims(
        self, token: str, *, typ: str, required: list[str], check_audience: bool = True
    ) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "not a JWT") from exc
        if header.get("typ") != typ:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "wrong token type")
        key = self._keys.get(header.get("kid", ""))
        if key is None:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self._audience if check_audience else None,
                issuer=self._issuer,
                leeway=5,
                options={"require": required, "verify_aud": check_audience},
            )
        except jwt.PyJWTError as exc:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "token refused") from exc
        return claims

    def warrant(
        self,
        metadata: Mapping[str, str],
        target: str,
        *,
        check_audience: bool = True,
        check_target: bool = True,
    ) -> None:
        value = metadata.get("authorization", "")
        if not value.startswith("Bearer "):
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "no warrant")
        try:
            claims = self.claims(
                value.removeprefix("Bearer "),
                typ=WARRANT_TYP,
                required=["iss", "aud", "iat", "exp", "jti", "purpose", "target_sha256"],
                check_audience=check_audience,
            )
        except Refusal as refusal:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, refusal.message) from refusal
        if claims["exp"] - claims["iat"] > 60:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "warrant lives too long")
        expected = hashlib.sha256(target.encode()).hexdigest()
        if check_target and claims["target_sha256"] != expected:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "warrant names another target")


# ------------------------------------------------------------------ provider


@dataclass(frozen=True)
class Flaws:
    """Each flag breaks one rule of the BindingProvider contract."""

    ignore_warrants: bool = False
    accept_wrong_audience: bool = False
    accept_wrong_number: bool = False
    # An error instead of an empty list for a number it does not know.
    unknown_number_status: grpc.StatusCode | None = None
    malformed_status: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
    # No request_id bookkeeping: a redelivery is applied again.
    reapply_unbind: bool = False
    crash_on_unknown_account: bool = False
    omit_bound_at: bool = False
    # ListBindings never answers (the deadline ends it).
    hang: bool = False
    incomplete_describe: bool = False
    accept_forged_events: bool = False


class ProviderCore:
    """The provider's logic, shared by the asyncio and the threaded servers."""

    def __init__(self, jwks: Mapping[str, Any], flaws: Flaws = Flaws()) -> None:
        self.flaws = flaws
        self.tokens = TokenChecker(jwks, audience=PROVIDER_ID)
        self.bindings: dict[str, list[provider_pb2.Binding]] = {
            NUMBER_A: [
                provider_pb2.Binding(
                    account_ref="acct-1",
                    display_name="zhang",
                    kind=common_pb2.BINDING_KIND_LOGIN,
                    bound_at=_ts(2019, 3, 1),
                    last_used_at=_ts(2024, 5, 1),
                    unbindable=True,
                ),
                provider_pb2.Binding(
                    account_ref="acct-2",
                    kind=common_pb2.BINDING_KIND_PAYMENT,
                    bound_at=_ts(2021, 7, 9),
                    unbindable=False,
                ),
            ],
            NUMBER_B: [
                provider_pb2.Binding(
                    account_ref="acct-3",
                    kind=common_pb2.BINDING_KIND_TWO_FACTOR,
                    bound_at=_ts(2022, 2, 2),
                    unbindable=True,
                )
            ],
        }
        self.answers: dict[str, provider_pb2.UnbindResponse] = {}
        self.lock = threading.Lock()
        self.events: dict[str, provider_pb2.ReceiveEventResponse] = {}

    def _warrant(self, metadata: Mapping[str, str], target: str) -> None:
        if self.flaws.ignore_warrants:
            return
        self.tokens.warrant(
            metadata,
            target,
            check_audience=not self.flaws.accept_wrong_audience,
            check_target=not self.flaws.accept_wrong_number,
        )

    def describe(self) -> provider_pb2.DescribeResponse:
        if self.flaws.incomplete_describe:
            return provider_pb2.DescribeResponse(provider_id=PROVIDER_ID, name="Plain")
        return provider_pb2.DescribeResponse(
            provider_id=PROVIDER_ID,
            name="Plain Provider",
            category=common_pb2.PROVIDER_CATEGORY_FORUM,
            contract_version="onecert.v1",
            implementation="plain-grpcio/1",
        )

    def list_bindings(
        self, request: provider_pb2.ListBindingsRequest, metadata: Mapping[str, str]
    ) -> provider_pb2.ListBindingsResponse:
        self._warrant(metadata, request.msisdn)
        if not _E164.fullmatch(request.msisdn):
            raise Refusal(self.flaws.malformed_status, "msisdn must be E.164")
        with self.lock:
            found = list(self.bindings.get(request.msisdn, []))
        if not found and self.flaws.unknown_number_status is not None:
            raise Refusal(self.flaws.unknown_number_status, "no such number")
        if self.flaws.omit_bound_at:
            found = [provider_pb2.Binding(account_ref=b.account_ref, kind=b.kind) for b in found]
        return provider_pb2.ListBindingsResponse(bindings=found)

    def unbind(
        self, request: provider_pb2.UnbindRequest, metadata: Mapping[str, str]
    ) -> provider_pb2.UnbindResponse:
        self._warrant(metadata, request.msisdn)
        if not 0 < len(request.request_id) <= 128:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "request_id: 1 to 128 characters")
        if not request.account_ref:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "account_ref is required")
        if request.reason == common_pb2.UNBIND_REASON_UNSPECIFIED:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "reason is required")
        if not _E164.fullmatch(request.msisdn):
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "msisdn must be E.164")
        with self.lock:
            if not self.flaws.reapply_unbind and request.request_id in self.answers:
                return self.answers[request.request_id]
            bound = self.bindings.get(request.msisdn, [])
            kept = [b for b in bound if b.account_ref != request.account_ref]
            if len(kept) == len(bound):
                if self.flaws.crash_on_unknown_account:
                    raise KeyError(request.account_ref)
                answer = provider_pb2.UnbindResponse(
                    outcome=common_pb2.UNBIND_OUTCOME_REJECTED,
                    reason="no such account",
                    decided_at=_now(),
                )
            else:
                self.bindings[request.msisdn] = kept
                answer = provider_pb2.UnbindResponse(
                    outcome=common_pb2.UNBIND_OUTCOME_DONE, decided_at=_now()
                )
            self.answers[request.request_id] = answer
            return answer

    def receive_event(
        self, request: provider_pb2.ReceiveEventRequest
    ) -> provider_pb2.ReceiveEventResponse:
        try:
            claims = self.tokens.claims(
                request.set,
                typ=SET_TYP,
                required=["iss", "aud", "iat", "jti", "events"],
                check_audience=not self.flaws.accept_forged_events,
            )
        except Refusal as refusal:
            if (
                refusal.code != grpc.StatusCode.UNAUTHENTICATED
                or not self.flaws.accept_forged_events
            ):
                raise
            claims = jwt.decode(request.set, options={"verify_signature": False})
        with self.lock:
            return self.events.setdefault(
                str(claims["jti"]), provider_pb2.ReceiveEventResponse(acknowledged=True)
            )


def _metadata(context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


class AsyncProvider(provider_pb2_grpc.BindingProviderServicer):
    """The provider on grpc.aio."""

    def __init__(self, core: ProviderCore) -> None:
        self.core = core

    async def Describe(  # noqa: N802 - gRPC method name
        self, request: provider_pb2.DescribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> provider_pb2.DescribeResponse:
        return self.core.describe()

    async def ListBindings(  # noqa: N802 - gRPC method name
        self,
        request: provider_pb2.ListBindingsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> provider_pb2.ListBindingsResponse:
        try:
            answer = self.core.list_bindings(request, _metadata(context))
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.message)
        if self.core.flaws.hang:
            await asyncio.Event().wait()
        return answer

    async def Unbind(  # noqa: N802 - gRPC method name
        self, request: provider_pb2.UnbindRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> provider_pb2.UnbindResponse:
        try:
            return self.core.unbind(request, _metadata(context))
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.message)

    async def ReceiveEvent(  # noqa: N802 - gRPC method name
        self,
        request: provider_pb2.ReceiveEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> provider_pb2.ReceiveEventResponse:
        try:
            return self.core.receive_event(request)
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.message)


class BlockingProvider(provider_pb2_grpc.BindingProviderServicer):
    """The provider on the threaded grpc server. With a ``latency``, its
    ListBindings ignores the deadline: a slow backend query runs to its end
    although the caller gave up."""

    def __init__(self, core: ProviderCore, *, latency: float = 0.0) -> None:
        self.core = core
        self.latency = latency
        self.release = threading.Event()

    def Describe(  # noqa: N802 - gRPC method name
        self, request: provider_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> provider_pb2.DescribeResponse:
        return self.core.describe()

    def ListBindings(  # noqa: N802 - gRPC method name
        self, request: provider_pb2.ListBindingsRequest, context: grpc.ServicerContext
    ) -> provider_pb2.ListBindingsResponse:
        try:
            answer = self.core.list_bindings(request, _metadata(context))
        except Refusal as refusal:
            context.abort(refusal.code, refusal.message)
        if answer.bindings and self.latency:
            self.release.wait(self.latency)
        return answer

    def Unbind(  # noqa: N802 - gRPC method name
        self, request: provider_pb2.UnbindRequest, context: grpc.ServicerContext
    ) -> provider_pb2.UnbindResponse:
        try:
            return self.core.unbind(request, _metadata(context))
        except Refusal as refusal:
            context.abort(refusal.code, refusal.message)

    def ReceiveEvent(  # noqa: N802 - gRPC method name
        self, request: provider_pb2.ReceiveEventRequest, context: grpc.ServicerContext
    ) -> provider_pb2.ReceiveEventResponse:
        try:
            return self.core.receive_event(request)
        except Refusal as refusal:
            context.abort(refusal.code, refusal.message)


# ------------------------------------------------------------------- carrier


@dataclass(frozen=True)
class CarrierFlaws:
    """Each flag breaks one rule of the NumberRegistry contract."""

    ignore_warrants: bool = False
    not_found_for_unknown: bool = False
    # A cancelled number listed without held_until.
    omit_held_until: bool = False
    accept_uppercase_idn: bool = False
    wrong_carrier_id: bool = False


class AsyncCarrier(registry_pb2_grpc.NumberRegistryServicer):
    """A carrier on grpc.aio."""

    def __init__(self, jwks: Mapping[str, Any], flaws: CarrierFlaws = CarrierFlaws()) -> None:
        self.flaws = flaws
        self.tokens = TokenChecker(jwks, audience=CARRIER_ID)
        carrier = "someone-else" if flaws.wrong_carrier_id else CARRIER_ID
        cancelled = registry_pb2.Tenure(
            msisdn="+8613900000009",
            carrier_id=carrier,
            held_from=_ts(2015),
            state=common_pb2.TENURE_STATE_CANCELLED,
        )
        if not flaws.omit_held_until:
            cancelled.held_until.CopyFrom(_ts(2020))
        self.tenures = {
            IDN_A: [
                registry_pb2.Tenure(
                    msisdn=NUMBER_A,
                    carrier_id=carrier,
                    held_from=_ts(2018),
                    state=common_pb2.TENURE_STATE_ACTIVE,
                ),
                cancelled,
                registry_pb2.Tenure(
                    msisdn="+8613900000008",
                    carrier_id=carrier,
                    held_from=_ts(2010),
                    held_until=_ts(2014),
                    state=common_pb2.TENURE_STATE_RECYCLED,
                ),
            ],
            IDN_B: [
                registry_pb2.Tenure(
                    msisdn=NUMBER_B,
                    carrier_id=carrier,
                    held_from=_ts(2022),
                    state=common_pb2.TENURE_STATE_SUSPENDED,
                )
            ],
        }

    def list_numbers(
        self, request: registry_pb2.ListNumbersRequest, metadata: Mapping[str, str]
    ) -> registry_pb2.ListNumbersResponse:
        if not self.flaws.ignore_warrants:
            self.tokens.warrant(metadata, request.idn)
        idn = request.idn.lower() if self.flaws.accept_uppercase_idn else request.idn
        if not _IDN.fullmatch(idn):
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "idn: 64 lowercase hex")
        found = self.tenures.get(idn, [])
        if not found and self.flaws.not_found_for_unknown:
            raise Refusal(grpc.StatusCode.NOT_FOUND, "unknown idn")
        return registry_pb2.ListNumbersResponse(tenures=found)

    async def ListNumbers(  # noqa: N802 - gRPC method name
        self, request: registry_pb2.ListNumbersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> registry_pb2.ListNumbersResponse:
        try:
            return self.list_numbers(request, _metadata(context))
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.message)


# ------------------------------------------------------------------- servers


async def start_async(
    servicer: AsyncProvider | AsyncCarrier,
) -> tuple[grpc.aio.Server, str]:
    """Serve on 127.0.0.1, a free port; returns the server and its target."""
    server = grpc.aio.server()
    health_servicer = health.aio.HealthServicer()
    if isinstance(servicer, AsyncProvider):
        provider_pb2_grpc.add_BindingProviderServicer_to_server(servicer, server)
        service = PROVIDER_SERVICE
    else:
        registry_pb2_grpc.add_NumberRegistryServicer_to_server(servicer, server)
        service = CARRIER_SERVICE
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", service):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def start_threaded(
    servicer: BlockingProvider,
    *,
    workers: int = 1,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, str]:
    """Serve on threads (one by default, so a busy handler holds up every call)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    health_servicer = health.HealthServicer()
    provider_pb2_grpc.add_BindingProviderServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", PROVIDER_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, f"127.0.0.1:{port}"
