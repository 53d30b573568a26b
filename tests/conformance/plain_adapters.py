"""Adapters written with plain grpcio, the generated stubs and PyJWT: no onecert SDK.

They stand for a provider or a carrier written by someone else, in any
language, from docs/contract.md alone, so that the conformance kit is shown
to check the contract and not the SDK. Every rule they follow is guarded by
its id: an adapter built with ``broken={"W-9"}`` breaks that one rule, for
the tests that the kit catches it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
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
RISC_RECYCLED = "https://schemas.openid.net/secevent/risc/event-type/identifier-recycled"
SKEW = 5
MAX_WARRANT_LIFETIME = 60
MAX_SET_AGE = 300
WARRANT_CLAIMS = {"iss", "aud", "iat", "exp", "nbf", "jti", "purpose", "qid", "target_sha256"}


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


def _unauthenticated(message: str) -> Refusal:
    return Refusal(grpc.StatusCode.UNAUTHENTICATED, message)


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS; ValueError or TypeError if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    header = json.loads(_b64decode(parts[0]))
    if not isinstance(header, dict):
        raise TypeError("the header is not an object")
    return header


def _unverified_claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(_b64decode(token.split(".")[1]))
    return claims


@dataclass
class TokenChecker:
    """Warrant and SET checks written from docs/contract.md with PyJWT alone.

    ``broken`` names the rules this checker does not follow.
    """

    jwks: Mapping[str, Any]
    audience: str
    broken: Collection[str] = ()
    issuer: str = ISSUER
    seen_jti: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(dict(self.jwks)).keys}
        self.pems = {
            kid: k.key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            for kid, k in self.keys.items()
        }

    def _signed_claims(self, token: str, header: Mapping[str, Any], rule: str) -> dict[str, Any]:
        """The claims once kid, alg and signature are checked (``rule``: W or E ids)."""
        w = rule == "W"
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            if (w and "W-4" in self.broken) and self.keys:
                # The bug: "no or unknown kid? use our only key".
                kid = next(iter(self.keys))
                key = self.keys[kid]
            else:
                raise _unauthenticated("unknown key")
        alg = header.get("alg")
        trusts_header_alg = (w and "W-5" in self.broken) or (not w and "E-4" in self.broken)
        if trusts_header_alg and alg == "none":
            return _unverified_claims(token)
        if trusts_header_alg and alg == "HS256":
            signing_input, _, signature = token.rpartition(".")
            mac = hmac.new(self.pems[str(kid)], signing_input.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(mac, _b64decode(signature)):
                raise _unauthenticated("bad signature")
            return _unverified_claims(token)
        if alg != key.algorithm_name:
            raise _unauthenticated("wrong algorithm for this key")
        skip_signature = (w and "W-6" in self.broken) or (not w and "E-4" in self.broken)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                options={
                    "verify_signature": not skip_signature,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise _unauthenticated("bad signature") from exc
        return claims

    def _audience_ok(self, aud: Any) -> bool:
        if isinstance(aud, str):
            return aud == self.audience
        return isinstance(aud, list) and self.audience in aud

    def warrant(self, metadata: Mapping[str, str], target: str, purpose: str) -> None:
        """Check the call's warrant for ``target`` and ``purpose``, or raise a Refusal."""
        b = self.broken
        value = metadata.get("authorization", "")
        if not value.startswith("Bearer "):
            if "W-1" in b:
                return
            raise _unauthenticated("no warrant")
        token = value.removeprefix("Bearer ")
        try:
            header = _header(token)
        except (ValueError, TypeError) as exc:
            if "W-2" in b:
                return
            raise _unauthenticated("not a JWS") from exc
        if "crit" in header:
            raise _unauthenticated("critical header members not understood")
        if header.get("typ") != WARRANT_TYP and "W-3" not in b:
            raise _unauthenticated("not a warrant")
        claims = self._signed_claims(token, header, "W")
        now = time.time()
        if claims.get("iss") != self.issuer and "W-7" not in b:
            raise _unauthenticated("wrong issuer")
        if not self._audience_ok(claims.get("aud")) and "W-8" not in b:
            raise _unauthenticated("wrong audience")
        leeway = 3600 if "W-9" in b else SKEW
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if isinstance(exp, int | float) and now > exp + leeway:
            raise _unauthenticated("expired")
        if isinstance(nbf, int | float) and now + leeway < nbf:
            raise _unauthenticated("not valid yet")
        if "W-10" not in b and (not isinstance(iat, int | float) or iat > now + SKEW):
            raise _unauthenticated("iat missing or in the future")
        if "W-11" not in b and (
            not isinstance(exp, int | float)
            or not isinstance(iat, int | float)
            or exp - iat > MAX_WARRANT_LIFETIME
        ):
            raise _unauthenticated("exp missing or lifetime over 60 s")
        if "W-12" not in b and not (isinstance(claims.get("jti"), str) and claims["jti"]):
            raise _unauthenticated("no jti")
        if claims.get("purpose") != purpose and "W-13" not in b:
            raise _unauthenticated("wrong purpose for this call")
        expected = hashlib.sha256(target.encode()).hexdigest()
        if claims.get("target_sha256") != expected and "W-14" not in b:
            raise _unauthenticated("warrant names another target")
        if "W-15" in b and "qid" not in claims:
            raise _unauthenticated("no qid")
        if "W-16" in b and set(claims) - WARRANT_CLAIMS:
            raise _unauthenticated("unknown claims")
        if "W-17" in b:
            if claims.get("jti") in self.seen_jti:
                raise _unauthenticated("warrant replayed")
            self.seen_jti.add(str(claims.get("jti")))

    def notice(self, token: str) -> dict[str, Any]:
        """The claims of a Security Event Token, or raise a Refusal."""
        b = self.broken
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        try:
            header = _header(token)
        except (ValueError, TypeError) as exc:
            code = grpc.StatusCode.UNAUTHENTICATED if "E-2" in b else invalid
            raise Refusal(code, "not a JWS") from exc
        if "crit" in header:
            raise _unauthenticated("critical header members not understood")
        if header.get("typ") != SET_TYP and "E-3" not in b:
            raise Refusal(invalid, "not a SET")
        claims = self._signed_claims(token, header, "E")
        required = {"iss", "aud", "iat", "jti", "toe", "events"}
        if required - set(claims) and "E-8" not in b:
            raise Refusal(invalid, "SET lacks a required claim")
        events = claims.get("events")
        if "E-7" not in b:
            event = events.get(RISC_RECYCLED) if isinstance(events, dict) else None
            subject = event.get("subject") if isinstance(event, dict) else None
            if (
                not isinstance(events, dict)
                or list(events) != [RISC_RECYCLED]
                or not isinstance(subject, dict)
                or subject.get("format") != "phone_number"
                or not _E164.fullmatch(str(subject.get("phone_number", "")))
            ):
                raise Refusal(invalid, "SET must carry one identifier-recycled event")
        if claims.get("iss") != self.issuer and "E-5" not in b:
            raise _unauthenticated("wrong issuer")
        if not self._audience_ok(claims.get("aud")) and "E-6" not in b:
            raise _unauthenticated("wrong audience")
        if "E-9" not in b:
            now, iat, exp = time.time(), claims.get("iat"), claims.get("exp")
            if not isinstance(iat, int | float) or iat > now + SKEW:
                raise _unauthenticated("iat missing or in the future")
            if now - iat > MAX_SET_AGE + SKEW:
                raise _unauthenticated("SET too old")
            if exp is not None and (not isinstance(exp, int | float) or now > exp + SKEW):
                raise _unauthenticated("SET expired")
        return claims


