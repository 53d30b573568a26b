"""The gateway's gRPC boundary: every call's query id, access policy, refusals and end.

:class:`CallBoundary` is the server interceptor every ``Gateway`` call passes
through. Before the handler runs it gives the call a query id (in
:data:`~onecert.gateway._lookup.QUERY_ID` and structlog's contextvars, so
every log line the call causes carries it; fan-out tasks inherit it) and
enforces :mod:`onecert.gateway._policy`, which names the caller in
:data:`~onecert.gateway._policy.CALLER`. When the call is refused, by the
policy or by the service (:class:`~onecert.gateway._refusal.Refusal`), it
is the one place that writes the log line, the audit row and the gRPC
status. The call's end is logged with its status and time. Each call is
served in its own task, hence its own context: nothing needs resetting.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import structlog

from onecert.gateway._lookup import QUERY_ID, new_query_id
from onecert.gateway._policy import Policy
from onecert.gateway._refusal import Refusal

if TYPE_CHECKING:
    from onecert.gateway._audit import Auditor

__all__ = ["RPC", "CallBoundary", "answer_refusal"]

_log = structlog.get_logger("onecert.gateway.server")

RPC: ContextVar[str] = ContextVar("onecert_rpc", default="")
"""The short name of the RPC being served (``Lookup``)."""

# Refusals that say the gateway, not the caller, could not serve the call.
_OURS = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)

_Context = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    _Continuation = Callable[
        [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
    ]


async def answer_refusal(
    context: _Context, refusal: Refusal, auditor: Auditor | None = None
) -> NoReturn:
    """Log ``refusal``, write its audit row (if any) and end the call with its status."""
    log = _log.warning if refusal.code in _OURS else _log.info
    log("rpc.refused", code=refusal.code.name, reason=refusal.reason)
    note = refusal.audit
    if note is not None and auditor is not None:
        try:
            await auditor.record(
                note.kind, actor=note.actor, subject=note.subject, detail=dict(note.detail)
            )
        except Exception as exc:  # noqa: BLE001 - the refusal is answered even if its row is not
            _log.error("audit.append_failed", kind=note.kind, error=type(exc).__name__)
    await context.abort(refusal.code, refusal.message, trailing_metadata=refusal.trailing_metadata)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


class CallBoundary(grpc.aio.ServerInterceptor):
    """Query id, access policy and refusals for every call but the public ones.

    Args:
        policy: who may call what; public methods pass through untouched.
        auditor: where refusals that carry an audit row are recorded.
    """

    def __init__(self, policy: Policy, *, auditor: Auditor | None = None) -> None:
        self._policy = policy
        self._auditor = auditor

    async def intercept_service(
        self, continuation: _Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or self._policy.is_public(method):
            return handler
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                self._stream_with_context(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary_with_context(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # No other shape is served; refuse rather than run it outside the policy.
        _log.error("policy.unsupported_handler", method=method)
        return None

    def _enter(self, method: str, context: _Context) -> None:
        rpc = method.rsplit("/", 1)[-1]
        query_id = new_query_id()
        QUERY_ID.set(query_id)
        RPC.set(rpc)
        structlog.contextvars.bind_contextvars(query_id=query_id, rpc=rpc)
        self._policy.authorize(method, context)

    def _stream_with_context(
        self, method: str, inner: Callable[..., AsyncIterator[Any]]
    ) -> Callable[[Any, _Context], AsyncIterator[Any]]:
        async def handler(request: Any, context: _Context) -> AsyncIterator[Any]:
            started = time.monotonic()
            ended = "error"
            try:
                self._enter(method, context)
                async for response in inner(request, context):
                    yield response
                ended = "ok"
            except Refusal as refusal:
                await answer_refusal(context, refusal, self._auditor)
            except asyncio.CancelledError:
                ended = "cancelled"
                raise
            finally:
                if ended == "cancelled":
                    elapsed_ms = round((time.monotonic() - started) * 1000)
                    _log.info("rpc.cancelled", elapsed_ms=elapsed_ms)
                else:
                    _finished(context, started, ended == "error")

        return handler

    def _unary_with_context(
        self, method: str, inner: Callable[..., Awaitable[Any]]
    ) -> Callable[[Any, _Context], Awaitable[Any]]:
        async def handler(request: Any, context: _Context) -> Any:
            started = time.monotonic()
            error = True
            try:
                self._enter(method, context)
                response = await inner(request, context)
            except Refusal as refusal:
                await answer_refusal(context, refusal, self._auditor)
            else:
                error = False
                return response
            finally:
                _finished(context, started, error)

        return handler


def _finished(context: _Context, started: float, error: bool) -> None:
    code = context.code()
    status = getattr(code, "name", None) or ("UNKNOWN" if error else "OK")
    _log.info("rpc.finished", code=status, elapsed_ms=round((time.monotonic() - started) * 1000))
