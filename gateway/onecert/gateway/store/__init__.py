"""Durable gateway state on SQLite (default) or PostgreSQL.

Open a :class:`Store` with a database URL, run :meth:`Store.upgrade` once
(or ``onecert db upgrade``), then share it between tasks::

    store = Store.open("sqlite:///onecert.db")
    await store.upgrade()
    ticket, created = await store.tickets.create(...)

A :class:`Store` holds one repository per concern (``store.tickets``,
``store.notices``, ``store.deliveries``, ``store.cursors``, ``store.audit``,
``store.replay``, ``store.compliance``, ``store.routing``, ``store.registry``,
``store.rates``) over one shared :class:`StoreDatabase`. Workers claim
due work with ``store.tickets.claim_due`` and ``store.cursors.claim_due``
(leases; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on
SQLite), so several gateway processes can share one database.
"""

from __future__ import annotations

from onecert.gateway.store._audit import looks_like_number
from onecert.gateway.store._audit_repo import AuditRepository
from onecert.gateway.store._compliance_repo import ComplianceRepository
from onecert.gateway.store._cursor_repo import (
    Handoff,
    NoticeCursor,
    NoticeCursorRepository,
    PushResult,
    Settlement,
)
from onecert.gateway.store._database import StoreDatabase
from onecert.gateway.store._delivery_repo import DeliveryRepository
from onecert.gateway.store._engine import normalize_url
from onecert.gateway.store._notice_repo import NoticeRepository
from onecert.gateway.store._rate_repo import RateRepository
from onecert.gateway.store._registry_repo import RegistryRepository, check_entry_id, token_digest
from onecert.gateway.store._registry_types import (
    STATUS_TARGETS,
    AlreadyExistsError,
    EntryKind,
    EntryOrigin,
    Invitation,
    RedeemOutcome,
    RedeemResult,
    RegistryEntry,
    RegistryEvent,
    RegistrySnapshot,
    RegistryStatus,
    SeedEntry,
    SeedReport,
    TransitionError,
)
from onecert.gateway.store._replay_repo import ReplayRepository, StoreReplayCache
from onecert.gateway.store._routing_repo import (
    FilterKind,
    FilterRow,
    KeyRow,
    KeyState,
    RoutingRepository,
)
from onecert.gateway.store._store import Store
from onecert.gateway.store._ticket_repo import TicketRepository
from onecert.gateway.store._types import (
    AttemptOutcome,
    AuditDraft,
    AuditEntry,
    AuditValueError,
    AuditVerification,
    ConflictError,
    Delivery,
    DeliveryMode,
    DeliveryState,
    NotFoundError,
    Notice,
    NoticeStatus,
    NumberEvent,
    ProviderComplianceRow,
    RecycledCheck,
    RecycledStatus,
    StoredEventType,
    StoredTicketState,
    StoreError,
    Ticket,
    classify_notice,
    classify_recycled,
)

__all__ = [
    "STATUS_TARGETS",
    "AlreadyExistsError",
    "AttemptOutcome",
    "AuditDraft",
    "AuditEntry",
    "AuditRepository",
    "AuditValueError",
    "AuditVerification",
    "ComplianceRepository",
    "ConflictError",
    "Delivery",
    "DeliveryMode",
    "DeliveryRepository",
    "DeliveryState",
    "EntryKind",
    "EntryOrigin",
    "FilterKind",
    "FilterRow",
    "Handoff",
    "Invitation",
    "KeyRow",
    "KeyState",
    "NotFoundError",
    "Notice",
    "NoticeCursor",
    "NoticeCursorRepository",
    "NoticeRepository",
    "NoticeStatus",
    "NumberEvent",
    "ProviderComplianceRow",
    "PushResult",
    "RateRepository",
    "RecycledCheck",
    "RecycledStatus",
    "RedeemOutcome",
    "RedeemResult",
    "RegistryEntry",
    "RegistryEvent",
    "RegistryRepository",
    "RegistrySnapshot",
    "RegistryStatus",
    "ReplayRepository",
    "RoutingRepository",
    "SeedEntry",
    "SeedReport",
    "Settlement",
    "Store",
    "StoreDatabase",
    "StoreError",
    "StoreReplayCache",
    "StoredEventType",
    "StoredTicketState",
    "Ticket",
    "TicketRepository",
    "TransitionError",
    "check_entry_id",
    "classify_notice",
    "classify_recycled",
    "looks_like_number",
    "normalize_url",
    "token_digest",
]