# ------------------------------------------------------------------ provider


class ProviderCore:
    """The provider's logic, shared by the asyncio and the threaded servers."""

    def __init__(self, jwks: Mapping[str, Any], broken: Collection[str] = ()) -> None:
        self.broken = frozenset(broken)
        self.tokens = TokenChecker(jwks, audience=PROVIDER_ID, broken=self.broken)
        self.bindings: dict[str, list[provider_pb2.Binding]] = {
            NUMBER_A: [
                provider_pb2.Binding(
                    account_ref="acct-1",
                    display_name="zhang",
                    kind=common_pb2.BINDING_KIND_LOGIN,
                    bound_at=_ts(2100 if "L-4" in self.broken else 2019, 3, 1),
                    last_used_at=_ts(2024, 5, 1),
                    unbindable=True,
                ),
                provider_pb2.Binding(
                    account_ref="acct-2",
                    kind=(
                        common_pb2.BINDING_KIND_UNSPECIFIED
                        if "L-1" in self.broken
                        else common_pb2.BINDING_KIND_PAYMENT
                    ),
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
        # request_id -> (the request's fingerprint, the answer)
        self.answers: dict[str, tuple[tuple[str, str, int], provider_pb2.UnbindResponse]] = {}
        self.in_flight: set[str] = set()
        self.lock = threading.Lock()
        self.events: dict[str, provider_pb2.ReceiveEventResponse] = {}
        # Set when the test ends, so that flawed handlers stop waiting.
        self.release = threading.Event()
        self.pool = futures.ThreadPoolExecutor(max_workers=2)
        self.blocked_once = False

    def describe(self) -> provider_pb2.DescribeResponse:
        if "P-1" in self.broken:
            return provider_pb2.DescribeResponse(provider_id=PROVIDER_ID, name="Plain")
        return provider_pb2.DescribeResponse(
            provider_id="someone-else" if "P-2" in self.broken else PROVIDER_ID,
            name="Plain Provider",
            category=common_pb2.PROVIDER_CATEGORY_FORUM,
            contract_version="onecert.v1",
            implementation="plain-grpcio/1",
        )

    def list_bindings(
        self, request: provider_pb2.ListBindingsRequest, metadata: Mapping[str, str]
    ) -> provider_pb2.ListBindingsResponse:
        self.tokens.warrant(metadata, request.msisdn, "lookup")
        if not _E164.fullmatch(request.msisdn) and "L-3" not in self.broken:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "msisdn must be E.164")
        with self.lock:
            if request.msisdn not in self.bindings and "L-2" in self.broken:
                raise Refusal(grpc.StatusCode.NOT_FOUND, "no such number")
            found = list(self.bindings.get(request.msisdn, []))
        return provider_pb2.ListBindingsResponse(bindings=found)

    def check_unbind(
        self, request: provider_pb2.UnbindRequest, metadata: Mapping[str, str]
    ) -> tuple[str, str, int]:
        """Check the warrant and the request; the request's fingerprint."""
        self.tokens.warrant(metadata, request.msisdn, "unbind")
        if not 0 < len(request.request_id) <= 128:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "request_id: 1 to 128 characters")
        if not 0 < len(request.account_ref) <= 256:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "account_ref: 1 to 256 characters")
        if request.reason == common_pb2.UNBIND_REASON_UNSPECIFIED and "U-1" not in self.broken:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "reason is required")
        if not _E164.fullmatch(request.msisdn):
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "msisdn must be E.164")
        return (request.msisdn, request.account_ref, request.reason)

    def stored(
        self, request: provider_pb2.UnbindRequest, fingerprint: tuple[str, str, int]
    ) -> provider_pb2.UnbindResponse | None:
        """The answer already given to this request_id, if any (call with the lock)."""
        key = request.request_id
        if "U-6" in self.broken:
            key = f"{request.request_id}/{request.account_ref}"
        if "U-4" in self.broken or key not in self.answers:
            return None
        first, answer = self.answers[key]
        if first != fingerprint:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "request_id used for another unbind")
        return answer

    def apply_unbind(
        self, request: provider_pb2.UnbindRequest, fingerprint: tuple[str, str, int]
    ) -> provider_pb2.UnbindResponse:
        """Apply the unbind and record its answer (call with the lock)."""
        bound = self.bindings.get(request.msisdn, [])
        kept = [b for b in bound if b.account_ref != request.account_ref]
        if len(kept) == len(bound):
            if "U-2" in self.broken:
                raise Refusal(grpc.StatusCode.NOT_FOUND, "no such account")
            reason = "no such account"
            if "U-3" in self.broken:
                reason = f"no account {request.account_ref} for {request.msisdn}"
            answer = provider_pb2.UnbindResponse(
                outcome=common_pb2.UNBIND_OUTCOME_REJECTED, reason=reason, decided_at=_now()
            )
        else:
            if "U-7" not in self.broken:
                self.bindings[request.msisdn] = kept
            answer = provider_pb2.UnbindResponse(
                outcome=common_pb2.UNBIND_OUTCOME_DONE, decided_at=_now()
            )
        key = request.request_id
        if "U-6" in self.broken:
            key = f"{request.request_id}/{request.account_ref}"
        self.answers[key] = (fingerprint, answer)
        return answer

    def unbind(
        self, request: provider_pb2.UnbindRequest, metadata: Mapping[str, str]
    ) -> provider_pb2.UnbindResponse:
        fingerprint = self.check_unbind(request, metadata)
        with self.lock:
            answer = self.stored(request, fingerprint)
            return answer or self.apply_unbind(request, fingerprint)

    def receive_event(
        self, request: provider_pb2.ReceiveEventRequest, metadata: Mapping[str, str]
    ) -> provider_pb2.ReceiveEventResponse:
        claims = self.tokens.notice(request.set)
        if "E-1" in self.broken:
            # The bug: it answers, but never says it recorded the notice.
            return provider_pb2.ReceiveEventResponse()
        jti = str(claims.get("jti"))
        with self.lock:
            if jti in self.events and "E-10" in self.broken:
                return provider_pb2.ReceiveEventResponse(acknowledged=False)
            return self.events.setdefault(jti, provider_pb2.ReceiveEventResponse(acknowledged=True))

    def receive_events(
        self, request: provider_pb2.ReceiveEventsRequest, metadata: Mapping[str, str]
    ) -> provider_pb2.ReceiveEventsResponse:
        results, seen = [], set()
        for token in request.sets:
            result = provider_pb2.EventResult()
            try:
                answer = self.receive_event(provider_pb2.ReceiveEventRequest(set=token), metadata)
            except Refusal as refusal:
                if "E-15" in self.broken:
                    raise  # the bug: one bad SET fails the whole batch
                result.error_code, result.error_message = refusal.code.value[0], refusal.message
            else:
                if "E-13" in self.broken:
                    answer = provider_pb2.ReceiveEventResponse()  # the bug: never acknowledged
                if "E-16" in self.broken and token in seen:
                    answer = provider_pb2.ReceiveEventResponse(acknowledged=True, acted=True)
                result.response.CopyFrom(answer)
            seen.add(token)
            results.append(result)
        if "E-14" in self.broken:
            results.pop()  # the bug: the last notice of a batch goes unanswered
        return provider_pb2.ReceiveEventsResponse(results=results)


