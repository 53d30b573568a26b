"""Running an adapter: the gRPC server, health, reflection, TLS, signals, logs."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from onecert.sdk._carrier import Carrier, CarrierCore, CarrierServicer
from onecert.sdk._core import Adapter, CallError, log
from onecert.sdk._idempotency import IdempotencyStore, open_store
from onecert.sdk._keys import KeyConfigError, KeySet, keys_or_jwks
from onecert.sdk._lifecycle import AsyncResource
from onecert.sdk._logging import configure_logging
from onecert.sdk._provider import Provider, ProviderCore, ProviderServicer
from onecert.sdk._tls import ServerTLS, TLSConfigError, peer_names
from onecert.v1 import provider_pb2, provider_pb2_grpc, registry_pb2, registry_pb2_grpc

DEFAULT_PORT = 50061
# Requests are tiny (a number, a token of a few hundred bytes); refusing big
# ones early costs an attacker more than it costs us.
MAX_RECEIVE_MESSAGE_BYTES = 64 * 1024
MAX_SEND_MESSAGE_BYTES = 4 * 1024 * 1024
# At shutdown, how long at least an unbind or notice whose caller left may
# finish (its answer then recorded), whatever the grace period for calls.
_DRAIN_MIN_S = 10.0

PROVIDER_SERVICE = provider_pb2.DESCRIPTOR.services_by_name["BindingProvider"].full_name
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["NumberRegistry"].full_name


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class ServerConfigError(ValueError):
    """The server cannot start as configured (TLS, listen address, keys)."""


def listen_address(listen: str | int) -> str:
    """``"host:port"`` from a port (every interface) or an address."""
    if isinstance(listen, bool):
        raise ServerConfigError("listen must be a port number or 'host:port'")
    if isinstance(listen, int):
        if not 0 <= listen <= 65535:
            raise ServerConfigError("port must be between 0 and 65535")
        return f"[::]:{listen}"
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ServerConfigError(f"listen address must be 'host:port', got {listen!r}")
    return listen


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for an address to
    name before serving on it, or one where nobody answers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _CallBoundary(grpc.aio.ServerInterceptor):
    """The adapter's side of the network: gives every unary call a logging
    scope, turns the core's :class:`CallError` into the call's status, and
    logs how the call ended.

    Each call runs in its own task (so its own context): what the handler
    binds (the verified query id, the masked number) shows in the final line
    and never in another call's. With a ``gateway_identity``, a call whose
    client certificate names someone else (another provider's certificate
    from the same CA) is refused PERMISSION_DENIED before its handler runs.
    """

    def __init__(self, gateway_identity: str | None = None) -> None:
        self._identity = gateway_identity

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = str(handler_call_details.method)
        if method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        # In grpc.aio the behaviour is a coroutine function, whatever the
        # (sync) stubs say.
        inner: Any = handler.unary_unary
        name = method.rsplit("/", 1)[-1]

        async def logged(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            outcome = "OK"
            with structlog.contextvars.bound_contextvars(rpc=name):
                try:
                    await self._check_caller(context)
                    return await inner(request, context)
                except CallError as exc:
                    outcome = exc.code.name
                    await context.abort(exc.code, exc.details)
                except asyncio.CancelledError:
                    outcome = "CANCELLED"
                    raise
                except BaseException:
                    code: object = context.code()
                    outcome = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
                    raise
                finally:
                    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
                    log.info("rpc.finished", code=outcome, ms=elapsed_ms)

        return grpc.unary_unary_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def _check_caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self._identity is None:
            return
        names = peer_names(context)
        if self._identity in names:
            return
        shown = ", ".join(sorted(names)[:3]) or "no client certificate"
        log.warning("caller.not_gateway", caller=shown)
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"the caller's certificate ({shown}) is not the gateway's "
            f"({self._identity!r}): only the gateway may call this server",
        )


class Server(AsyncResource):
    """Serves a :class:`Provider` or a :class:`Carrier` over gRPC.

    With health (``grpc.health.v1``) and reflection (so ``grpcurl`` works),
    TLS or mutual TLS, warrant checks, request-id idempotency and logs with
    masked numbers. Use it as ``async with Server(...) as server:``, or
    ``await server.start()`` ... ``await server.shutdown()``, or
    ``await server.run()`` (serves until :meth:`shutdown`).

    Args:
        adapter: the provider or carrier to serve.
        gateway_keys: the gateway's public keys (a key set or a JWKS file).
        listen: ``"host:port"`` or a port (every interface); port 0 picks one
            (see :attr:`port`).
        gateway_issuer: the gateway id warrants must name (``iss``).
        tls: certificate and key; with ``client_ca_file``, mutual TLS.
        insecure: serve plaintext. For development only: without ``tls`` and
            without this flag the server refuses to start.
        idempotency: where answers to unbinds and notices are remembered: a
            store, a SQLite file path, or None for memory (lost on restart).
        grace: seconds in-flight calls get to finish on shutdown.
        max_concurrent_rpcs: calls served at once; more are refused with
            RESOURCE_EXHAUSTED. None for no limit.
        gateway_identity: the name (CN or subject alternative name) of the
            gateway's client certificate: calls presenting another
            certificate of the CA are refused PERMISSION_DENIED. Needs mutual
            TLS. None: any certificate of the CA passes (the warrant is the
            only check).

    Raises:
        ValueError: at construction, for an unusable configuration.
        TypeError: the adapter lacks a required function.
    """

    def __init__(
        self,
        adapter: Provider | Carrier,
        *,
        gateway_keys: KeySet | str | Path,
        listen: str | int = "127.0.0.1:0",
        gateway_issuer: str = "onecert-gateway",
        tls: ServerTLS | None = None,
        insecure: bool = False,
        idempotency: IdempotencyStore | str | Path | None = None,
        grace: float = 5.0,
        max_concurrent_rpcs: int | None = None,
        gateway_identity: str | None = None,
    ) -> None:
        if not isinstance(adapter, Provider | Carrier):
            raise TypeError(f"expected a Provider or a Carrier, got {type(adapter).__name__}")
        adapter.check_complete()
        if tls is None and not insecure:
            raise ServerConfigError(
                "refusing to serve without TLS: pass tls=ServerTLS(cert_file, key_file, "
                "client_ca_file) or, for development only, insecure=True (--insecure)"
            )
        if tls is not None and insecure:
            raise ServerConfigError("tls and insecure=True contradict each other; choose one")
        if grace < 0:
            raise ServerConfigError("grace must not be negative")
        if gateway_identity is not None and (tls is None or tls.client_ca_file is None):
            raise ServerConfigError(
                "gateway_identity needs mutual TLS: tls=ServerTLS(cert, key, client_ca_file)"
            )
        self._gateway_identity = gateway_identity
        self._adapter = adapter
        self._keys = keys_or_jwks(gateway_keys)
        if not self._keys:
            raise KeyConfigError("gateway_keys is empty: the server could verify no warrant")
        self._listen = listen_address(listen)
        self._issuer = gateway_issuer
        self._tls = tls
        self._grace = grace
        self._max_concurrent_rpcs = max_concurrent_rpcs
        self._store = open_store(idempotency)
        self._memory_store = idempotency is None
        self._server: grpc.aio.Server | None = None
        self._core: ProviderCore | None = None
        self._health: HealthServicer | None = None
        self._port: int | None = None
        self._shutdown_requested = asyncio.Event()
        self._shutdown_task: asyncio.Task[None] | None = None

    @property
    def adapter(self) -> Provider | Carrier:
        return self._adapter

    @property
    def port(self) -> int:
        """The port the server listens on (known once started)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def address(self) -> str:
        """``"host:port"`` to connect to (the loopback address for a wildcard)."""
        host = self._listen.rpartition(":")[0]
        if host in ("[::]", "0.0.0.0", ""):  # noqa: S104  # comparing, not binding
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    def _service(self, server: grpc.aio.Server) -> str:
        adapter = self._adapter
        if isinstance(adapter, Provider):
            core = ProviderCore(adapter, keys=self._keys, issuer=self._issuer, store=self._store)
            self._core = core
            provider_pb2_grpc.add_BindingProviderServicer_to_server(ProviderServicer(core), server)
            return PROVIDER_SERVICE
        carrier_core = CarrierCore(adapter, keys=self._keys, issuer=self._issuer)
        registry_pb2_grpc.add_NumberRegistryServicer_to_server(
            CarrierServicer(carrier_core), server
        )
        return REGISTRY_SERVICE

    async def start(self) -> None:
        """Bind and start serving; return at once."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        credentials = self._tls.credentials() if self._tls is not None else None
        try:
            # Fail now, not at the first unbind, if the store is unusable (a
            # SQLite path in a missing or read-only directory).
            await self._store.get("onecert:probe")
        except Exception as exc:  # any store failure is a configuration error here
            raise ServerConfigError(f"the idempotency store is unusable: {exc}") from exc
        server = grpc.aio.server(
            interceptors=[_CallBoundary(self._gateway_identity)],
            options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
                # A second adapter started on a taken port must fail, not
                # silently share the port with the first.
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=self._max_concurrent_rpcs,
        )
        service = self._service(server)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            [
                service,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        try:
            if credentials is None:
                port = server.add_insecure_port(self._listen)
            else:
                port = server.add_secure_port(self._listen, credentials)
        except RuntimeError:
            port = 0
        if port == 0:
            await server.stop(None)
            raise ServerConfigError(f"cannot listen on {self._listen} (address in use?)")
        await server.start()
        self._server, self._health, self._port = server, health, port
        role = "provider" if isinstance(self._adapter, Provider) else "carrier"
        mtls = self._tls is not None and self._tls.client_ca_file is not None
        log.info(
            "adapter.listening",
            role=role,
            id=self._adapter.id,
            address=self.address,
            port=port,
            tls="mutual" if mtls else ("on" if self._tls else "off"),
        )
        if self._tls is None:
            log.warning("adapter.plaintext", note="serving without TLS: for development only")
        if self._memory_store and isinstance(self._adapter, Provider):
            log.warning("idempotency.in_memory", note="unbind answers are lost on restart")

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop gracefully: health NOT_SERVING, then in-flight calls get ``grace`` s.

        Safe to call more than once, and from several tasks.
        """
        self._shutdown_requested.set()
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.ensure_future(
                self._stop(self._grace if grace is None else grace)
            )
        await asyncio.shield(self._shutdown_task)

    async def _stop(self, grace: float) -> None:
        if self._server is None:
            return
        log.info("adapter.stopping", grace=grace)
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        if self._core is not None:
            # Work the gRPC server no longer waits for (its caller left) is
            # recorded before the process may end.
            await self._core.drain(max(grace, _DRAIN_MIN_S))
        log.info("adapter.stopped")

    async def run(self, *, handle_signals: bool = False) -> None:
        """Serve until :meth:`shutdown` (or cancellation), starting first if needed.

        Args:
            handle_signals: shut down gracefully on SIGTERM and SIGINT (only
                from the main thread).
        """
        if self._server is None:
            await self.start()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self._shutdown_requested.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self.shutdown()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("adapter.signal", signal=sig.name)
        self._shutdown_requested.set()

    async def _enter(self) -> None:
        await self.start()

    async def _exit(self) -> None:
        await self.shutdown()


