"""The provider side: :class:`Provider` (what an implementer writes) and the
``BindingProvider`` service around it (what the SDK does for them)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import grpc
import jwt
import structlog

from onecert.sdk._convert import (
    CATEGORIES,
    MAX_ACCOUNT_REF,
    UNBIND_OUTCOMES,
    UNBIND_REASONS,
    InvalidResultError,
    bindings_to_pb,
    from_timestamp,
    timestamp,
    unbind_result_to_pb,
)
from onecert.sdk._core import (
    Adapter,
    CallError,
    Context,
    Handler,
    authorize,
    deadline_from,
    implementation_name,
    invoke,
    log,
    token_of,
)
from onecert.sdk._idempotency import IdempotencyStore, KeyedLocks
from onecert.sdk._keys import KeySet
from onecert.sdk._msisdn import InvalidMsisdnError, mask_msisdn, sha256_hex, validate_msisdn
from onecert.sdk._set import SetError, SetVerifier
from onecert.sdk._types import (
    CallInfo,
    ProviderCategory,
    RecycledNotice,
    UnbindOutcome,
    UnbindReason,
    UnbindRequest,
    coerce_enum,
)
from onecert.sdk._warrant import RPC_PURPOSES, WarrantVerifier
from onecert.v1 import provider_pb2, provider_pb2_grpc

CONTRACT_VERSION = "onecert.v1"
MAX_REQUEST_ID = 128
# Most SETs in one ReceiveEvents call (E-13).
MAX_EVENT_BATCH = 1000
# The one warrant purpose each call allows (docs/contract.md W-13): a
# lookup warrant must not be replayable as an unbind.
LIST_PURPOSES = frozenset({RPC_PURPOSES["onecert.v1.BindingProvider/ListBindings"]})
UNBIND_PURPOSES = frozenset({RPC_PURPOSES["onecert.v1.BindingProvider/Unbind"]})

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class _BoundNotes(Protocol):
    async def note_bound(self, msisdn: str) -> object: ...


class Provider(Adapter):
    """An internet provider's adapter: who it is, and its functions.

    Register plain async functions with the decorators::

        provider = Provider(provider_id="example-forum", name="Example Forum",
                            category="forum")

        @provider.list_bindings
        async def list_bindings(msisdn: str, info: CallInfo) -> list[Binding]: ...

        @provider.unbind
        async def unbind(request: UnbindRequest, info: CallInfo) -> UnbindResult: ...

        provider.main()   # or provider.run(gateway_keys=..., tls=...)

    or pass one object whose methods have those names as ``implementation``.
    Each function may leave out ``info``. Functions are checked when they are
    registered: a wrong signature is a TypeError right there.

    Args:
        provider_id: the id the gateway knows you by (1 to 64 of [a-z0-9._-]).
        name: the name citizens see.
        category: a :class:`ProviderCategory` or its string ("forum").
        implementation: an object with async methods ``list_bindings``,
            ``unbind`` and optionally ``on_recycled``.
        list_numbers: for routing: called with no argument, returns an async
            iterator over every number bound at the site (E.164, each once);
            read afresh for each snapshot, never held in memory. With it, a
            :class:`~onecert.sdk.FilterPublisher` publishes the site's filter
            so the gateway asks only about numbers it may hold.
        snapshot_interval: how often the filter is published again (1 minute
            to 7 days; a day by default). The gateway asks the site about
            every number once a snapshot is older than this plus a grace.
    """

    _kind = "provider"
    _required = ("list_bindings", "unbind")
    _optional = ("on_recycled",)

    def __init__(
        self,
        *,
        provider_id: str,
        name: str,
        category: ProviderCategory | str,
        implementation: object | None = None,
        list_numbers: Callable[[], AsyncIterable[str]] | None = None,
        snapshot_interval: timedelta = timedelta(days=1),
    ) -> None:
        if list_numbers is not None and not callable(list_numbers):
            raise TypeError("list_numbers must be a callable returning an async iterator")
        if not timedelta(minutes=1) <= snapshot_interval <= timedelta(days=7):
            raise ValueError("snapshot_interval must be from 1 minute to 7 days")
        self.list_numbers = list_numbers
        self.snapshot_interval = snapshot_interval
        self._publisher: _BoundNotes | None = None
        super().__init__(provider_id)
        if not name.strip():
            raise ValueError("name is required")
        self._name = name
        self._category = coerce_enum(ProviderCategory, category, "category")
        self._list_bindings: Handler | None = None
        self._unbind: Handler | None = None
        self._on_recycled: Handler | None = None
        if implementation is not None:
            self._implement(implementation)

    async def note_bound(self, msisdn: str) -> bool:
        """Tell the gateway at once that ``msisdn`` (E.164) was just bound here.

        Publishes a one-number addition to the routing filter, so lookups of
        that number reach this site before the next snapshot. True when it
        was published; False when no :class:`~onecert.sdk.FilterPublisher`
        runs for this provider (then the next snapshot carries it).

        Raises:
            ValueError: ``msisdn`` is not E.164.
            onecert.sdk.client.GatewayError: the gateway refused or is unreachable.
        """
        if self._publisher is None:
            return False
        await self._publisher.note_bound(msisdn)
        return True

    def attach_publisher(self, publisher: _BoundNotes | None) -> None:
        """Route :meth:`note_bound` to ``publisher`` (the FilterPublisher does this)."""
        self._publisher = publisher

    @property
    def id(self) -> str:
        """The id the gateway knows this provider by (``provider_id=`` when built)."""
        return self._id

    @property
    def name(self) -> str:
        return self._name

    @property
    def category(self) -> ProviderCategory:
        return self._category

    def list_bindings(self, fn: F) -> F:
        """Register ``async def list_bindings(msisdn, info) -> list[Binding]``.

        Return every account bound to ``msisdn`` (E.164, already validated);
        an unknown number is an empty list.
        """
        self._register("list_bindings", fn, "msisdn")
        return fn

    def unbind(self, fn: F) -> F:
        """Register ``async def unbind(request, info) -> UnbindResult``.

        Detach ``request.msisdn`` from ``request.account_ref``; answer
        ``UnbindResult.rejected("no such account")`` for an unknown account.
        A request id already answered DONE or REJECTED never reaches it again;
        ``request.resumed`` says an earlier call for it started and its
        answer was never recorded (it may have applied the unbind): answer
        DONE if the number is already detached from the account.
        """
        self._register("unbind", fn, "request")
        return fn

    def on_recycled(self, fn: F) -> F:
        """Register ``async def on_recycled(notice, info) -> int | None`` (optional).

        Called once per notice (:class:`RecycledNotice`) that ``notice.msisdn``
        went to a new subscriber. Return how many bindings you removed if you
        acted now, or None if you only recorded it to act later. Without it,
        notices are acknowledged and nothing else happens. ``notice.resumed``
        says an earlier call for it started and its answer was never recorded
        (it may have acted): act only on what is left.
        """
        self._register("on_recycled", fn, "notice")
        return fn

    def __repr__(self) -> str:
        return f"Provider(provider_id={self.id!r}, category={self._category.value!r})"


def _invalid(details: str) -> CallError:
    return CallError(grpc.StatusCode.INVALID_ARGUMENT, details)


def _check_msisdn(value: str) -> str:
    try:
        return validate_msisdn(value)
    except InvalidMsisdnError as exc:
        raise _invalid(str(exc)) from None


def _bad_result(exc: InvalidResultError) -> CallError:
    log.error("adapter.invalid_result", what=exc.what, rule=exc.rule)
    return CallError(grpc.StatusCode.INTERNAL, f"adapter returned an invalid {exc.what}")


async def _store_get(store: IdempotencyStore, key: str) -> dict[str, Any] | None:
    try:
        text = await store.get(key)
        return None if text is None else dict(json.loads(text))
    except Exception as exc:  # noqa: BLE001  # any store failure means "try again later"
        log.error("idempotency.failed", operation="get", error=type(exc).__name__)
        raise CallError(
            grpc.StatusCode.UNAVAILABLE, "the adapter cannot read its answer store; try again later"
        ) from None


async def _store_put(store: IdempotencyStore, key: str, value: dict[str, Any]) -> None:
    try:
        await store.put(key, json.dumps(value, separators=(",", ":")))
    except Exception as exc:  # noqa: BLE001  # any store failure means "try again later"
        log.error("idempotency.failed", operation="put", error=type(exc).__name__)
        raise CallError(
            grpc.StatusCode.UNAVAILABLE,
            "the adapter cannot record its answer; try again later",
        ) from None


def _forget(running: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        running.discard(task)
        # Nobody may be waiting any more: retrieve the error so that it is
        # not reported as never retrieved (the call's own path logged it).
        if not task.cancelled():
            task.exception()

    return done


def _unbind_fingerprint(request: provider_pb2.UnbindRequest) -> str:
    # Hashed, so the store holds no raw msisdn.
    return sha256_hex(json.dumps([request.msisdn, request.account_ref, int(request.reason)]))


class ProviderCore:
    """The ``BindingProvider`` logic without the network (protobuf in, protobuf out).

    Raises :class:`CallError` for every non-OK status.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        keys: KeySet,
        issuer: str,
        store: IdempotencyStore,
        leeway: float = 5.0,
    ) -> None:
        provider.check_complete()
        self.provider = provider
        self._warrants = WarrantVerifier(
            keys=keys, issuer=issuer, audience=provider.id, leeway=leeway
        )
        self._sets = SetVerifier(keys=keys, issuer=issuer, audience=provider.id, leeway=leeway)
        self._store = store
        self._locks = KeyedLocks()
        # Unbinds and notices that go on after their caller left (see unbind).
        self._running: set[asyncio.Task[Any]] = set()

    async def drain(self, within: float) -> int:
        """Wait up to ``within`` s for unbinds and notices whose caller left.

        Their answers are recorded once they end; a process that stops
        without waiting would cancel one between the adapter's work and that
        record. Returns how many were still running at the timeout.
        """
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=within)
            if pending:
                log.warning("adapter.drain_timeout", running=len(pending))
            return len(pending)
        return 0

    def describe(self) -> provider_pb2.DescribeResponse:
        return provider_pb2.DescribeResponse(
            provider_id=self.provider.id,
            name=self.provider.name,
            category=CATEGORIES.to_pb(self.provider.category),
            contract_version=CONTRACT_VERSION,
            implementation=implementation_name(),
        )

    async def list_bindings(
        self, request: provider_pb2.ListBindingsRequest, *, token: str, remaining: float | None
    ) -> provider_pb2.ListBindingsResponse:
        msisdn = _check_msisdn(request.msisdn)
        structlog.contextvars.bind_contextvars(msisdn=mask_msisdn(msisdn))
        info = authorize(
            self._warrants, token, target=msisdn, purposes=LIST_PURPOSES, remaining=remaining
        )
        assert self.provider._list_bindings is not None  # checked in __init__
        result = await invoke(self.provider._list_bindings, msisdn, info)  # same package
        try:
            bindings = bindings_to_pb(result)
        except InvalidResultError as exc:
            raise _bad_result(exc) from None
        log.info("bindings.listed", count=len(bindings))
        return provider_pb2.ListBindingsResponse(bindings=bindings)

    async def unbind(
        self, request: provider_pb2.UnbindRequest, *, token: str, remaining: float | None
    ) -> provider_pb2.UnbindResponse:
        if not 0 < len(request.request_id) <= MAX_REQUEST_ID:
            raise _invalid(f"request_id is required (1 to {MAX_REQUEST_ID} characters)")
        msisdn = _check_msisdn(request.msisdn)
        if not 0 < len(request.account_ref) <= MAX_ACCOUNT_REF:
            raise _invalid(f"account_ref is required (1 to {MAX_ACCOUNT_REF} characters)")
        reason = UNBIND_REASONS.from_pb_or_none(request.reason)
        if reason is None:
            raise _invalid("reason is required (not UNBIND_REASON_UNSPECIFIED)")
        structlog.contextvars.bind_contextvars(
            msisdn=mask_msisdn(msisdn), request_id=request.request_id
        )
        info = authorize(
            self._warrants, token, target=msisdn, purposes=UNBIND_PURPOSES, remaining=remaining
        )
        key = "unbind:" + request.request_id
        fingerprint = _unbind_fingerprint(request)
        # Shielded: once the adapter's function has started, it runs to the
        # end and its answer is recorded even if the gateway goes away
        # meanwhile (a crash, a dropped connection). Cancelled halfway, an
        # unbind the adapter had already committed would be applied again
        # when the gateway redelivers it.
        task = asyncio.ensure_future(
            self._unbind_once(
                key,
                fingerprint=fingerprint,
                request=request,
                msisdn=msisdn,
                reason=reason,
                info=info,
            )
        )
        self._running.add(task)
        task.add_done_callback(_forget(self._running))
        return await asyncio.shield(task)

    async def _unbind_once(
        self,
        key: str,
        *,
        fingerprint: str,
        request: provider_pb2.UnbindRequest,
        msisdn: str,
        reason: UnbindReason,
        info: CallInfo,
    ) -> provider_pb2.UnbindResponse:
        # Serialised per request id: a duplicate delivered while the first is
        # still running waits for its answer instead of applying it twice.
        async with self._locks.hold(key):
            stored = await _store_get(self._store, key)
            if stored is not None and stored.get("fp") != fingerprint:
                log.warning("unbind.request_id_reused")
                raise _invalid("request_id was already used for a different unbind")
            if stored is not None and stored.get("outcome") not in _NOT_FINAL:
                log.info("unbind.replayed", outcome=stored.get("outcome"))
                return _unbind_response(stored)
            # A claim with no answer: an earlier call started the adapter's
            # function and never recorded what it answered (killed, failed).
            resumed = stored is not None and stored.get("outcome") == _CLAIMED
            if resumed:
                log.warning("unbind.resumed")
            # The claim is durable before the adapter runs, so a process
            # killed between the adapter's write and the answer's record is
            # detected on redelivery instead of looking like a first call.
            await _store_put(self._store, key, _unbind_claim(fingerprint, request))
            value = UnbindRequest(
                request_id=request.request_id,
                msisdn=msisdn,
                account_ref=request.account_ref,
                reason=reason,
                resumed=resumed,
            )
            assert self.provider._unbind is not None  # checked in __init__
            result = await invoke(self.provider._unbind, value, info)  # same package
            try:
                response = unbind_result_to_pb(result, now=datetime.now(UTC))
            except InvalidResultError as exc:
                raise _bad_result(exc) from None
            # PENDING is stored too, binding the request id to this unbind,
            # but it is not replayed: the next delivery asks the adapter again.
            await _store_put(self._store, key, _unbind_record(fingerprint, response))
        log.info("unbind.answered", outcome=UnbindOutcome(result.outcome).value)
        return response

    async def receive_event(
        self, request: provider_pb2.ReceiveEventRequest, *, remaining: float | None
    ) -> provider_pb2.ReceiveEventResponse:
        try:
            notice = self._sets.verify(request.set)
        except SetError as exc:
            log.warning("notice.refused", reason=exc.reason)
            code = (
                grpc.StatusCode.INVALID_ARGUMENT
                if exc.malformed
                else grpc.StatusCode.UNAUTHENTICATED
            )
            raise CallError(code, exc.message) from None
        structlog.contextvars.bind_contextvars(
            event_id=notice.jti, msisdn=mask_msisdn(notice.msisdn)
        )
        # Shielded, as unbind is: once on_recycled has acted, its answer is
        # recorded even if the call is cut short meanwhile (the gateway's
        # deadline, a dropped connection). Cancelled in between, the notice
        # would be acted on again when the gateway pushes it again.
        task = asyncio.ensure_future(self._receive_once(notice, remaining=remaining))
        self._running.add(task)
        task.add_done_callback(_forget(self._running))
        return await asyncio.shield(task)

    async def receive_events(
        self, request: provider_pb2.ReceiveEventsRequest, *, remaining: float | None
    ) -> provider_pb2.ReceiveEventsResponse:
        """A batch of SETs, each checked and handled on its own (E-13 to E-17).

        One result per SET, in order: a refused SET answers as
        ``ReceiveEvent`` would have failed, and the others are unaffected. A
        notice seen before (same ``jti``) gets its first answer again (E-10).
        """
        if not 0 < len(request.sets) <= MAX_EVENT_BATCH:
            raise _invalid(f"sets must hold 1 to {MAX_EVENT_BATCH} SETs")
        answers = await asyncio.gather(
            *(
                self.receive_event(provider_pb2.ReceiveEventRequest(set=token), remaining=remaining)
                for token in request.sets
            ),
            return_exceptions=True,
        )
        results = []
        for token, answer in zip(request.sets, answers, strict=True):
            result = provider_pb2.EventResult(jti=_unverified_jti(token))
            if isinstance(answer, provider_pb2.ReceiveEventResponse):
                result.response.CopyFrom(answer)
            elif isinstance(answer, CallError):
                result.error_code, result.error_message = answer.code.value[0], answer.details
            elif isinstance(answer, Exception):
                log.error("notice.failed", error=type(answer).__name__)
                result.error_code = grpc.StatusCode.INTERNAL.value[0]
                result.error_message = "the provider failed to handle the notice"
            else:
                raise answer
            results.append(result)
        return provider_pb2.ReceiveEventsResponse(results=results)

    async def _receive_once(
        self, notice: RecycledNotice, *, remaining: float | None
    ) -> provider_pb2.ReceiveEventResponse:
        key = "event:" + notice.jti
        async with self._locks.hold(key):
            stored = await _store_get(self._store, key)
            if stored is not None and stored.get("outcome") != _CLAIMED:
                log.info("notice.replayed")
                return _event_response(stored)
            handler = self.provider._on_recycled  # same package
            removed: int | None = None
            if handler is not None:
                # As for an unbind: a claim found without an answer means an
                # earlier call started on_recycled and never recorded what it
                # did (killed, failed); the claim is durable before it runs.
                if stored is not None:
                    log.warning("notice.resumed")
                    notice = dataclasses.replace(notice, resumed=True)
                await _store_put(self._store, key, {"outcome": _CLAIMED, "claimed_at": time.time()})
                info = CallInfo(
                    audience=self.provider.id,
                    purpose="event",
                    query_id=notice.jti,
                    warrant_id=notice.jti,
                    deadline=deadline_from(remaining),
                )
                removed = _removed_count(await invoke(handler, notice, info))
            record = {"acted": removed is not None, "removed": removed or 0}
            await _store_put(self._store, key, record)
        log.info("notice.received", acted=record["acted"], removed=record["removed"])
        return _event_response(record)


