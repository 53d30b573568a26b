"""The push worker: delivers recycled-number notices to ``BindingProvider.ReceiveEvent``.

Workers lease due push deliveries from the store (several gateway processes
can share the work: a delivery is leased by one worker at a time), sign a
SET per delivery and push it. An acknowledgement settles the delivery (and,
with ``acted``, records the action); a transient failure is retried with
exponential backoff and jitter; a permanent one (the provider refuses the
SET, or does not implement ``ReceiveEvent``) and the notice's deadline end
it as FAILED, which the compliance report counts as never acted on.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import grpc
import structlog

from onecert.gateway._audit import Auditor
from onecert.gateway._channels import ChannelPool
from onecert.gateway._config import NoticesConfig, ProviderConfig
from onecert.gateway._delivery import RETRYABLE
from onecert.gateway._directory import by_id, status_of
from onecert.gateway._notices import Clock, Doorbell, build_set, utc_now
from onecert.gateway._observers import NO_OBSERVER, Observer
from onecert.gateway.store import AuditDraft, Delivery, Store
from onecert.gateway.store._registry_types import RegistryStatus
from onecert.sdk._set import SetIssuer
from onecert.v1 import provider_pb2, provider_pb2_grpc

__all__ = ["NoticePusher"]

_log = structlog.get_logger("onecert.gateway.notice_delivery")

# After an unexpected failure of the loop itself (database down), pause
# before trying again rather than spin.
_LOOP_ERROR_PAUSE_S = 1.0


class NoticePusher:
    """Push delivery of notices, as background workers of the gateway.

    Args:
        store: the durable state.
        providers: the active providers by id (the gateway's live
            :class:`~onecert.gateway._directory.ProviderDirectory`, read at
            each push).
        sets: signs the SETs.
        channels: one reused channel per provider.
        config: workers, batch, lease, backoff, call deadline.
        doorbell: rung when a notice is recorded, so idle workers start at once.
        auditor: records deliveries given up (optional).
        clock: the gateway's notion of now (deadlines, backoff, leases).
        jitter: a source of floats in [0, 1) for the backoff.
        worker_id: the lease owner's name; unique per process by default.
        observer: told how every push ended (metrics); the attribute may be
            replaced before :meth:`start`.
    """

    def __init__(
        self,
        *,
        store: Store,
        providers: Mapping[str, ProviderConfig] | Sequence[ProviderConfig],
        sets: SetIssuer,
        channels: ChannelPool,
        config: NoticesConfig,
        doorbell: Doorbell | None = None,
        auditor: Auditor | None = None,
        clock: Clock = utc_now,
        jitter: Callable[[], float] = random.random,
        worker_id: str | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._store = store
        self.observer = observer
        self._providers = by_id(providers)
        self._sets = sets
        self._channels = channels
        self._config = config
        self._doorbell = doorbell or Doorbell()
        self._auditor = auditor
        self._clock = clock
        self._jitter = jitter
        self.worker_id = worker_id or (
            f"notices:{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start ``config.workers`` worker loops."""
        if self._tasks:
            raise RuntimeError("the notice pusher is already started")
        self._tasks = [
            asyncio.create_task(self._loop(), name=f"notice-push-{i}")
            for i in range(self._config.workers)
        ]
        if self._tasks:
            _log.info("notice_pusher.started", workers=len(self._tasks), worker_id=self.worker_id)

    async def stop(self) -> None:
        """Stop the loops. A push cut short is pushed again once its lease
        ends (providers recognise the ``jti``)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                claimed = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - the loop outlives a database outage
                _log.error("notice_pusher.failed", error=type(exc).__name__, detail=str(exc))
                await asyncio.sleep(_LOOP_ERROR_PAUSE_S)
                continue
            if claimed < self._config.batch:
                await self._doorbell.wait(self._config.check_interval_s)

    async def run_once(self) -> int:
        """Claim one batch of due pushes and deliver it; how many were claimed."""
        claimed = await self._store.deliveries.claim_due(
            worker_id=self.worker_id,
            limit=self._config.batch,
            lease_s=self._config.lease_s,
            now=self._clock(),
        )
        results = await asyncio.gather(*(self._push(d) for d in claimed), return_exceptions=True)
        for delivery, result in zip(claimed, results, strict=True):
            if isinstance(result, Exception):
                # Its lease runs out and another attempt follows.
                _log.error(
                    "notice.push_crashed",
                    jti=delivery.jti,
                    error=type(result).__name__,
                    detail=str(result),
                )
            elif isinstance(result, BaseException):
                raise result
        return len(claimed)

    async def _push(self, delivery: Delivery) -> None:
        log = _log.bind(
            jti=delivery.jti, notice_id=delivery.notice_id, provider=delivery.provider_id
        )
        provider = self._providers.get(delivery.provider_id)
        if provider is None or provider.address is None:
            status = status_of(self._providers, delivery.provider_id)
            if status in (RegistryStatus.SUSPENDED, RegistryStatus.PENDING):
                # Not called while suspended; pushed if it is resumed in time.
                await self._retry(delivery, f"the provider is {status.value}", log)
            else:
                await self._give_up(delivery, "the provider is no longer in the registry", log)
            return
        if self._clock() > delivery.notice.deadline:
            last = f"; last error: {delivery.last_error}" if delivery.last_error else ""
            await self._give_up(delivery, f"not acknowledged before the deadline{last}", log)
            return
        try:
            channel = self._channels.get(
                provider.address, plaintext=provider.plaintext, server_name=provider.server_name
            )
            stub = provider_pb2_grpc.BindingProviderStub(channel)
            response = await stub.ReceiveEvent(
                provider_pb2.ReceiveEventRequest(set=build_set(self._sets, delivery)),
                timeout=self._config.push_deadline_s,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            error = f"{code.name}: {exc.details() or ''}".rstrip(": ")
            # The statuses after which an unbind is tried again: the same push may
            # well succeed later.
            if code in RETRYABLE:
                await self._retry(delivery, error, log)
            else:
                await self._give_up(delivery, error, log)
            return
        except Exception as exc:  # noqa: BLE001 - any local failure is retried
            await self._retry(delivery, f"{type(exc).__name__}: {exc}", log)
            return
        if not response.acknowledged:
            await self._retry(delivery, "the provider answered without acknowledging", log)
            return
        removed = response.bindings_removed if response.acted else None
        audit = None
        if removed is not None and self._auditor is not None:
            # The same row a polling provider's ConfirmEventAction writes,
            # committed with the acknowledgement: both or neither.
            audit = AuditDraft(
                kind="notice.confirmed",
                actor=f"provider:{delivery.provider_id}",
                subject=f"jti:{delivery.jti}",
                detail={"bindings_removed": removed, "recorded": True, "via": "push"},
            )
        await self._store.deliveries.mark_delivered(
            delivery.jti, acknowledged_at=self._clock(), bindings_removed=removed, audit=audit
        )
        self.observer.notice_pushed("acknowledged")
        log.info("notice.pushed", attempts=delivery.attempts, acted=response.acted)

    def backoff(self, attempts: int) -> timedelta:
        """The pause after the ``attempts``-th failed push: exponential, with jitter.

        Between half and all of ``backoff_initial_s * 2**(attempts-1)``,
        capped at ``backoff_max_s``: spread out, yet never a tight loop.
        """
        cap = self._config.backoff_max_s
        base = min(cap, self._config.backoff_initial_s * 2 ** min(max(attempts - 1, 0), 32))
        return timedelta(seconds=base * (0.5 + self._jitter() / 2))

    async def _retry(self, delivery: Delivery, error: str, log: structlog.BoundLogger) -> None:
        now = self._clock()
        deadline = delivery.notice.deadline
        if now >= deadline:
            await self._give_up(delivery, f"not acknowledged before the deadline; {error}", log)
            return
        # One last attempt at the deadline itself, not beyond it.
        next_at: datetime = min(now + self.backoff(delivery.attempts), deadline)
        await self._store.deliveries.mark_failed(
            delivery.jti, worker_id=self.worker_id, error=error, next_attempt_at=next_at
        )
        self.observer.notice_pushed("retry")
        log.info("notice.push_failed", error=error, attempts=delivery.attempts, retry_at=next_at)

    async def _give_up(self, delivery: Delivery, error: str, log: structlog.BoundLogger) -> None:
        audit = None
        if self._auditor is not None:
            # Committed with the give-up: a crash keeps both or neither.
            audit = AuditDraft(
                kind="notice.undelivered",
                actor="gateway",
                subject=f"provider:{delivery.provider_id}",
                detail={
                    "jti": delivery.jti,
                    "notice_id": delivery.notice_id,
                    "attempts": delivery.attempts,
                },
            )
        await self._store.deliveries.mark_failed(
            delivery.jti, worker_id=self.worker_id, error=error, next_attempt_at=None, audit=audit
        )
        self.observer.notice_pushed("failed")
        log.warning("notice.undelivered", error=error, attempts=delivery.attempts)
