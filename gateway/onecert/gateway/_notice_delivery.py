"""The push worker: delivers recycled-number notices to providers, in batches, by cursor.

Workers lease providers' cursors in the notice log from the store (several
gateway processes share the work: a provider is leased by one worker at a
time, so no notice reaches it twice except after a crash), sign a SET per
notice and push up to ``batch`` of them in one ``BindingProvider.ReceiveEvents``
call, answered per notice. A provider that does not implement it
(UNIMPLEMENTED) gets them one at a time with ``ReceiveEvent``. An
acknowledgement settles a notice (and, with ``acted``, records the action);
a refusal ends it as FAILED, received; a transient failure backs the
provider off with exponential backoff and jitter; the notice's deadline
ends it as FAILED, never received, which the compliance report counts
apart from notices received and ignored.

A worker does not wait for the pushes it started: it leases more providers
while they run (up to ``in_flight`` pushes per process), and each finished
push is recorded in a group commit (:class:`GroupCommit`): the results of
every push that finished while the previous transaction was written (many
providers' notices and cursors) go into the next one.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
import structlog

from onecert.gateway._audit import Auditor
from onecert.gateway._breaker import backoff
from onecert.gateway._channels import ChannelPool
from onecert.gateway._config import NoticesConfig, ProviderConfig
from onecert.gateway._delivery import RETRYABLE
from onecert.gateway._directory import by_id, status_of
from onecert.gateway._notices import Clock, Doorbell, build_set, utc_now
from onecert.gateway._observers import NO_OBSERVER, Observer
from onecert.gateway.store import (
    AuditDraft,
    Delivery,
    DeliveryState,
    Handoff,
    NoticeCursor,
    PushResult,
    Settlement,
    Store,
)
from onecert.gateway.store._registry_types import RegistryStatus
from onecert.sdk._set import SetIssuer
from onecert.v1 import provider_pb2, provider_pb2_grpc

__all__ = ["GroupCommit", "NoticePusher"]

_log = structlog.get_logger("onecert.gateway.notice_delivery")

if TYPE_CHECKING:
    # Only in the generated stubs' type hints (mypy-protobuf), not at run time.
    _Stub = provider_pb2_grpc.BindingProviderAsyncStub

# After an unexpected failure of the loop itself (database down), pause
# before trying again rather than spin.
_LOOP_ERROR_PAUSE_S = 1.0


# At most this many providers, and about this many notices (at least one
# provider's), in one group commit: a group holds its providers' cursors (and
# the audit chain, for actions reported) until it commits, and a notice being
# routed to one of them waits for it.
_GROUP_MAX = 250
_GROUP_NOTICES = 250
# While other pushes run, a group waits to be full (either limit above) at
# most this long after its first result (see GroupCommit).
_GATHER_S = 0.05


class GroupCommit:
    """Results recorded in group commits: whatever finished while the previous
    transaction was being written goes into the next one, so a thousand
    providers answering at once cost a few transactions, not a thousand.

    While other pushes are still running, a group waits until it is full
    (:data:`_GROUP_MAX` providers or :data:`_GROUP_NOTICES` notices) or
    :data:`_GATHER_S` has passed since its first result: each transaction
    has a fixed cost (its statements, the audit chain's head, the commit's
    sync to disk), and answers that trickle in while the worker is still
    sending would otherwise be written a few at a time. Once no push is
    running the group is written at once, so the last answers wait for no
    window.

    Args:
        record: writes one group (one transaction).
        running: how many pushes may still add a result (0: none).
    """

    def __init__(
        self,
        record: Callable[[Sequence[Settlement]], Awaitable[None]],
        running: Callable[[], int] = lambda: 0,
    ) -> None:
        self._record = record
        self._running = running
        self._waiting: list[Settlement] = []
        self._notices = 0  # in self._waiting
        self._ready = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False

    def put(self, settlement: Settlement) -> None:
        """Queue one provider's result for the next group."""
        self._waiting.append(settlement)
        self._notices += len(settlement.results)
        full = len(self._waiting) >= _GROUP_MAX or self._notices >= _GROUP_NOTICES
        if full or not self._running():
            self._ready.set()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(_GATHER_S, self._ready.set)

    async def run(self) -> None:
        """Record the groups, one after the other, until :meth:`close` and nothing waits."""
        while True:
            await self._ready.wait()
            await self.flush()
            if self._closing and not self._waiting:
                return

    def close(self) -> None:
        """Let :meth:`run` end once what is waiting is recorded."""
        self._closing = True
        self._ready.set()

    async def flush(self) -> None:
        """Record what is waiting now (within the group's limits; the rest next time)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        size, notices = 0, 0
        for size, settlement in enumerate(self._waiting[:_GROUP_MAX], 1):  # noqa: B007 - size after the loop
            notices += len(settlement.results)
            if notices >= _GROUP_NOTICES:
                break
        group, self._waiting = self._waiting[:size], self._waiting[size:]
        self._notices -= notices
        if not self._waiting:
            self._ready.clear()
        if group:
            await self._record(group)


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
        # Providers that answered ReceiveEvents with UNIMPLEMENTED (this process).
        self._one_at_a_time: set[str] = set()
        self._stubs: dict[str, tuple[grpc.aio.Channel, _Stub]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Pushes started and not yet settled (or given up), and their tasks.
        self._in_flight = 0
        self._delivering = 0
        self._pushes: set[asyncio.Task[None]] = set()
        # Rung when places in flight free up, and when a settled provider has
        # more notices to push at once (idle workers look for them only then).
        self._settled = Doorbell()
        self._more = Doorbell()
        self._commits = GroupCommit(self._commit, self._running)

    async def start(self) -> None:
        """Start ``config.workers`` worker loops (and the one that records their results)."""
        if self._tasks:
            raise RuntimeError("the notice pusher is already started")
        if not self._config.workers:
            return
        self._tasks = [asyncio.create_task(self._commits.run(), name="notice-settle")]
        self._tasks += [
            asyncio.create_task(self._dispatch(), name=f"notice-push-{i}")
            for i in range(self._config.workers)
        ]
        _log.info("notice_pusher.started", workers=self._config.workers, worker_id=self.worker_id)

    async def stop(self) -> None:
        """Stop the loops and the pushes in flight; record the results already in.

        A batch cut short is pushed again once its cursor's lease ends
        (providers recognise each ``jti``)."""
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        pushes = list(self._pushes)
        for task in (*tasks[1:], *pushes):
            task.cancel()
        await asyncio.gather(*tasks[1:], *pushes, return_exceptions=True)
        self._commits.close()
        await asyncio.gather(tasks[0], return_exceptions=True)
        # Ready to start again: nothing in flight (the pushes cut short hold leases).
        self._commits = GroupCommit(self._commit, self._running)
        self._in_flight = self._delivering = 0

    async def _dispatch(self) -> None:
        """One worker: lease due providers, start a push to each, and go on leasing
        while they run (up to ``in_flight`` pushes of this process at once)."""
        while True:
            room = min(self._config.batch, self._config.in_flight - self._in_flight)
            if room <= 0:
                await self._settled.wait(self._config.check_interval_s)
                continue
            # What rang before the claim: a ring while it claims is not missed.
            seen = (self._doorbell.rings, self._more.rings)
            self._in_flight += room  # reserved, so that two workers never overshoot
            started = 0
            try:
                started = await self._start_pushes(room)
            except Exception as exc:  # noqa: BLE001 - the loop outlives a database outage
                _log.error("notice_pusher.failed", error=type(exc).__name__, detail=str(exc))
                await asyncio.sleep(_LOOP_ERROR_PAUSE_S)
            finally:
                self._in_flight -= room - started
            if not started:
                await self._nap(*seen)

    def reserve(self, wanted: int) -> int:
        """Up to ``wanted`` places in flight for pushes the notice service hands over
        (0 while stopped); give them back with :meth:`adopt`."""
        if not self._tasks:
            return 0
        room = max(0, min(wanted, self._config.in_flight - self._in_flight))
        self._in_flight += room
        return room

    def adopt(self, reserved: int, handed: Sequence[Handoff]) -> None:
        """Push the copies a report leased to this worker (:meth:`reserve` gave
        ``reserved`` places; the rest are free again)."""
        self._in_flight -= reserved - len(handed)
        if reserved > len(handed):
            self._settled.ring()
        if not self._tasks:
            # Stopped meanwhile: the leases run out and any worker pushes them.
            self._in_flight -= len(handed)
            return
        for h in handed:
            self._spawn(h.cursor, [h.delivery])

    def _spawn(self, cursor: NoticeCursor, batch: list[Delivery]) -> None:
        self._delivering += 1
        task = asyncio.create_task(self._push_task(cursor, batch))
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def _start_pushes(self, limit: int) -> int:
        """Lease up to ``limit`` due providers and start one push task each; how many."""
        claimed = await self._store.cursors.claim_due(
            worker_id=self.worker_id,
            limit=limit,
            lease_s=self._config.lease_s,
            now=self._clock(),
        )
        if not claimed:
            return 0
        waiting = await self._store.cursors.pending_for(claimed, limit=self._config.batch)
        for cursor in claimed:
            self._spawn(cursor, waiting[cursor.provider_id])
        return len(claimed)

    async def _push_task(self, cursor: NoticeCursor, batch: list[Delivery]) -> None:
        try:
            settlement = await self._deliver(cursor, batch)
        except Exception as exc:  # noqa: BLE001 - its lease runs out and another attempt follows
            _log.error(
                "notice.push_crashed",
                provider=cursor.provider_id,
                error=type(exc).__name__,
                detail=str(exc),
            )
            self._in_flight -= 1
            self._settled.ring()
            return
        finally:
            self._delivering -= 1
        self._commits.put(settlement)

    def _running(self) -> int:
        """Pushes whose results are not in yet (the group commit waits for some)."""
        return self._delivering

    async def _commit(self, settled: Sequence[Settlement]) -> None:
        """Record a group of finished pushes (the group commit's step); their places
        in flight are free again, whatever happened."""
        try:
            if await self._record(settled):
                self._more.ring()
        except Exception as exc:  # noqa: BLE001 - their leases run out and they are pushed again
            _log.error(
                "notice.settle_failed",
                providers=len(settled),
                error=type(exc).__name__,
                detail=str(exc),
            )
        finally:
            self._in_flight -= len(settled)
            self._settled.ring()

    async def _nap(self, doorbell: int, more: int) -> None:
        """Until a notice is recorded here, a settled provider has more to push, or
        ``check_interval_s`` (notices recorded elsewhere, backoffs ending); at once
        if either rang since the doorbell had rung ``doorbell`` times and the other
        ``more`` times (while the worker claimed: it would otherwise sleep through
        a ring that came then, and a provider with more to push would wait a whole
        ``check_interval_s``)."""
        timeout = self._config.check_interval_s
        naps = {
            asyncio.ensure_future(self._doorbell.wait(timeout, since=doorbell)),
            asyncio.ensure_future(self._more.wait(timeout, since=more)),
        }
        try:
            await asyncio.wait(naps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for nap in naps:
                nap.cancel()

    async def run_once(self) -> int:
        """Lease the providers with notices due, push one batch to each, settle them all
        in one transaction; how many providers (the workers' step, done at once)."""
        claimed = await self._store.cursors.claim_due(
            worker_id=self.worker_id,
            limit=self._config.batch,
            lease_s=self._config.lease_s,
            now=self._clock(),
        )
        if not claimed:
            return 0
        waiting = await self._store.cursors.pending_for(claimed, limit=self._config.batch)
        outcomes = await asyncio.gather(
            *(self._deliver(c, waiting[c.provider_id]) for c in claimed), return_exceptions=True
        )
        settled: list[Settlement] = []
        for cursor, outcome in zip(claimed, outcomes, strict=True):
            if isinstance(outcome, Settlement):
                settled.append(outcome)
            elif isinstance(outcome, Exception):
                # Its lease runs out and another attempt follows.
                _log.error(
                    "notice.push_crashed",
                    provider=cursor.provider_id,
                    error=type(outcome).__name__,
                    detail=str(outcome),
                )
            else:
                raise outcome
        await self._record(settled)
        return len(claimed)

    async def _record(self, settled: Sequence[Settlement]) -> bool:
        """Settle finished pushes of many providers in one transaction, then tell;
        whether one of them has more to push now."""
        if not settled:
            return False
        audit = [row for s in settled for row in self._audit_rows(s.cursor.provider_id, s.results)]
        more = await self._store.cursors.settle_many(
            settled, worker_id=self.worker_id, now=self._clock(), audit=audit
        )
        counts = dict.fromkeys(_OUTCOMES.values(), 0)
        for s in settled:
            for result in s.results:
                counts[_OUTCOMES[result.state]] += 1
                self.observer.notice_pushed(_OUTCOMES[result.state])
            if s.retry_at is not None or any(r.state is DeliveryState.FAILED for r in s.results):
                _log.info(
                    "notice.pushed",
                    provider=s.cursor.provider_id,
                    notices=len(s.results),
                    acknowledged=sum(r.state is DeliveryState.ACKNOWLEDGED for r in s.results),
                    failed=sum(r.state is DeliveryState.FAILED for r in s.results),
                    retry_at=None if s.retry_at is None else s.retry_at.isoformat(),
                )
        _log.info("notice.settled", providers=len(settled), **counts)
        return more

    async def _deliver(self, cursor: NoticeCursor, batch: list[Delivery]) -> Settlement:
        """One batch of the provider's notices past its cursor, and how it went."""
        provider = self._providers.get(cursor.provider_id)
        if provider is not None and provider.address is None:
            provider = None  # poll-only: nowhere to push
        status = status_of(self._providers, cursor.provider_id)
        now = self._clock()
        last = f"; last error: {cursor.last_error}" if cursor.last_error else ""
        results: list[PushResult] = []
        live: list[Delivery] = []
        for delivery in batch:
            if now > delivery.notice.deadline:
                results.append(_given_up(delivery, f"not acknowledged before the deadline{last}"))
            elif provider is None and status in (RegistryStatus.SUSPENDED, RegistryStatus.PENDING):
                # Not called while suspended; pushed if it is resumed in time.
                results.append(_retry(delivery, f"the provider is {status.value}"))
                live.append(delivery)
            elif provider is None:
                results.append(_given_up(delivery, "the provider is no longer in the registry"))
            else:
                live.append(delivery)
        if live and provider is not None:
            results += await self._push(provider, live)
        retry = {r.jti: r for r in results if r.state is DeliveryState.PENDING}
        if not retry:
            return Settlement(cursor, results)
        # One last attempt at the earliest deadline itself, not beyond it.
        deadline = min(d.notice.deadline for d in live if d.jti in retry)
        retry_at = min(now + self.backoff(cursor.attempts), deadline)
        return Settlement(cursor, results, retry_at, next(iter(retry.values())).error)

    async def _push(self, provider: ProviderConfig, batch: list[Delivery]) -> list[PushResult]:
        """Push ``batch`` in one ReceiveEvents call, or one at a time to a provider without it."""
        assert provider.address is not None  # _deliver pushes to providers with one
        channel = self._channels.get(
            provider.address, plaintext=provider.plaintext, server_name=provider.server_name
        )
        stub = self._stub(provider.id, channel)
        timeout = self._config.push_deadline_s
        if provider.id not in self._one_at_a_time:
            request, batch = _packed(self._sets, batch)
            try:
                response = await stub.ReceiveEvents(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNIMPLEMENTED:
                    return [_failed_call(d, exc.code(), exc.details()) for d in batch]
                self._one_at_a_time.add(provider.id)
            except Exception as exc:  # noqa: BLE001 - any local failure is retried
                return [_retry(d, f"{type(exc).__name__}: {exc}") for d in batch]
            else:
                if len(response.results) != len(batch):
                    error = f"{len(response.results)} results for {len(batch)} notices"
                    return [_retry(d, error) for d in batch]
                return [_result(d, r) for d, r in zip(batch, response.results, strict=True)]
        return list(await asyncio.gather(*(self._push_one(stub, d) for d in batch)))

    def _stub(self, provider_id: str, channel: grpc.aio.Channel) -> _Stub:
        """The provider's stub, made once per channel (a stub builds a callable per
        method of the service: more than a push's own bookkeeping)."""
        known = self._stubs.get(provider_id)
        if known is None or known[0] is not channel:
            known = (channel, provider_pb2_grpc.BindingProviderStub(channel))
            self._stubs[provider_id] = known
        return known[1]

    async def _push_one(
        self, stub: provider_pb2_grpc.BindingProviderAsyncStub, delivery: Delivery
    ) -> PushResult:
        try:
            response = await stub.ReceiveEvent(
                provider_pb2.ReceiveEventRequest(set=build_set(self._sets, delivery)),
                timeout=self._config.push_deadline_s,
            )
        except grpc.aio.AioRpcError as exc:
            return _failed_call(delivery, exc.code(), exc.details())
        except Exception as exc:  # noqa: BLE001 - any local failure is retried
            return _retry(delivery, f"{type(exc).__name__}: {exc}")
        return _answered(delivery, response)

    def _audit_rows(self, provider_id: str, results: Sequence[PushResult]) -> list[AuditDraft]:
        """The rows a batch adds: actions reported with the acknowledgement, and give-ups."""
        if self._auditor is None:
            return []
        rows = []
        for r in results:
            if r.state is DeliveryState.ACKNOWLEDGED and r.bindings_removed is not None:
                # The same row a polling provider's ConfirmEventAction writes.
                rows.append(
                    AuditDraft(
                        kind="notice.confirmed",
                        actor=f"provider:{provider_id}",
                        subject=f"jti:{r.jti}",
                        detail={
                            "bindings_removed": r.bindings_removed,
                            "recorded": True,
                            "via": "push",
                        },
                    )
                )
            elif r.state is DeliveryState.FAILED:
                rows.append(
                    AuditDraft(
                        kind="notice.undelivered",
                        actor="gateway",
                        subject=f"provider:{provider_id}",
                        detail={"jti": r.jti, "received": r.received},
                    )
                )
        return rows

    def backoff(self, attempts: int) -> timedelta:
        """The pause after the ``attempts``-th failed push: exponential, with jitter.

        Between half and all of ``backoff_initial_s * 2**(attempts-1)``,
        capped at ``backoff_max_s``: spread out, yet never a tight loop.
        """
        seconds = backoff(
            attempts,
            initial=self._config.backoff_initial_s,
            maximum=self._config.backoff_max_s,
            least=0.5,
            rand=self._jitter,
        )
        return timedelta(seconds=seconds)


_OUTCOMES = {
    DeliveryState.ACKNOWLEDGED: "acknowledged",
    DeliveryState.PENDING: "retry",
    DeliveryState.FAILED: "failed",
}


def _retry(delivery: Delivery, error: str) -> PushResult:
    return PushResult.retry(delivery.jti, error)


def _given_up(delivery: Delivery, error: str) -> PushResult:
    return PushResult.given_up(delivery.jti, error)


def _failed_call(delivery: Delivery, code: grpc.StatusCode, details: str | None) -> PushResult:
    """A call (or one notice of a batch) ended with a status: retried, or refused."""
    error = f"{code.name}: {details or ''}".rstrip(": ")
    if code in RETRYABLE:
        return _retry(delivery, error)
    # Not to be sent again (INVALID_ARGUMENT, UNAUTHENTICATED, ...): the
    # provider was reached and refused this notice.
    return PushResult.refused(delivery.jti, error)


def _answered(delivery: Delivery, response: provider_pb2.ReceiveEventResponse) -> PushResult:
    if not response.acknowledged:
        return _retry(delivery, "the provider answered without acknowledging")
    removed = response.bindings_removed if response.acted else None
    return PushResult.acknowledged(delivery.jti, removed)


def _result(delivery: Delivery, result: provider_pb2.EventResult) -> PushResult:
    """One notice's answer in a ReceiveEvents batch."""
    if result.HasField("response"):
        return _answered(delivery, result.response)
    code = _STATUS_BY_NUMBER.get(result.error_code, grpc.StatusCode.UNKNOWN)
    if code is grpc.StatusCode.OK:
        code = grpc.StatusCode.UNKNOWN  # neither an answer nor an error: ask again
    return _failed_call(delivery, code, result.error_message[:1024])


_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# E-14: a provider accepts ReceiveEvents requests of up to 64 KiB (the SDK's
# limit); a batch is cut to fit, with room for the message's own framing.
MAX_BATCH_BYTES = 64 * 1024 - 1024


def _packed(
    sets: SetIssuer, batch: list[Delivery]
) -> tuple[provider_pb2.ReceiveEventsRequest, list[Delivery]]:
    """The request for as many of ``batch`` as fit in :data:`MAX_BATCH_BYTES` (at least
    one), and those notices; the rest wait for the next round."""
    request = provider_pb2.ReceiveEventsRequest()
    size = 0
    for count, delivery in enumerate(batch):
        token = build_set(sets, delivery)
        size += len(token) + 4  # the field's tag and length
        if count and size > MAX_BATCH_BYTES:
            return request, batch[:count]
        request.sets.append(token)
    return request, batch