def _removed_count(result: object) -> int | None:
    """What on_recycled returned, checked: None or a count of bindings removed."""
    if result is None:
        return None
    if isinstance(result, bool) or not isinstance(result, int) or not 0 <= result < 2**32:
        raise _bad_result(
            InvalidResultError(
                "event result", "on_recycled must return None or the number of bindings removed"
            )
        )
    return result


# The outcome of a claim: written before the adapter's function runs,
# replaced by its answer once it returns.
_CLAIMED = "claimed"
_NOT_FINAL = frozenset({UnbindOutcome.PENDING.value, _CLAIMED})


def _unbind_claim(fingerprint: str, request: provider_pb2.UnbindRequest) -> dict[str, Any]:
    # The intent: which account, and the number hashed (the store holds no
    # raw msisdn); the request id is the key.
    return {
        "fp": fingerprint,
        "outcome": _CLAIMED,
        "account_ref": request.account_ref,
        "msisdn_sha256": sha256_hex(request.msisdn),
        "claimed_at": time.time(),
    }


def _unbind_record(fingerprint: str, response: provider_pb2.UnbindResponse) -> dict[str, Any]:
    return {
        "fp": fingerprint,
        "outcome": UNBIND_OUTCOMES.from_pb(response.outcome).value,
        "reason": response.reason,
        "decided_at": (
            from_timestamp(response.decided_at).timestamp()
            if response.HasField("decided_at")
            else None
        ),
    }


