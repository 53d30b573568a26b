"""Durable gateway state on SQLite (default) or PostgreSQL.

Open a :class:`Store` with a database URL, run :meth:`Store.upgrade` once
(or ``onecert db upgrade``), then share it between tasks::

    store = Store.open("sqlite:///onecert.db")
    await store.upgrade()
    ticket, created = await store.create_ticket(...)

Workers claim due work with :meth:`Store.claim_due_tickets` and
:meth:`Store.claim_due_deliveries` (leases; ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so several gateway processes can
share one database.
"""

from __future__ import annotations

from onecert.gateway.store._audit import looks_like_number
from onecert.gateway.store._engine import normalize_url
from onecert.gateway.store._store import Store, StoreReplayCache
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
    NumberEventType,
    ProviderComplianceRow,
    RecycledCheck,
    RecycledStatus,
    StoreError,
    Ticket,
    TicketState,
    classify_notice,
    classify_recycled,
)

__all__ = [
    "AttemptOutcome",
    "AuditDraft",
    "AuditEntry",
    "AuditValueError",
    "AuditVerification",
    "ConflictError",
    "Delivery",
    "DeliveryMode",
    "DeliveryState",
    "NotFoundError",
    "Notice",
    "NoticeStatus",
    "NumberEvent",
    "NumberEventType",
    "ProviderComplianceRow",
    "RecycledCheck",
    "RecycledStatus",
    "Store",
    "StoreError",
    "StoreReplayCache",
    "Ticket",
    "TicketState",
    "classify_notice",
    "classify_recycled",
    "looks_like_number",
    "normalize_url",
]
