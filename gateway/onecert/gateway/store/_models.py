"""The schema: SQLAlchemy Core tables shared by the store and its migrations.

Migrations under ``migrations/versions`` create these tables with explicit
operations (a migration never changes once released); a test checks that the
migrated database matches this metadata.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
    "GENESIS_HASH",
    "UTCDateTime",
    "audit_head",
    "audit_log",
    "deliveries",
    "enrollment_tokens",
    "metadata",
    "notice_cursors",
    "notice_head",
    "number_events",
    "rate_limits",
    "registry_entries",
    "registry_head",
    "registry_history",
    "replay_cache",
    "routing_filters",
    "routing_head",
    "routing_keys",
    "unbind_tickets",
]

# Constraint names are fixed so that migrations can refer to them on every
# database.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# prev_hash of the first audit row.
GENESIS_HASH = "0" * 64


class UTCDateTime(TypeDecorator[datetime]):
    """An instant in UTC: aware datetimes in, aware UTC datetimes out.

    PostgreSQL stores ``timestamptz``. SQLite has no time zone type, so the
    value is converted to UTC and stored without offset in SQLAlchemy's
    fixed-width text format, which sorts and compares correctly as text.
    Naive datetimes are refused: an instant without a zone is a bug.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: the store needs time-zone-aware instants")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Identifiers are short ASCII strings; 64 characters hold a SHA-256 hex digest.
_ID = 64


def _one_row(name: str, *columns: Column[Any]) -> Table:
    """A table of one row (id = 1): a log's head or a version, which writers lock to
    take turns."""
    return Table(
        name, metadata, Column("id", Integer, primary_key=True, autoincrement=False), *columns
    )


replay_cache = Table(
    "replay_cache",
    metadata,
    # Opaque key chosen by the caller (a digest of issuer and jti).
    Column("jti", String(128), primary_key=True),
    Column("expires_at", UTCDateTime(), nullable=False, index=True),
)

