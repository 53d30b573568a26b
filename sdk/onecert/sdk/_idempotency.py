"""Where the SDK remembers final answers, so a redelivery is answered, not re-applied.

Keys are namespaced by the SDK ("unbind:<request_id>", "event:<jti>"); values
are short JSON texts the SDK writes and reads. A store only has to keep them:
any key-value store with a durable ``put`` fits the :class:`IdempotencyStore`
protocol.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from datetime import timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

# How long the gateway may deliver one unbind again (its ticket lifetime):
# answers must be remembered at least this long (docs/contract.md U-9).
MIN_RETENTION = timedelta(days=7)


@runtime_checkable
class IdempotencyStore(Protocol):
    """Durable key-value storage for answers already given.

    ``put`` must have stored the value when it returns (the SDK answers the
    gateway only after that). Implementations need no locking of their own:
    the SDK serialises calls for the same key within one process.
    """

    async def get(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""
        ...

    async def put(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any previous value."""
        ...


class MemoryIdempotencyStore:
    """Keeps answers in this process only: right for tests and development.

    Everything is forgotten on restart, so a redelivery after a restart calls
    your function again; use :class:`SQLiteIdempotencyStore` in production.
    """

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self._values.get(key)

    async def put(self, key: str, value: str) -> None:
        self._values[key] = value

    def __len__(self) -> int:
        return len(self._values)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS onecert_idempotency (
    key       TEXT PRIMARY KEY,
    value     TEXT NOT NULL,
    stored_at REAL NOT NULL
)
"""


class SQLiteIdempotencyStore:
    """Keeps answers in a SQLite file (WAL, synchronous=FULL): survives restarts.

    One file per adapter process. Entries older than ``retention`` are pruned
    when the store opens; keep it longer than the gateway retries a ticket.

    Args:
        path: the database file; created with its table if missing.
        retention: how long an answer is remembered; at least
            :data:`MIN_RETENTION` (7 days).

    Raises:
        ValueError: ``retention`` is shorter than the gateway may redeliver.
    """

    def __init__(self, path: str | Path, *, retention: timedelta = timedelta(days=90)) -> None:
        if retention < MIN_RETENTION:
            raise ValueError(
                f"retention must be at least {MIN_RETENTION.days} days: the gateway may "
                "deliver an unbind again that long"
            )
        self._path = Path(path)
        self._retention = retention
        self._ready = False

    @property
    def path(self) -> Path:
        return self._path

    def _connect(self) -> sqlite3.Connection:
        # A connection per operation: operations are rare (unbinds, notices)
        # and this keeps every thread of asyncio.to_thread independent.
        conn = sqlite3.connect(self._path, timeout=10.0, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _init_sync(self) -> None:
        with closing(self._connect()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
            cutoff = time.time() - self._retention.total_seconds()
            conn.execute("DELETE FROM onecert_idempotency WHERE stored_at < ?", (cutoff,))

    async def _ensure_ready(self) -> None:
        # Two first calls may both initialise: harmless, every statement is
        # idempotent, and it spares a lock bound to one event loop.
        if not self._ready:
            await asyncio.to_thread(self._init_sync)
            self._ready = True

    def _get_sync(self, key: str) -> str | None:
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT value FROM onecert_idempotency WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else str(row[0])

    def _put_sync(self, key: str, value: str) -> None:
        with closing(self._connect()) as conn:
            conn.execute(
                "INSERT INTO onecert_idempotency (key, value, stored_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "stored_at = excluded.stored_at",
                (key, value, time.time()),
            )

    async def get(self, key: str) -> str | None:
        await self._ensure_ready()
        return await asyncio.to_thread(self._get_sync, key)

    async def put(self, key: str, value: str) -> None:
        await self._ensure_ready()
        await asyncio.to_thread(self._put_sync, key, value)


def open_store(idempotency: IdempotencyStore | str | Path | None) -> IdempotencyStore:
    """The store an ``idempotency=`` argument names: a store as given, a SQLite file
    path, or None for memory (answers lost on restart)."""
    if idempotency is None:
        return MemoryIdempotencyStore()
    if isinstance(idempotency, str | Path):
        return SQLiteIdempotencyStore(idempotency)
    return idempotency


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
