"""A provider's own record of what it did, for the crash scenarios' judge.

Kept apart from :mod:`stress.stress_support` so that a provider process
(:mod:`stress.provider_process`) imports nothing but the SDK and this: it is
started again and again, and each start costs the machine the scenario loads.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

__all__ = ["Ledger"]

_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS applies (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    account_ref TEXT NOT NULL,
    msisdn TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pended (request_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS resumes (request_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    jti TEXT NOT NULL,
    msisdn TEXT NOT NULL,
    at REAL NOT NULL
);
"""


class Ledger:
    """A provider's own record of what it did, in a SQLite file of its own.

    Deliberately not deduplicated: every application of an unbind and every
    action on a notice is a row, so doing something twice shows as two rows.
    The file outlives the provider's restarts. Writes are synchronous (no
    await between doing something and answering it) and WAL with
    ``synchronous=NORMAL``: durable across restarts of the process.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with closing(self._connect()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_LEDGER_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _execute(self, sql: str, args: Sequence[object]) -> int:
        with closing(self._connect()) as conn:
            return conn.execute(sql, args).rowcount

    def apply(self, request_id: str, account_ref: str, msisdn: str, reason: str) -> None:
        """Detach the number from the account (the row is the detachment)."""
        self._execute(
            "INSERT INTO applies (request_id, account_ref, msisdn, reason, at) "
            "VALUES (?, ?, ?, ?, ?)",
            (request_id, account_ref, msisdn, reason, time.time()),
        )

    def applied(self, request_id: str) -> bool:
        """Whether an unbind with this request id was applied here."""
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT 1 FROM applies WHERE request_id = ? LIMIT 1", (request_id,)
            ).fetchone()
        return row is not None

    def first_sight(self, request_id: str) -> bool:
        """True the first time a request id is seen here (for a manual review)."""
        changed = self._execute(
            "INSERT OR IGNORE INTO pended (request_id) VALUES (?)", (request_id,)
        )
        return changed == 1

    def note_resumed(self, request_id: str) -> None:
        """Note a call the SDK said resumes an earlier one (it may have applied it)."""
        self._execute("INSERT INTO resumes (request_id) VALUES (?)", (request_id,))

    def resumed(self) -> int:
        """How many calls resumed an earlier one."""
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT COUNT(*) FROM resumes").fetchone()
        return int(row[0])

    def acted(self, jti: str) -> bool:
        """Whether the notice with this jti was acted on here."""
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT 1 FROM events WHERE jti = ? LIMIT 1", (jti,)).fetchone()
        return row is not None

    def act_on_notice(self, jti: str, msisdn: str) -> None:
        """Act on a recycled-number notice (the row is the action)."""
        self._execute(
            "INSERT INTO events (jti, msisdn, at) VALUES (?, ?, ?)", (jti, msisdn, time.time())
        )

    def applies(self) -> list[tuple[str, str, str]]:
        """Every application: (request id, account ref, msisdn)."""
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT request_id, account_ref, msisdn FROM applies").fetchall()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def actions(self) -> list[tuple[str, str]]:
        """Every action on a notice: (jti, msisdn)."""
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT jti, msisdn FROM events").fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]
