"""The storage layer: every durable piece of gateway state, on SQLite or PostgreSQL.

One :class:`Store` per process, shared by every task: a repository per
concern over one :class:`~onecert.gateway.store.StoreDatabase`. Each
repository method is one short transaction (see ``_database`` for how
writes are serialised on each database).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from onecert.gateway.store._audit_repo import AuditRepository
from onecert.gateway.store._compliance_repo import ComplianceRepository
from onecert.gateway.store._cursor_repo import NoticeCursorRepository
from onecert.gateway.store._database import StoreDatabase
from onecert.gateway.store._delivery_repo import DeliveryRepository
from onecert.gateway.store._engine import configure_sqlite, head_revision, normalize_url
from onecert.gateway.store._notice_repo import NoticeRepository
from onecert.gateway.store._rate_repo import RateRepository
from onecert.gateway.store._registry_repo import RegistryRepository
from onecert.gateway.store._replay_repo import ReplayRepository
from onecert.gateway.store._routing_repo import RoutingRepository
from onecert.gateway.store._ticket_repo import TicketRepository

__all__ = ["Store"]

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class Store:
    """All durable gateway state, one repository per concern.

    - :attr:`tickets`: unbind tickets (:class:`TicketRepository`).
    - :attr:`notices`: carriers' number events and number history
      (:class:`NoticeRepository`).
    - :attr:`deliveries`: each provider's copy of a notice, pushed or polled
      (:class:`DeliveryRepository`).
    - :attr:`cursors`: each provider's place in the notice log, leased by push
      workers (:class:`NoticeCursorRepository`).
    - :attr:`audit`: the hash-chained audit log (:class:`AuditRepository`).
    - :attr:`replay`: identity-assertion ids seen (:class:`ReplayRepository`).
    - :attr:`compliance`: the regulator's report (:class:`ComplianceRepository`).
    - :attr:`routing`: providers' sealed routing filters (:class:`RoutingRepository`).
    - :attr:`registry`: providers and carriers, their status and history
      (:class:`RegistryRepository`).
    - :attr:`rates`: rate-limit windows shared by replicas (:class:`RateRepository`).

    Build with :meth:`open`, run :meth:`upgrade` once at start-up, share the
    object between tasks, :meth:`close` at shutdown (or ``async with``).
    Times are aware datetimes, stored and returned in UTC; every method that
    depends on the clock takes ``now`` (default: the current time) so that
    callers and tests control it. A new concern adds its repository here,
    built on :attr:`db`.
    """

    def __init__(self, db: StoreDatabase) -> None:
        """Build the repositories on ``db`` (prefer :meth:`open`)."""
        self._db = db
        self.audit = AuditRepository(self._db)
        self.tickets = TicketRepository(self._db, self.audit)
        self.notices = NoticeRepository(self._db, self.audit)
        self.deliveries = DeliveryRepository(self._db, self.audit)
        self.cursors = NoticeCursorRepository(self._db, self.audit)
        self.replay = ReplayRepository(self._db)
        self.compliance = ComplianceRepository(self._db)
        self.routing = RoutingRepository(self._db, self.audit)
        self.registry = RegistryRepository(self._db, self.audit)
        self.rates = RateRepository(self._db)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        schema: str | None = None,
        busy_timeout_ms: int = 5000,
        pool_size: int = 5,
        echo: bool = False,
        database_clock: bool = False,
        timeout_s: float | None = None,
    ) -> Store:
        """Create a store for ``url`` (nothing is connected until first use).

        Args:
            url: ``sqlite:///path/to/file.db`` or ``postgresql://user@host/db``
                (async drivers are chosen for you, see :func:`normalize_url`).
                SQLite connections use WAL, ``synchronous=FULL``, foreign keys
                and ``busy_timeout``.
            schema: PostgreSQL only: the schema to use (``search_path``);
                :meth:`upgrade` creates it if missing.
            busy_timeout_ms: SQLite only: how long to wait for the write lock.
            pool_size: PostgreSQL only: connections kept open per process.
            echo: log every SQL statement (debugging).
            database_clock: PostgreSQL only: leases, due and expiry times and
                new tickets are judged and stamped with the database's
                ``now()``, not the caller's ``now`` (replicas whose clocks
                disagree then agree); off, the caller's time is used (tests
                with a clock of their own).
            timeout_s: PostgreSQL only: how long to wait to connect, for a
                pooled connection and for any one statement (then
                ``TimeoutError``); None waits as long as the driver does
                (connecting: 60 s; a statement: for ever).
        """
        url = normalize_url(url)
        if make_url(url).get_backend_name() == "postgresql":
            connect_args: dict[str, Any] = {}
            if schema is not None:
                if not _SCHEMA_NAME.fullmatch(schema):
                    raise ValueError("schema must match [a-z_][a-z0-9_]{0,62}")
                connect_args["server_settings"] = {"search_path": schema}
            # Migrations wait as long as they take (another replica holding
            # the migration lock, a long index build): no timeouts there.
            migrator = None
            pool: dict[str, Any] = {}
            if timeout_s is not None:
                migrator = create_async_engine(
                    url, connect_args=dict(connect_args), poolclass=NullPool
                )
                # A server that accepts and never answers (stopped, partitioned)
                # would hold a call, or a worker, for as long as TCP does.
                connect_args.update(timeout=timeout_s, command_timeout=timeout_s)
                pool["pool_timeout"] = timeout_s
            engine = create_async_engine(
                url,
                connect_args=connect_args,
                pool_size=pool_size,
                pool_pre_ping=True,
                echo=echo,
                **pool,
            )
            return cls(
                StoreDatabase(
                    engine, schema=schema, database_clock=database_clock, migrator=migrator
                )
            )
        if schema is not None:
            raise ValueError("schema applies to PostgreSQL only")
        engine = create_async_engine(url, echo=echo)
        configure_sqlite(engine, busy_timeout_ms=busy_timeout_ms)
        return cls(StoreDatabase(engine, busy_timeout_ms=busy_timeout_ms))

    @property
    def db(self) -> StoreDatabase:
        """The database every repository shares."""
        return self._db

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine (for diagnostics and tests)."""
        return self._db.engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.dialect

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema to ``revision`` (alembic; idempotent, safe when
        several gateways start at once)."""
        await self._db.upgrade(revision)

    async def downgrade(self, revision: str = "base") -> None:
        """Migrate the schema down to ``revision`` ("base" drops everything)."""
        await self._db.downgrade(revision)

    async def schema_revision(self) -> str | None:
        """The migration the database is at (None before the first upgrade)."""
        return await self._db.schema_revision()

    @staticmethod
    def head_revision() -> str:
        """The newest migration this code knows."""
        return head_revision()