def run_until_signal(
    adapter: Adapter,
    *,
    log_json: bool,
    log_level: str,
    **options: Any,
) -> None:
    """Configure logging, then serve ``adapter`` until SIGTERM or SIGINT."""
    configure_logging(json=log_json, level=log_level)
    if not isinstance(adapter, Provider | Carrier):
        raise TypeError(f"expected a Provider or a Carrier, got {type(adapter).__name__}")
    server = Server(adapter, **options)
    asyncio.run(server.run(handle_signals=True))


def build_parser(adapter: Provider | Carrier, prog: str | None = None) -> argparse.ArgumentParser:
    """The command line of an adapter program (``--port``, ``--gateway-jwks``, ...)."""
    role = "provider" if isinstance(adapter, Provider) else "carrier"
    parser = argparse.ArgumentParser(
        prog=prog, description=f"Serve the onecert {role} adapter {adapter.id!r}."
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port on every interface (default {DEFAULT_PORT})",
    )
    where.add_argument("--listen", metavar="HOST:PORT", help="address to listen on instead")
    parser.add_argument(
        "--gateway-jwks", metavar="PATH", required=True, help="the gateway's public JWKS"
    )
    parser.add_argument(
        "--gateway-issuer", default="onecert-gateway", help="the gateway id warrants name"
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="server certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="server private key")
    parser.add_argument(
        "--client-ca", metavar="PEM", help="require client certificates signed by this CA"
    )
    parser.add_argument(
        "--gateway-identity",
        metavar="NAME",
        help="answer only a client certificate with this CN or SAN (the gateway's; "
        "needs --client-ca)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="serve without TLS (development only)"
    )
    if role == "provider":
        parser.add_argument(
            "--idempotency-db",
            metavar="PATH",
            help="SQLite file remembering unbind answers (default: memory, lost on restart)",
        )
    parser.add_argument("--grace", type=float, default=5.0, help="seconds to drain on shutdown")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser


def main(adapter: Adapter, argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve ``adapter``; exit 2 on a configuration error."""
    if not isinstance(adapter, Provider | Carrier):
        raise TypeError(f"expected a Provider or a Carrier, got {type(adapter).__name__}")
    parser = build_parser(adapter)
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        parser.error("--client-ca needs --tls-cert and --tls-key")
    if args.gateway_identity and not args.client_ca:
        parser.error("--gateway-identity needs --client-ca (mutual TLS)")
    tls = ServerTLS(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    try:
        run_until_signal(
            adapter,
            log_json=args.log_json,
            log_level=args.log_level,
            gateway_keys=args.gateway_jwks,
            listen=args.listen or args.port,
            gateway_issuer=args.gateway_issuer,
            tls=tls,
            insecure=args.insecure,
            idempotency=getattr(args, "idempotency_db", None),
            grace=args.grace,
            gateway_identity=args.gateway_identity,
        )
    except (ServerConfigError, KeyConfigError, TLSConfigError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
