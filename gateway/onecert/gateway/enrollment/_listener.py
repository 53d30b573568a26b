"""The join listener: the ``Enrollment`` service on a port of its own, server TLS only.

A provider that has not joined has no certificate, so it cannot pass the
gateway's mutual TLS listener; like ACME over HTTPS, it joins over plain
server TLS (the gateway's own certificate), with the enrollment token as its
only credential. Since anyone can reach this port, it is bounded: messages
are small (a CSR and a token), calls at once are capped
(``enrollment.max_concurrent_joins``), join attempts across the listener are
rate limited (``enrollment.joins_per_s``, ``join_burst``; RESOURCE_EXHAUSTED
with ``retry-after-ms`` beyond). It serves nothing but ``Join`` and health.
"""

from __future__ import annotations

import time
from typing import Any, Final

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from onecert.gateway._audit import Auditor
from onecert.gateway._boundary import answer_refusal
from onecert.gateway._config import EnrollmentConfig
from onecert.gateway._listen import bind_port
from onecert.gateway._lookup import new_query_id
from onecert.gateway._recycled import RETRY_AFTER_HEADER
from onecert.gateway._refusal import Refusal
from onecert.gateway.enrollment._service import EnrollmentService
from onecert.v1 import enrollment_pb2, enrollment_pb2_grpc

__all__ = ["ENROLLMENT_SERVICE", "JoinListener"]

_log = structlog.get_logger("onecert.gateway.enrollment")

ENROLLMENT_SERVICE: Final = enrollment_pb2.DESCRIPTOR.services_by_name["Enrollment"].full_name
# A join carries a token and a CSR (under 16 KiB); the answer a certificate and a CA bundle.
_MAX_RECEIVE_BYTES: Final = 32 * 1024
_MAX_SEND_BYTES: Final = 256 * 1024


class _JoinRate:
    """One token bucket for the whole listener: ``burst`` joins, refilled at ``rate`` per
    second. Kept in this process, on purpose: joins come unauthenticated, and a shared
    bucket would cost a database write per attempt."""

    def __init__(self, *, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()

    def take(self) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there is."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


class _EnrollmentServicer(enrollment_pb2_grpc.EnrollmentServicer):
    """``Enrollment.Join``: rate limit, deadline, then the service; refusals answered here."""

    def __init__(
        self, service: EnrollmentService, rate: _JoinRate, auditor: Auditor | None
    ) -> None:
        self._service = service
        self._rate = rate
        self._auditor = auditor

    async def Join(  # noqa: N802 - the gRPC method name
        self, request: enrollment_pb2.JoinRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> enrollment_pb2.JoinResponse:
        structlog.contextvars.bind_contextvars(query_id=new_query_id(), rpc="Join")
        try:
            self._take_token()
            response = await self._service.join(request)
        except Refusal as refusal:
            await answer_refusal(context, refusal, self._auditor)
        _log.info("join.answered")
        return response

    def _take_token(self) -> None:
        wait = self._rate.take()
        if wait > 0:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many joins at this gateway right now; try again shortly",
                reason="join_rate",
                trailing_metadata=((RETRY_AFTER_HEADER, str(max(1, round(wait * 1000)))),),
            )


class JoinListener:
    """The ``Enrollment`` service's own gRPC server.

    Args:
        service: what joins.
        config: ``[enrollment]`` (listen address and bounds).
        credentials: the gateway's server TLS (no client certificates);
            None: plaintext, for development mode only.
        reuse_port: share the port (``gateway.reuse_port``).
        auditor: where refused joins that carry an audit row are recorded.
    """

    def __init__(
        self,
        service: EnrollmentService,
        config: EnrollmentConfig,
        *,
        credentials: grpc.ServerCredentials | None,
        reuse_port: bool = False,
        auditor: Auditor | None = None,
    ) -> None:
        self._auditor = auditor
        self._service = service
        self._config = config
        self._credentials = credentials
        self._reuse_port = reuse_port
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self.port = 0

    async def start(self) -> None:
        """Bind ``enrollment.listen`` and serve."""
        config = self._config
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", _MAX_RECEIVE_BYTES),
                ("grpc.max_send_message_length", _MAX_SEND_BYTES),
                ("grpc.max_metadata_size", 8 * 1024),
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
            ],
            maximum_concurrent_rpcs=config.max_concurrent_joins,
        )
        rate = _JoinRate(rate=config.joins_per_s, burst=config.join_burst)
        enrollment_pb2_grpc.add_EnrollmentServicer_to_server(
            _EnrollmentServicer(self._service, rate, self._auditor), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.port = bind_port(
            server, config.listen, credentials=self._credentials, reuse_port=self._reuse_port
        )
        await server.start()
        self._server = server
        for name in ("", ENROLLMENT_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        _log.info(
            "enrollment.listening",
            address=config.listen,
            port=self.port,
            tls=self._credentials is not None,
        )

    async def stop(self) -> None:
        """Stop taking joins; joins in progress get a second to finish."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(1.0)
        self._server = None