def _metadata(context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


# What a handler answers: a response message of the call it serves.
Answer = TypeVar("Answer")


async def _answer_async(
    handler: Callable[[Any, dict[str, str]], Answer],
    request: Any,
    context: grpc.aio.ServicerContext[Any, Any],
) -> Answer:
    """The handler's answer, or its refusal as the call's status (grpc.aio)."""
    try:
        return handler(request, _metadata(context))
    except Refusal as refusal:
        await context.abort(refusal.code, refusal.message)


def _answer_blocking(
    handler: Callable[[Any, dict[str, str]], Answer],
    request: Any,
    context: grpc.ServicerContext,
) -> Answer:
    """The handler's answer, or its refusal as the call's status (threaded server)."""
    try:
        return handler(request, _metadata(context))
    except Refusal as refusal:
        context.abort(refusal.code, refusal.message)


class AsyncProvider(provider_pb2_grpc.BindingProviderServicer):
    """The provider on grpc.aio. With ``hang``, ListBindings never answers."""

    def __init__(self, core: ProviderCore, *, hang: bool = False) -> None:
        self.core = core
        self.hang = hang

    async def Describe(  # noqa: N802 - gRPC method name
        self, request: provider_pb2.DescribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> provider_pb2.DescribeResponse:
        return self.core.describe()

    async def ListBindings(  # noqa: N802 - gRPC method name
        self,
        request: provider_pb2.ListBindingsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> provider_pb2.ListBindingsResponse:
        answer = await _answer_async(self.core.list_bindings, request, context)
        # Typed float, but None when the caller gave no deadline.
        remaining: float | None = context.time_remaining()
        short = remaining is not None and remaining < 1.0
        if self.hang:
            await asyncio.Event().wait()
        if short and "D-1" in self.core.broken and not self.core.blocked_once:
            # The bug: a blocking backend call on the event loop; nothing
            # else is served, health included, until it ends.
            self.core.blocked_once = True
            self.core.release.wait(2.0)
        if short and "D-2" in self.core.broken:
            # The bug: a slow backend query that runs to its end in one of
            # two pooled connections although the caller gave up.
            query = self.core.pool.submit(self.core.release.wait, 1.0)
            await asyncio.shield(asyncio.wrap_future(query))
        elif "D-2" in self.core.broken:
            await asyncio.wrap_future(self.core.pool.submit(lambda: None))
        return answer

    async def Unbind(  # noqa: N802 - gRPC method name
        self, request: provider_pb2.UnbindRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> provider_pb2.UnbindResponse:
        core = self.core
        try:
            if "U-5" not in core.broken:
                return core.unbind(request, _metadata(context))
            # The bug: a duplicate that arrives while the first is being
            # applied is refused instead of waiting for the first answer.
            fingerprint = core.check_unbind(request, _metadata(context))
            with core.lock:
                answer = core.stored(request, fingerprint)
                if answer is not None:
                    return answer
                if request.request_id in core.in_flight:
                    return provider_pb2.UnbindResponse(
                        outcome=common_pb2.UNBIND_OUTCOME_REJECTED, reason="already in progress"
                    )
                core.in_flight.add(request.request_id)
            await asyncio.sleep(0.2)
            with core.lock:
                core.in_flight.discard(request.request_id)
                return core.apply_unbind(request, fingerprint)
        except Refusal as refusal:
            await context.abort(refusal.code, refusal.message)

    async def ReceiveEvent(  # noqa: N802 - gRPC method name
        self,
        request: provider_pb2.ReceiveEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> provider_pb2.ReceiveEventResponse:
        return await _answer_async(self.core.receive_event, request, context)

    async def ReceiveEvents(  # noqa: N802 - gRPC method name
        self,
        request: provider_pb2.ReceiveEventsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> provider_pb2.ReceiveEventsResponse:
        return await _answer_async(self.core.receive_events, request, context)


class BlockingProvider(provider_pb2_grpc.BindingProviderServicer):
    """The provider on the threaded grpc server. With a ``latency``, its
    ListBindings ignores the deadline: a slow backend query runs to its end
    although the caller gave up."""

    def __init__(self, core: ProviderCore, *, latency: float = 0.0) -> None:
        self.core = core
        self.latency = latency

    def Describe(  # noqa: N802 - gRPC method name
        self, request: provider_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> provider_pb2.DescribeResponse:
        return self.core.describe()

    def ListBindings(  # noqa: N802 - gRPC method name
        self, request: provider_pb2.ListBindingsRequest, context: grpc.ServicerContext
    ) -> provider_pb2.ListBindingsResponse:
        answer = _answer_blocking(self.core.list_bindings, request, context)
        if answer.bindings and self.latency:
            self.core.release.wait(self.latency)
        return answer

    def Unbind(  # noqa: N802 - gRPC method name
        self, request: provider_pb2.UnbindRequest, context: grpc.ServicerContext
    ) -> provider_pb2.UnbindResponse:
        return _answer_blocking(self.core.unbind, request, context)

    def ReceiveEvent(  # noqa: N802 - gRPC method name
        self, request: provider_pb2.ReceiveEventRequest, context: grpc.ServicerContext
    ) -> provider_pb2.ReceiveEventResponse:
        return _answer_blocking(self.core.receive_event, request, context)

    # Batches are optional (E-13): the generated default answers UNIMPLEMENTED,
    # so this one takes notices one at a time.
    ReceiveEvents = provider_pb2_grpc.BindingProviderServicer.ReceiveEvents


# ------------------------------------------------------------------- carrier


class AsyncCarrier(registry_pb2_grpc.NumberRegistryServicer):
    """A carrier on grpc.aio; ``broken`` names the rules it does not follow."""

    def __init__(self, jwks: Mapping[str, Any], broken: Collection[str] = ()) -> None:
        self.broken = frozenset(broken)
        self.tokens = TokenChecker(jwks, audience=CARRIER_ID, broken=self.broken)
        carrier = "someone-else" if "C-1" in self.broken else CARRIER_ID
        self.tenures = {
            IDN_A: [
                registry_pb2.Tenure(
                    msisdn=NUMBER_A,
                    carrier_id=carrier,
                    held_from=_ts(2018),
                    state=common_pb2.TENURE_STATE_ACTIVE,
                ),
                registry_pb2.Tenure(
                    msisdn="+8613900000009",
                    carrier_id=carrier,
                    held_from=_ts(2015),
                    # Broken, a number given up without the end of its tenure.
                    held_until=None if "C-1" in self.broken else _ts(2020),
                    state=common_pb2.TENURE_STATE_CANCELLED,
                ),
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
        self.tokens.warrant(metadata, request.idn, "lookup")
        idn = request.idn.lower() if "C-3" in self.broken else request.idn
        if not _IDN.fullmatch(idn):
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "idn: 64 lowercase hex")
        found = self.tenures.get(idn, [])
        if not found and "C-2" in self.broken:
            raise Refusal(grpc.StatusCode.NOT_FOUND, "unknown idn")
        return registry_pb2.ListNumbersResponse(tenures=found)

    async def ListNumbers(  # noqa: N802 - gRPC method name
        self, request: registry_pb2.ListNumbersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> registry_pb2.ListNumbersResponse:
        return await _answer_async(self.list_numbers, request, context)


# ------------------------------------------------------------------- servers


def _health(service: str, broken: Collection[str]) -> dict[str, Any]:
    """The status to set per service name (the health servicer starts with "" SERVING)."""
    serving = health_pb2.HealthCheckResponse.SERVING
    names: dict[str, Any] = {"": serving, service: serving}
    if "H-1" in broken:
        names[""] = health_pb2.HealthCheckResponse.NOT_SERVING
    if "H-2" in broken:
        del names[service]
    return names


async def start_async(
    servicer: AsyncProvider | AsyncCarrier,
) -> tuple[grpc.aio.Server, str]:
    """Serve on 127.0.0.1, a free port; returns the server and its target."""
    server = grpc.aio.server()
    health_servicer = health.aio.HealthServicer()
    if isinstance(servicer, AsyncProvider):
        provider_pb2_grpc.add_BindingProviderServicer_to_server(servicer, server)
        names = _health(PROVIDER_SERVICE, servicer.core.broken)
    else:
        registry_pb2_grpc.add_NumberRegistryServicer_to_server(servicer, server)
        names = _health(CARRIER_SERVICE, servicer.broken)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name, status in names.items():
        await health_servicer.set(name, status)
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
