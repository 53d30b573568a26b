"""``Gateway.CheckRecycled``: was this number recycled after a date? For providers at login.

RECYCLED / NOT_RECYCLED / NO_DATA as in the CAMARA Number Recycling API and
the FCC Reassigned Numbers Database (see
:func:`onecert.gateway.store.classify_recycled`). Each provider has one token
bucket shared by every replica (``store.rates``): past it, RESOURCE_EXHAUSTED
with trailing metadata ``retry-after-ms``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import timedelta

import grpc
import structlog

from onecert.gateway._audit import Auditor
from onecert.gateway._channels import ChannelPool
from onecert.gateway._compliance import ComplianceService
from onecert.gateway._config import CheckRecycledConfig, GatewayConfig
from onecert.gateway._directory import ProviderDirectory
from onecert.gateway._notice_delivery import NoticePusher
from onecert.gateway._notices import Clock, Doorbell, NoticeService, time_arg, utc_now
from onecert.gateway._principals import Principal
from onecert.gateway._refusal import Refusal, invalid, store_call
from onecert.gateway.store import RecycledStatus, Store
from onecert.sdk._convert import timestamp
from onecert.sdk._keys import SigningKey
from onecert.sdk._msisdn import InvalidMsisdnError, mask_msisdn, sha256_hex, validate_msisdn
from onecert.sdk._set import SetIssuer
from onecert.v1 import gateway_pb2

__all__ = ["RETRY_AFTER_HEADER", "RecycledCheckService", "RecycledNumbers"]

RETRY_AFTER_HEADER = "retry-after-ms"

_log = structlog.get_logger("onecert.gateway.recycled")

# How often a replica deletes the buckets that are full again.
_PURGE_EVERY_S = 60.0

_STATUS = {
    RecycledStatus.RECYCLED: gateway_pb2.RECYCLED_STATUS_RECYCLED,
    RecycledStatus.NOT_RECYCLED: gateway_pb2.RECYCLED_STATUS_NOT_RECYCLED,
    RecycledStatus.NO_DATA: gateway_pb2.RECYCLED_STATUS_NO_DATA,
}


class RecycledCheckService:
    """``CheckRecycled`` for authenticated providers, without the server.

    Args:
        store: the numbers' history.
        config: the rate limit and ``history_start``.
        clock_skew_s: how far in the future ``specified_date`` may be.
        auditor: where audit rows go.
        clock: the gateway's notion of now.
    """

    def __init__(
        self,
        *,
        store: Store,
        config: CheckRecycledConfig,
        auditor: Auditor,
        clock_skew_s: float = 60.0,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._config = config
        self._auditor = auditor
        self._skew = timedelta(seconds=clock_skew_s)
        self._clock = clock
        self._next_purge = 0.0

    async def _take(self, provider_id: str) -> float:
        # Wall time: the bucket is shared with replicas on other hosts.
        now = time.time()
        if now >= self._next_purge:
            self._next_purge = now + _PURGE_EVERY_S
            await self._store.rates.purge(now=now)
        config = self._config
        return await self._store.rates.take(
            f"check_recycled:{provider_id}", rate=config.rate_per_s, burst=config.burst, now=now
        )

    async def check_recycled(
        self, request: gateway_pb2.CheckRecycledRequest, caller: Principal
    ) -> gateway_pb2.CheckRecycledResponse:
        """Whether the number was recycled after ``specified_date``, for provider ``caller``."""
        wait = await store_call(self._take(caller.id), "check_recycled.rate")
        if wait > 0:
            retry_ms = max(1, math.ceil(wait * 1000))
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"CheckRecycled rate limit for provider {caller.id!r} reached; "
                f"try again in {retry_ms} ms",
                reason="rate_limited",
                trailing_metadata=((RETRY_AFTER_HEADER, str(retry_ms)),),
            )
        try:
            msisdn = validate_msisdn(request.msisdn)
        except InvalidMsisdnError as exc:
            raise invalid(str(exc)) from None
        specified = time_arg(request, "specified_date")
        if specified > self._clock() + self._skew:
            raise invalid("specified_date is in the future")
        structlog.contextvars.bind_contextvars(msisdn=mask_msisdn(msisdn))
        answer = await store_call(
            self._store.notices.check_recycled(
                sha256_hex(msisdn), specified, history_start=self._config.history_start
            ),
            "check_recycled",
        )
        _log.info("recycled.checked", status=answer.status.value)
        self._auditor.spawn(
            "recycled.checked",
            actor=caller.actor,
            subject=self._auditor.number(msisdn),
            detail={"status": answer.status.value},
        )
        response = gateway_pb2.CheckRecycledResponse(status=_STATUS[answer.status])
        if answer.recycled_at is not None:
            response.recycled_at.CopyFrom(timestamp(answer.recycled_at))
        return response


@dataclass(frozen=True)
class RecycledNumbers:
    """Everything about recycled numbers, built from one configuration.

    ``notices`` serves ReportNumberEvent, PollEvents and ConfirmEventAction;
    ``checks`` CheckRecycled; ``compliance`` GetComplianceReport; ``pusher``
    is the background worker pushing notices (the gateway starts and stops it).
    """

    notices: NoticeService
    checks: RecycledCheckService
    compliance: ComplianceService
    pusher: NoticePusher

    @classmethod
    def build(
        cls,
        config: GatewayConfig,
        *,
        store: Store,
        auditor: Auditor,
        channels: ChannelPool,
        providers: ProviderDirectory,
        clock: Clock | None = None,
    ) -> RecycledNumbers:
        """Wire the services for ``config`` and the live ``providers`` (reads the
        gateway's signing key)."""
        clock = clock or utc_now
        sets = SetIssuer(key=SigningKey.load(config.keys.warrant_key), issuer=config.id)
        doorbell = Doorbell()
        notices = NoticeService(
            store=store,
            carriers=config.carriers,
            providers=providers,
            config=config.notices,
            sets=sets,
            auditor=auditor,
            doorbell=doorbell,
            clock=clock,
            history_start=config.check_recycled.history_start,
        )
        pusher = NoticePusher(
            store=store,
            providers=providers,
            sets=sets,
            channels=channels,
            config=config.notices,
            doorbell=doorbell,
            auditor=auditor,
            clock=clock,
        )
        # The replica that records a notice pushes the copies it made due itself.
        notices.pusher = pusher
        return cls(
            notices=notices,
            checks=RecycledCheckService(
                store=store,
                config=config.check_recycled,
                auditor=auditor,
                clock_skew_s=config.notices.clock_skew_s,
                clock=clock,
            ),
            compliance=ComplianceService(
                store=store,
                providers=config.providers,
                auditor=auditor,
                clock=clock,
            ),
            pusher=pusher,
        )
