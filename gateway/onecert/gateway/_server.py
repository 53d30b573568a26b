"""The gateway's gRPC server: wiring, health, reflection, query ids, shutdown."""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, NoReturn, Self

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from onecert.gateway._channels import ChannelPool
from onecert.gateway._config import GatewayConfig, check_transport
from onecert.gateway._fanout import FanOut, Router
from onecert.gateway._handles import HandleSealer, load_handle_key
from onecert.gateway._identity import AssertionVerifier, MemoryReplayCache, ReplayCache
from onecert.gateway._lookup import QUERY_ID, LookupService, new_query_id
from onecert.sdk._keys import SigningKey, load_jwks
from onecert.sdk._tls import ServerTLS
from onecert.sdk._warrant import WarrantIssuer
from onecert.v1 import gateway_pb2, gateway_pb2_grpc

__all__ = ["GatewayServer", "QueryIdInterceptor", "serve"]

_log = structlog.get_logger("onecert.gateway.server")

GATEWAY_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name


class QueryIdInterceptor(grpc.aio.ServerInterceptor):
    """Gives every ``Gateway`` call a query id, bound into the logging context.

    The id is set in :data:`~onecert.gateway._lookup.QUERY_ID` and in
    structlog's contextvars before the handler runs, so every log line the
    call causes (fan-out included: tasks inherit the context) carries it.
    Each call is served in its own task, hence its own context: nothing needs
    resetting afterwards. The call's end is logged with its status and time.
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(f"/{GATEWAY_SERVICE}/"):
            return handler
        rpc = method.rsplit("/", 1)[-1]
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                _stream_with_context(rpc, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary_with_context(rpc, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _enter(rpc: str) -> None:
    query_id = new_query_id()
    QUERY_ID.set(query_id)
    structlog.contextvars.bind_contextvars(query_id=query_id, rpc=rpc)


def _finished(context: grpc.aio.ServicerContext[Any, Any], started: float, error: bool) -> None:
    code = context.code()
    status = getattr(code, "name", None) or ("UNKNOWN" if error else "OK")
    _log.info("rpc.finished", code=status, elapsed_ms=round((time.monotonic() - started) * 1000))


def _stream_with_context(
    rpc: str, inner: Callable[..., AsyncIterator[Any]]
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    async def handler(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        _enter(rpc)
        started = time.monotonic()
        ended = "error"
        try:
            async for response in inner(request, context):
                yield response
            ended = "ok"
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
    rpc: str, inner: Callable[..., Awaitable[Any]]
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        _enter(rpc)
        started = time.monotonic()
        error = True
        try:
            response = await inner(request, context)
            error = False
            return response
        finally:
            _finished(context, started, error)

    return handler


class _GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    """The ``Gateway`` service: each RPC delegates to the part that serves it."""

    def __init__(self, lookup: LookupService) -> None:
        self._lookup = lookup

    async def Lookup(  # noqa: N802 - the gRPC method name
        self, request: gateway_pb2.LookupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[gateway_pb2.LookupResponse]:
        # An async generator function itself: grpc.aio tells streaming
        # handlers apart by inspecting the function.
        async for response in self._lookup.lookup(request, context):
            yield response

    async def Unbind(  # noqa: N802 - the gRPC method name
        self, request: gateway_pb2.GatewayUnbindRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.GatewayUnbindResponse:
        await _unimplemented(context, "Unbind")

    async def GetUnbind(  # noqa: N802 - the gRPC method name
        self, request: gateway_pb2.GetUnbindRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.GetUnbindResponse:
        await _unimplemented(context, "GetUnbind")

    async def ReportNumberEvent(  # noqa: N802 - the gRPC method name
        self,
        request: gateway_pb2.ReportNumberEventRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.ReportNumberEventResponse:
        await _unimplemented(context, "ReportNumberEvent")

    async def CheckRecycled(  # noqa: N802 - the gRPC method name
        self, request: gateway_pb2.CheckRecycledRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.CheckRecycledResponse:
        await _unimplemented(context, "CheckRecycled")

    async def PollEvents(  # noqa: N802 - the gRPC method name
        self, request: gateway_pb2.PollEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.PollEventsResponse:
        await _unimplemented(context, "PollEvents")

    async def ConfirmEventAction(  # noqa: N802 - the gRPC method name
        self,
        request: gateway_pb2.ConfirmEventActionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.ConfirmEventActionResponse:
        await _unimplemented(context, "ConfirmEventAction")

    async def GetComplianceReport(  # noqa: N802 - the gRPC method name
        self,
        request: gateway_pb2.GetComplianceReportRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.GetComplianceReportResponse:
        await _unimplemented(context, "GetComplianceReport")


async def _unimplemented(context: grpc.aio.ServicerContext[Any, Any], rpc: str) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{rpc} is not served by this gateway yet")


class GatewayServer:
    """The gateway, ready to run in this event loop.

    Use it as ``async with GatewayServer(config) as server:`` (``server.port``
    is the bound port, handy with ``listen = "127.0.0.1:0"``), or call
    :meth:`start` and :meth:`stop`. Keys and certificates are read when it is
    constructed, so configuration mistakes surface before anything listens.

    Args:
        config: the validated configuration; plaintext is refused unless
            ``config.dev_plaintext``.
        router: chooses the providers to ask per number (all by default).
        replay_cache: where assertion ids are remembered; in memory by default
            (enough for one process; replicas need a shared one).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        router: Router | None = None,
        replay_cache: ReplayCache | None = None,
    ) -> None:
        check_transport(config)
        self.config = config
        identity = config.identity
        self._verifier = AssertionVerifier(
            issuers={i.issuer: load_jwks(i.jwks) for i in identity.issuers},
            audience=identity.audience,
            assurance_levels=identity.assurance_levels,
            required_assurance=identity.required_assurance,
            leeway=identity.leeway_s,
            max_lifetime=identity.max_lifetime_s,
            replay=replay_cache if replay_cache is not None else MemoryReplayCache(),
        )
        self._warrants = WarrantIssuer(
            key=SigningKey.load(config.keys.warrant_key),
            issuer=config.id,
            lifetime=config.keys.warrant_lifetime_s,
        )
        self._sealer = HandleSealer(load_handle_key(config.keys.handle_key))
        self._credentials = (
            None
            if config.tls is None
            else ServerTLS(config.tls.cert, config.tls.key, config.tls.client_ca).credentials()
        )
        self._channels = ChannelPool(
            upstream_tls=config.upstream_tls, max_message_bytes=config.max_message_bytes
        )
        self.fanout = FanOut(
            carriers=config.carriers,
            providers=config.providers,
            fanout=config.fanout,
            channels=self._channels,
            warrants=self._warrants,
            router=router,
        )
        self.lookup = LookupService(
            verifier=self._verifier,
            fanout=self.fanout,
            sealer=self._sealer,
            handle_ttl=config.keys.handle_ttl_s,
            lookup_deadline=config.lookup_deadline_s,
            summary_margin=config.fanout.summary_margin_s,
            max_concurrent_lookups=config.max_concurrent_lookups,
        )
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._port = 0
        self._stopped = asyncio.Event()

    @property
    def port(self) -> int:
        """The port the server listens on (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the gateway is not started")
        return self._port

    @property
    def tls(self) -> bool:
        """Whether callers must speak TLS to this gateway."""
        return self._credentials is not None

    async def start(self) -> None:
        """Bind, start serving and report SERVING."""
        if self._server is not None:
            raise RuntimeError("the gateway is already started")
        limit = self.config.max_message_bytes
        server = grpc.aio.server(
            interceptors=[QueryIdInterceptor()],
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
            ],
        )
        gateway_pb2_grpc.add_GatewayServicer_to_server(_GatewayServicer(self.lookup), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (GATEWAY_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = self.config.listen
        try:
            if self._credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self._credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        await server.start()
        self._server, self._port = server, port
        for service in ("", GATEWAY_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        _log.info(
            "gateway.listening",
            address=address,
            port=port,
            tls=self.tls,
            mutual_tls=self.config.tls is not None and self.config.tls.client_ca is not None,
            dev_plaintext=self.config.dev_plaintext,
            carriers=len(self.config.carriers),
            providers=len(self.config.providers),
        )

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, give running ones ``grace``
        seconds (the configured grace period by default), then close channels."""
        server = self._server
        if server is None or self._stopped.is_set():
            return
        grace = self.config.grace_period_s if grace is None else grace
        _log.info("gateway.stopping", grace_s=grace, active_lookups=self.lookup.active_lookups)
        await self._health.enter_graceful_shutdown()
        await server.stop(grace)
        await self._channels.close()
        self._stopped.set()
        _log.info("gateway.stopped")

    async def wait_stopped(self) -> None:
        """Wait until :meth:`stop` has finished."""
        await self._stopped.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve(
    config: GatewayConfig, *, ready: Callable[[GatewayServer], None] | None = None
) -> None:
    """Run the gateway until SIGTERM or SIGINT, then shut down gracefully.

    Args:
        config: the validated configuration.
        ready: called once the server listens (e.g. to print the port).
    """
    server = GatewayServer(config)  # reads keys and certificates: fails before listening
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with server:
            if ready is not None:
                ready(server)
            await stop.wait()
            _log.info("gateway.signal", grace_s=config.grace_period_s)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
