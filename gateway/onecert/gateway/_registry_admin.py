"""The regulator's registry RPCs: invite, list, show, suspend, resume, remove providers.

``InviteProvider``, ``ListProviders``, ``GetProvider``, ``SuspendProvider``,
``ResumeProvider`` and ``RemoveProvider`` (admins only, by the access
policy), without the server: each takes the request and the admin caller,
checks the request, changes ``store.registry`` (which writes the history
and audit rows in the same transaction) and applies the change on this
replica at once; the other replicas follow within their poll interval.
Refusals are raised as :class:`~onecert.gateway._refusal.Refusal` (rules
A-1 to A-8 of ``docs/contract.md``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Final, TypeVar

import grpc
import structlog

from onecert.gateway._config import CATEGORIES, RegistryConfig, category_name
from onecert.gateway._principals import Principal
from onecert.gateway._refusal import Refusal, invalid, store_call
from onecert.gateway.store import (
    AlreadyExistsError,
    EntryOrigin,
    NotFoundError,
    RegistryEntry,
    RegistryEvent,
    RegistryStatus,
    Store,
    TransitionError,
    check_entry_id,
)
from onecert.sdk._convert import timestamp
from onecert.v1 import common_pb2, gateway_pb2

__all__ = ["MAX_PAGE_SIZE", "STATUS_PB", "RegistryAdminService", "record_pb"]

_log = structlog.get_logger("onecert.gateway.registry")

_T = TypeVar("_T")

STATUS_PB: Final[Mapping[RegistryStatus, gateway_pb2.ProviderStatus.ValueType]] = {
    RegistryStatus.INVITED: gateway_pb2.PROVIDER_STATUS_INVITED,
    RegistryStatus.PENDING: gateway_pb2.PROVIDER_STATUS_PENDING,
    RegistryStatus.ACTIVE: gateway_pb2.PROVIDER_STATUS_ACTIVE,
    RegistryStatus.SUSPENDED: gateway_pb2.PROVIDER_STATUS_SUSPENDED,
    RegistryStatus.REMOVED: gateway_pb2.PROVIDER_STATUS_REMOVED,
}
_STATUS_OF_PB = {number: status for status, number in STATUS_PB.items()}
_ORIGIN_PB = {
    EntryOrigin.CONFIG: gateway_pb2.PROVIDER_ORIGIN_CONFIG,
    EntryOrigin.ENROLLED: gateway_pb2.PROVIDER_ORIGIN_ENROLLED,
}
_MAX_NAME = 200
# The largest page ListProviders answers (contract A-9).
MAX_PAGE_SIZE: Final = 1000
_MAX_REASON = 500


def record_pb(entry: RegistryEntry) -> gateway_pb2.ProviderRecord:
    """A registry entry as the admin RPCs answer it."""
    record = gateway_pb2.ProviderRecord(
        provider_id=entry.id,
        name=entry.name,
        category=CATEGORIES.get(entry.category or "", common_pb2.PROVIDER_CATEGORY_OTHER),
        status=STATUS_PB[entry.status],
        address=entry.address or "",
        delivery=entry.delivery.value,
        origin=_ORIGIN_PB[entry.origin],
        status_actor=entry.status_actor,
        status_reason=entry.status_reason or "",
        certificate_serial=entry.cert_serial or "",
    )
    for name, value in (
        ("invited_at", entry.invited_at),
        ("joined_at", entry.joined_at),
        ("activated_at", entry.activated_at),
        ("status_changed_at", entry.status_changed_at),
        ("certificate_not_after", entry.cert_not_after),
    ):
        if value is not None:
            getattr(record, name).CopyFrom(timestamp(value))
    if entry.gate_passed is not None:
        record.last_gate.passed = entry.gate_passed
        record.last_gate.failures.extend(entry.gate_failures)
        if entry.gate_at is not None:
            record.last_gate.at.CopyFrom(timestamp(entry.gate_at))
    return record


def _change_pb(event: RegistryEvent) -> gateway_pb2.RegistryChange:
    unspecified = gateway_pb2.PROVIDER_STATUS_UNSPECIFIED
    return gateway_pb2.RegistryChange(
        at=timestamp(event.at),
        actor=event.actor,
        action=event.action,
        from_status=unspecified if event.from_status is None else STATUS_PB[event.from_status],
        to_status=unspecified if event.to_status is None else STATUS_PB[event.to_status],
        detail=json.dumps(dict(event.detail), sort_keys=True, ensure_ascii=False),
    )


def _provider_id(value: str) -> str:
    try:
        return check_entry_id(value)
    except ValueError:
        raise invalid("provider_id must be 1 to 64 characters of [a-z0-9._-]") from None


def _page_token(last_id: str, status: int) -> str:
    """An opaque token for the page after ``last_id``, for this status filter only."""
    raw = json.dumps({"after": last_id, "status": status}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _page_after(token: str, status: int) -> str:
    """The id a page token continues after; INVALID_ARGUMENT unless this status gave it."""
    refused = invalid(
        "page_token is not one this list gave: pass next_page_token back unchanged, "
        "with the same status"
    )
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after, given = data["after"], data["status"]
        after = check_entry_id(after)
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise refused from None
    if given != status:
        raise refused
    return str(after)


def _reason(value: str) -> str:
    text = value.strip()
    if not text or len(text) > _MAX_REASON or not text.isprintable():
        raise invalid(f"reason is required: 1 to {_MAX_REASON} printable characters")
    return text


async def _changed(call: Awaitable[_T], what: str) -> _T:
    """Await a registry change; its refusals become the statuses of rules A-2 to A-5."""
    try:
        return await store_call(call, what)
    except NotFoundError as exc:
        raise Refusal(grpc.StatusCode.NOT_FOUND, str(exc), reason="unknown_provider") from None
    except TransitionError as exc:
        raise Refusal(
            grpc.StatusCode.FAILED_PRECONDITION, str(exc), reason="illegal_transition"
        ) from None
    except AlreadyExistsError as exc:
        raise Refusal(grpc.StatusCode.ALREADY_EXISTS, str(exc), reason="already_exists") from None
    except ValueError as exc:
        raise invalid(str(exc)) from None


class RegistryAdminService:
    """The registry's admin RPCs, without the server.

    Args:
        store: where the registry lives.
        config: ``[registry]`` (invitation lifetimes).
        reserved_cns: the certificate names of carriers, admins and the
            portal: no provider may be invited under one.
        refresh: applies the registry's newest version on this replica.
    """

    def __init__(
        self,
        *,
        store: Store,
        config: RegistryConfig,
        reserved_cns: Callable[[], frozenset[str]],
        refresh: Callable[[], Awaitable[object]],
    ) -> None:
        self._store = store
        self._config = config
        self._reserved_cns = reserved_cns
        self._refresh = refresh

    async def invite(
        self, request: gateway_pb2.InviteProviderRequest, caller: Principal
    ) -> gateway_pb2.InviteProviderResponse:
        """``InviteProvider``: a new one-time token (A-1, A-6)."""
        provider_id = _provider_id(request.provider_id)
        name = request.name.strip()
        if len(name) > _MAX_NAME or not name.isprintable():
            raise invalid(f"name must be at most {_MAX_NAME} printable characters")
        if request.category not in CATEGORIES.values():
            raise invalid(f"category is required: one of {', '.join(CATEGORIES)}")
        ttl = self._ttl(request)
        if provider_id in self._reserved_cns():
            raise Refusal(
                grpc.StatusCode.ALREADY_EXISTS,
                f"{provider_id!r} is the certificate name of a carrier, an admin, the portal "
                "or another provider: choose another provider id",
                reason="reserved_id",
            )
        invitation = await _changed(
            self._store.registry.invite(
                provider_id,
                name=name,
                category=category_name(request.category),
                ttl=ttl,
                actor=caller.actor,
            ),
            "registry.invite",
        )
        await self._applied()
        _log.info("registry.invited", provider=provider_id, expires_at=invitation.expires_at)
        return gateway_pb2.InviteProviderResponse(
            provider=record_pb(invitation.entry),
            enrollment_token=invitation.token,
            expires_at=timestamp(invitation.expires_at),
        )

    def _ttl(self, request: gateway_pb2.InviteProviderRequest) -> timedelta:
        config = self._config
        if not request.HasField("ttl"):
            return timedelta(seconds=config.invitation_ttl_s)
        ttl = request.ttl.ToTimedelta()
        if not timedelta(0) < ttl <= timedelta(seconds=config.max_invitation_ttl_s):
            raise invalid(
                f"ttl must be more than 0 and at most {config.max_invitation_ttl_s:g} s "
                "(registry.max_invitation_ttl_s)"
            )
        return ttl

    async def list_providers(
        self, request: gateway_pb2.ListProvidersRequest, caller: Principal
    ) -> gateway_pb2.ListProvidersResponse:
        """``ListProviders``: every provider, or those in one status (A-7)."""
        status = None
        if request.status != gateway_pb2.PROVIDER_STATUS_UNSPECIFIED:
            status = _STATUS_OF_PB.get(request.status)
            if status is None:
                raise invalid("status is not a ProviderStatus")
        if request.page_size < 0:
            raise invalid("page_size must not be negative")
        after = _page_after(request.page_token, request.status) if request.page_token else None
        if request.page_size == 0 and after is None:
            listed = self._store.registry.list(status=status)
            entries = await store_call(listed, "registry.list")
            return gateway_pb2.ListProvidersResponse(providers=[record_pb(e) for e in entries])
        size = min(request.page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        # One more than the page: whether another page follows.
        listed = self._store.registry.list(status=status, after=after, limit=size + 1)
        entries = list(await store_call(listed, "registry.list"))
        token = _page_token(entries[size - 1].id, request.status) if len(entries) > size else ""
        return gateway_pb2.ListProvidersResponse(
            providers=[record_pb(e) for e in entries[:size]], next_page_token=token
        )

    async def get_provider(
        self, request: gateway_pb2.GetProviderRequest, caller: Principal
    ) -> gateway_pb2.GetProviderResponse:
        """``GetProvider``: one provider and its history (A-2, A-7)."""
        provider_id = _provider_id(request.provider_id)
        entry = await store_call(self._store.registry.get(provider_id), "registry.get")
        if entry is None:
            raise Refusal(
                grpc.StatusCode.NOT_FOUND,
                f"no provider {provider_id!r} in the registry",
                reason="unknown_provider",
            )
        history = await store_call(self._store.registry.history(provider_id), "registry.history")
        return gateway_pb2.GetProviderResponse(
            provider=record_pb(entry), history=[_change_pb(e) for e in history]
        )

    async def suspend(
        self, request: gateway_pb2.SuspendProviderRequest, caller: Principal
    ) -> gateway_pb2.SuspendProviderResponse:
        """``SuspendProvider`` (A-3, A-8)."""
        entry = await self._set(
            request.provider_id, RegistryStatus.SUSPENDED, caller, _reason(request.reason)
        )
        return gateway_pb2.SuspendProviderResponse(provider=record_pb(entry))

    async def resume(
        self, request: gateway_pb2.ResumeProviderRequest, caller: Principal
    ) -> gateway_pb2.ResumeProviderResponse:
        """``ResumeProvider`` (A-3, A-8)."""
        entry = await self._set(request.provider_id, RegistryStatus.ACTIVE, caller, "")
        return gateway_pb2.ResumeProviderResponse(provider=record_pb(entry))

    async def remove(
        self, request: gateway_pb2.RemoveProviderRequest, caller: Principal
    ) -> gateway_pb2.RemoveProviderResponse:
        """``RemoveProvider`` (A-3, A-8)."""
        entry = await self._set(
            request.provider_id, RegistryStatus.REMOVED, caller, _reason(request.reason)
        )
        return gateway_pb2.RemoveProviderResponse(provider=record_pb(entry))

    async def _set(
        self, raw_id: str, status: RegistryStatus, caller: Principal, reason: str
    ) -> RegistryEntry:
        provider_id = _provider_id(raw_id)
        entry = await _changed(
            self._store.registry.set_status(provider_id, status, actor=caller.actor, reason=reason),
            "registry.set_status",
        )
        await self._applied()
        _log.info("registry.status_set", provider=provider_id, status=entry.status.value)
        return entry

    async def _applied(self) -> None:
        # The change is committed: applying it here is a courtesy (the
        # replica's poll would do it); a failure must not turn the answer
        # into an error.
        try:
            await self._refresh()
        except Exception:  # noqa: BLE001 - the poll applies it later
            _log.exception("registry.refresh_failed")