unbind_tickets = Table(
    "unbind_tickets",
    metadata,
    Column("ticket_id", String(_ID), primary_key=True),
    # SHA-256 hex of the handle: the idempotency key.
    Column("handle_digest", String(_ID), nullable=False, unique=True),
    Column("sub_hash", String(_ID), nullable=False, index=True),
    Column("provider_id", String(_ID), nullable=False, index=True),
    Column("reason", Integer, nullable=False),
    # Sealed by the gateway (msisdn and account ref); opaque to the store.
    Column("payload", Text, nullable=False),
    Column("msisdn_hash", String(_ID), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease_owner", String(128)),
    Column("lease_until", UTCDateTime()),
    Column("provider_outcome", String(16)),
    Column("provider_reason", Text),
    Column("answered_at", UTCDateTime()),
    Column("last_error", Text),
    Column("closed_at", UTCDateTime()),
    CheckConstraint("state IN ('QUEUED', 'PENDING', 'DONE', 'REJECTED', 'FAILED')", name="state"),
    CheckConstraint(
        "provider_outcome IS NULL OR provider_outcome IN ('DONE', 'PENDING', 'REJECTED')",
        name="provider_outcome",
    ),
    Index(None, "state", "next_attempt_at"),
)

number_events = Table(
    "number_events",
    metadata,
    Column("notice_id", String(_ID), primary_key=True),
    # The notice's place in the one ordered log, from notice_head (notices
    # may commit out of seq order: cursors move back, see _notice_repo).
    Column("seq", BigInteger, nullable=False),
    Column("carrier_id", String(_ID), nullable=False),
    Column("event_id", String(128), nullable=False),
    # Raw E.164: needed to build the SET for each delivery (operational data,
    # never logged or audited).
    Column("msisdn", String(16), nullable=False),
    Column("msisdn_hash", String(_ID), nullable=False, index=True),
    Column("event_type", String(16), nullable=False),
    Column("effective_at", UTCDateTime(), nullable=False),
    Column("quiet_period_ends_at", UTCDateTime()),
    Column("deadline", UTCDateTime(), nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    # "VERSION:HEX" of the number's routing element under the routing key
    # active when it was recorded: a provider's filter additions that carry
    # it route the notice to that provider late (None without routing).
    Column("route_tag", String(48), index=True),
    UniqueConstraint("carrier_id", "event_id"),
    CheckConstraint("event_type IN ('CANCELLED', 'RECYCLED')", name="event_type"),
    Index(None, "seq", unique=True),
)

deliveries = Table(
    "deliveries",
    metadata,
    # The SET's jti.
    Column("jti", String(_ID), primary_key=True),
    Column(
        "notice_id",
        String(_ID),
        ForeignKey("number_events.notice_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("provider_id", String(_ID), nullable=False),
    # The notice's seq: a provider's notices are handed out in log order.
    Column("seq", BigInteger, nullable=False),
    Column("mode", String(8), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_error", Text),
    Column("delivered_at", UTCDateTime()),
    Column("acknowledged_at", UTCDateTime()),
    Column("acted_at", UTCDateTime()),
    Column("confirmed_at", UTCDateTime()),
    Column("bindings_removed", Integer),
    UniqueConstraint("notice_id", "provider_id"),
    CheckConstraint("mode IN ('push', 'poll')", name="mode"),
    CheckConstraint("state IN ('PENDING', 'ACKNOWLEDGED', 'FAILED')", name="state"),
    # Push workers find work through the providers' cursors, polls by provider.
    Index(None, "provider_id", "state", "seq"),
)

# One row (id = 1): the last notice seq assigned.
notice_head = _one_row("notice_head", Column("seq", BigInteger, nullable=False))

# One row per provider that was ever routed a notice: its cursor in the log.
# Every notice routed to it up to acked_seq is settled (acknowledged, refused
# or given up); head_seq is the last notice routed to it. Push workers lease
# the cursor, not the notices: one worker at a time delivers to a provider.
notice_cursors = Table(
    "notice_cursors",
    metadata,
    Column("provider_id", String(_ID), primary_key=True),
    Column("mode", String(8), nullable=False),
    Column("acked_seq", BigInteger, nullable=False),
    Column("head_seq", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease_owner", String(128)),
    Column("lease_until", UTCDateTime()),
    Column("last_error", Text),
    CheckConstraint("mode IN ('push', 'poll')", name="mode"),
    Index(None, "mode", "next_attempt_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    # Assigned by the appender under the chain lock: 1, 2, 3, ... without gaps.
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", UTCDateTime(), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("subject", String(128), nullable=False),
    # Canonical JSON, hashed exactly as stored.
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("row_hash", String(64), nullable=False),
)

# One row (id = 1): the end of the chain. Appenders lock it to serialise, and
# the verifier compares it with the last row, so a truncated tail is found.
audit_head = _one_row(
    "audit_head",
    Column("seq", BigInteger, nullable=False),
    Column("row_hash", String(64), nullable=False),
)


# Providers' routing filters, sealed (AEAD) by the gateway: a snapshot, the
# additions since, or an opt-out. Replicas apply rows in seq order.
routing_filters = Table(
    "routing_filters",
    metadata,
    # Assigned from routing_head under its row lock, so rows commit in seq order.
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("provider_id", String(_ID), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("key_version", BigInteger, nullable=False),
    # The provider's created_at (Unix seconds), from the sealed header.
    Column("created_at", BigInteger, nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    # The promised snapshot interval (snapshots only).
    Column("interval_s", Integer),
    # Nonce and AES-GCM ciphertext of the published bytes.
    Column("sealed", LargeBinary, nullable=False),
    CheckConstraint("kind IN ('snapshot', 'additions', 'opt_out')", name="kind"),
)

# One row (id = 1): the last seq written; replicas poll it to see new filters.
routing_head = _one_row("routing_head", Column("seq", BigInteger, nullable=False))


# The registry: every provider and carrier the gateway knows, whatever its
# status, seeded from the configuration or enrolled by invitation.
registry_entries = Table(
    "registry_entries",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("id", String(_ID), primary_key=True),
    Column("name", String(200), nullable=False),
    # Providers only: the category's config name ("payment").
    Column("category", String(32)),
    # None for a poll-only provider (it is never dialed).
    Column("address", String(255)),
    Column("delivery", String(8), nullable=False),
    Column("plaintext", Boolean, nullable=False),
    # The CN of its client certificate; the id when None.
    Column("client_cn", String(128)),
    # Per-entry tuning from the configuration (None: the [fanout] defaults).
    Column("deadline_s", Float),
    Column("max_concurrency", Integer),
    # Carriers only: the number prefixes it may report, space-separated.
    Column("prefixes", Text),
    Column("status", String(16), nullable=False),
    Column("origin", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("invited_at", UTCDateTime()),
    Column("joined_at", UTCDateTime()),
    Column("activated_at", UTCDateTime()),
    Column("status_changed_at", UTCDateTime(), nullable=False),
    # Who made the last status change, and why ("admin:regulator", "config").
    Column("status_actor", String(128), nullable=False),
    Column("status_reason", Text),
    Column("cert_serial", String(64)),
    Column("cert_not_after", UTCDateTime()),
    # The last conformance gate: passed, its failures (JSON list), when.
    Column("gate_passed", Boolean),
    Column("gate_failures", Text),
    Column("gate_at", UTCDateTime()),
    # The registry version of the entry's last change.
    Column("version", BigInteger, nullable=False),
    CheckConstraint("kind IN ('provider', 'carrier')", name="kind"),
    CheckConstraint("delivery IN ('push', 'poll')", name="delivery"),
    CheckConstraint(
        "status IN ('invited', 'pending', 'active', 'suspended', 'removed')", name="status"
    ),
    CheckConstraint("origin IN ('config', 'enrolled')", name="origin"),
    Index(None, "status"),
)

# Every change to the registry, oldest first: who did what, when.
registry_history = Table(
    "registry_history",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("entry_id", String(_ID), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("from_status", String(16)),
    Column("to_status", String(16)),
    # Canonical JSON of what changed (never a raw token).
    Column("detail", Text, nullable=False),
    Index(None, "kind", "entry_id"),
)

# One-time enrollment tokens: only their SHA-256 is stored.
enrollment_tokens = Table(
    "enrollment_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("provider_id", String(_ID), nullable=False, index=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime()),
    # Set when a new invitation, a suspension or a removal voids it.
    Column("revoked_at", UTCDateTime()),
)

# One row (id = 1): bumped in the transaction of every registry change;
# replicas poll it and reload the registry when it moves.
registry_head = _one_row("registry_head", Column("version", BigInteger, nullable=False))

# Rate limits shared by replicas (CheckRecycled's), as GCRA: per key, the
# theoretical arrival time of the next call (a token bucket in one number).
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", String(128), primary_key=True),
    # Seconds since the epoch.
    Column("tat", Float, nullable=False),
    Index(None, "tat"),
)

# The federation's routing keys once an operator rotated them
# (``onecert routing rotate-key``), sealed (AEAD) by the gateway; replicas
# poll the table. Empty: the keys of the configuration.
routing_keys = Table(
    "routing_keys",
    metadata,
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    # Nonce and AES-GCM ciphertext of the key; empty once retired.
    Column("sealed", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False),
    Column("changed_at", UTCDateTime(), nullable=False),
    CheckConstraint("state IN ('active', 'live', 'retired')", name="state"),
)