def _unbind_response(record: dict[str, Any]) -> provider_pb2.UnbindResponse:
    response = provider_pb2.UnbindResponse(
        outcome=UNBIND_OUTCOMES.to_pb(UnbindOutcome(record["outcome"])),
        reason=str(record.get("reason", "")),
    )
    decided_at = record.get("decided_at")
    if decided_at is not None:
        response.decided_at.CopyFrom(timestamp(datetime.fromtimestamp(decided_at, UTC)))
    return response


def _unverified_jti(token: str) -> str:
    # Only to label a result (results are matched by position): a token that
    # is not a JWS, or has no string jti, is labelled "".
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return ""
    jti = claims.get("jti")
    return jti[:256] if isinstance(jti, str) else ""


def _event_response(record: dict[str, Any]) -> provider_pb2.ReceiveEventResponse:
    acted = bool(record.get("acted"))
    return provider_pb2.ReceiveEventResponse(
        acknowledged=True,
        acted=acted,
        bindings_removed=int(record.get("removed", 0)) if acted else 0,
    )


class ProviderServicer(provider_pb2_grpc.BindingProviderServicer):
    """The gRPC face of :class:`ProviderCore`.

    Its :class:`CallError` goes up to the server's boundary, the one place
    that turns it into the call's status.
    """

    def __init__(self, core: ProviderCore) -> None:
        self._core = core

    async def Describe(  # noqa: N802  # gRPC method name
        self, request: provider_pb2.DescribeRequest, context: Context
    ) -> provider_pb2.DescribeResponse:
        return self._core.describe()

    async def ListBindings(  # noqa: N802  # gRPC method name
        self, request: provider_pb2.ListBindingsRequest, context: Context
    ) -> provider_pb2.ListBindingsResponse:
        return await self._core.list_bindings(
            request, token=token_of(context), remaining=context.time_remaining()
        )

    async def Unbind(  # noqa: N802  # gRPC method name
        self, request: provider_pb2.UnbindRequest, context: Context
    ) -> provider_pb2.UnbindResponse:
        return await self._core.unbind(
            request, token=token_of(context), remaining=context.time_remaining()
        )

    async def ReceiveEvent(  # noqa: N802  # gRPC method name
        self, request: provider_pb2.ReceiveEventRequest, context: Context
    ) -> provider_pb2.ReceiveEventResponse:
        return await self._core.receive_event(request, remaining=context.time_remaining())

    async def ReceiveEvents(  # noqa: N802  # gRPC method name
        self, request: provider_pb2.ReceiveEventsRequest, context: Context
    ) -> provider_pb2.ReceiveEventsResponse:
        return await self._core.receive_events(request, remaining=context.time_remaining())
