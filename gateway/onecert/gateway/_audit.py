"""The gateway's audit trail: who did what, with identifiers hashed before they are written.

Every lookup, unbind request and final ticket state (and, from the other
parts of the gateway, notices, checks and admin calls) becomes one row of the
store's hash-chained audit log. Citizens, numbers and accounts appear only as
keyed digests: HMAC-SHA256 under a per-deployment key, so the same citizen or
number always gives the same digest (rows can be correlated) while nobody
without the key can recover a number by hashing every possible one (a plain
SHA-256 of a phone number is reversed in minutes).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

import structlog

from onecert.gateway.store import AuditDraft, AuditValueError, Store
from onecert.gateway.store._audit import check_audit_fields
from onecert.sdk._keys import KeyConfigError, load_hex_key

__all__ = ["AUDIT_KEY_BYTES", "Auditor", "derive_audit_key", "load_audit_key"]

_log = structlog.get_logger("onecert.gateway.audit")

AUDIT_KEY_BYTES = 32
_DERIVATION_LABEL = b"onecert audit digest key v1"
# Rows committed in one transaction at most (a burst beyond it takes several).
_MAX_BATCH = 500


def derive_audit_key(handle_key: bytes) -> bytes:
    """The audit key derived from the handle key, when none is configured.

    Domain-separated, so an audit digest says nothing about the handle key.
    Rotating the handle key then changes every digest: configure
    ``keys.audit_key`` to keep digests stable across handle key rotations.
    """
    return hmac.new(handle_key, _DERIVATION_LABEL, hashlib.sha256).digest()


def load_audit_key(path: str | Path) -> bytes:
    """Read an audit key file: 32 random bytes as hex (like ``handle.key``).

    Raises:
        KeyConfigError: unreadable, not hex, or not 32 bytes.
    """
    return load_hex_key(path, what="audit key", size=AUDIT_KEY_BYTES)


def _append_failed(kind: str, exc: Exception) -> None:
    # The audit must not fail silently, and must not leak a value either:
    # the store's messages name fields, never values.
    _log.error("audit.append_failed", kind=kind, error=type(exc).__name__, detail=str(exc))


class Auditor:
    """Hashes identifiers and appends audit rows to a :class:`Store`.

    Rows are written by one task at a time, in the order they were queued:
    whatever is queued when it turns (or while it commits the previous
    batch) goes in one transaction (group commit), so a busy gateway pays
    one commit for many rows and the chain keeps the order of the calls.

    Args:
        store: where rows go.
        key: the 32-byte digest key (see :func:`derive_audit_key`).
    """

    def __init__(self, store: Store, *, key: bytes) -> None:
        if len(key) != AUDIT_KEY_BYTES:
            raise KeyConfigError(f"an audit key must be {AUDIT_KEY_BYTES} bytes")
        self._store = store
        self._key = key
        # Rows waiting for the writer task, in order; with the future of a
        # caller of record() waiting for its row, None for spawn().
        self._queue: list[tuple[AuditDraft, asyncio.Future[None] | None]] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def store(self) -> Store:
        """The store rows are appended to."""
        return self._store

    def digest(self, kind: str, value: str) -> str:
        """The keyed digest of ``value`` (64 lowercase hex).

        ``kind`` ("sub", "msisdn", "account", ...) separates the domains, so a
        citizen id and a number that happen to be equal give unrelated digests.
        """
        message = kind.encode() + b"\x00" + value.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def citizen(self, sub: str) -> str:
        """The audit actor for a citizen: ``citizen:<digest of sub>``."""
        return "citizen:" + self.digest("sub", sub)

    def number(self, msisdn: str) -> str:
        """The audit subject for a number: ``msisdn:<digest>``."""
        return "msisdn:" + self.digest("msisdn", msisdn)

    async def record(
        self,
        kind: str,
        *,
        actor: str,
        subject: str = "",
        detail: Mapping[str, str | int | bool] | None = None,
    ) -> None:
        """Append one row and wait until it is committed.

        Raises what the store raises (the caller decides). The row joins
        the rows queued by :meth:`spawn` and is written in their order.
        ``actor`` and ``subject`` must already be digests or identifiers
        (:meth:`citizen`, :meth:`number`, ``"provider:<id>"``, a ticket id).
        """
        draft = self._draft(kind, actor=actor, subject=subject, detail=detail)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(draft, done)
        await done

    def spawn(
        self,
        kind: str,
        *,
        actor: str,
        subject: str = "",
        detail: Mapping[str, str | int | bool] | None = None,
    ) -> None:
        """Append one row in the background (from a streaming call or a ``finally``).

        A failure is logged, never raised; :meth:`drain` waits for every row
        still queued (the server calls it at shutdown).
        """
        try:
            draft = self._draft(kind, actor=actor, subject=subject, detail=detail)
        except AuditValueError as exc:
            _append_failed(kind, exc)
            return
        self._enqueue(draft, None)

    @staticmethod
    def _draft(
        kind: str,
        *,
        actor: str,
        subject: str,
        detail: Mapping[str, str | int | bool] | None,
    ) -> AuditDraft:
        # Checked here, before queueing, so that one unfit row is refused
        # alone instead of failing the batch it would have joined.
        values = dict(detail or {})
        check_audit_fields(kind=kind, actor=actor, subject=subject, detail=values)
        return AuditDraft(kind=kind, actor=actor, subject=subject, detail=values)

    def _enqueue(self, draft: AuditDraft, done: asyncio.Future[None] | None) -> None:
        self._queue.append((draft, done))
        if self._writer is None:
            # Started on the next turn of the loop: rows queued meanwhile
            # (by the same burst of calls) join the first batch; no delay
            # is added beyond that.
            self._writer = asyncio.get_running_loop().create_task(
                self._write_queued(), name="audit-writer"
            )

    async def _write_queued(self) -> None:
        # The only writer: batches are taken from the queue's head, so rows
        # reach the chain in the order they were queued.
        try:
            while self._queue:
                batch = self._queue[:_MAX_BATCH]
                del self._queue[:_MAX_BATCH]
                await self._write_batch(batch)
        finally:
            self._writer = None

    async def _write_batch(
        self, batch: list[tuple[AuditDraft, asyncio.Future[None] | None]]
    ) -> None:
        try:
            await self._store.audit.append_many([draft for draft, _ in batch])
        except Exception as exc:  # noqa: BLE001 - retried row by row below, each failure reported
            _log.warning("audit.batch_failed", rows=len(batch), error=type(exc).__name__)
        else:
            for _, done in batch:
                if done is not None and not done.done():
                    done.set_result(None)
            return
        # The batch failed as a whole (a busy or lost database): try each row
        # on its own, so one failure costs one row and is reported with it.
        for draft, done in batch:
            try:
                await self._store.audit.append_many([draft])
            except Exception as exc:  # noqa: BLE001 - any failure is logged or handed to the waiter
                if done is not None:
                    if not done.done():
                        done.set_exception(exc)
                    continue
                _append_failed(draft.kind, exc)
            else:
                if done is not None and not done.done():
                    done.set_result(None)

    @property
    def queued(self) -> int:
        """Rows queued and not yet committed (or failed)."""
        return len(self._queue)

    async def drain(self) -> None:
        """Wait until every row queued so far is written (or its failure reported)."""
        while self._writer is not None:
            # Shielded: a caller giving up on the wait must not cancel the writer.
            await asyncio.shield(self._writer)
