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

from onecert.gateway.store import Store
from onecert.sdk._keys import KeyConfigError

__all__ = ["AUDIT_KEY_BYTES", "Auditor", "derive_audit_key", "load_audit_key"]

_log = structlog.get_logger("onecert.gateway.audit")

AUDIT_KEY_BYTES = 32
_DERIVATION_LABEL = b"onecert audit digest key v1"


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
        KeyConfigError: unreadable, not hex, or not 32 bytes. The message never
            quotes the file's content.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyConfigError(f"cannot read audit key {path}: {exc.strerror or exc}") from None
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except ValueError:  # UnicodeDecodeError included; neither message is repeated
        raise KeyConfigError(f"audit key {path} is not hex") from None
    if len(key) != AUDIT_KEY_BYTES:
        raise KeyConfigError(
            f"audit key {path} must hold {AUDIT_KEY_BYTES} bytes ({2 * AUDIT_KEY_BYTES} hex)"
        )
    return key


class Auditor:
    """Hashes identifiers and appends audit rows to a :class:`Store`.

    Args:
        store: where rows go.
        key: the 32-byte digest key (see :func:`derive_audit_key`).
    """

    def __init__(self, store: Store, *, key: bytes) -> None:
        if len(key) != AUDIT_KEY_BYTES:
            raise KeyConfigError(f"an audit key must be {AUDIT_KEY_BYTES} bytes")
        self._store = store
        self._key = key
        self._pending: set[asyncio.Task[None]] = set()

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
        """Append one row now. Raises what the store raises (the caller decides).

        ``actor`` and ``subject`` must already be digests or identifiers
        (:meth:`citizen`, :meth:`number`, ``"provider:<id>"``, a ticket id).
        """
        await self._store.append_audit(kind=kind, actor=actor, subject=subject, detail=detail)

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
        still being written (the server calls it at shutdown).
        """
        task = asyncio.get_running_loop().create_task(
            self._append_logged(kind, actor=actor, subject=subject, detail=detail)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _append_logged(
        self,
        kind: str,
        *,
        actor: str,
        subject: str,
        detail: Mapping[str, str | int | bool] | None,
    ) -> None:
        try:
            await self.record(kind, actor=actor, subject=subject, detail=detail)
        except Exception as exc:  # noqa: BLE001 - any failure is logged; the caller never waits for the row
            # The audit must not fail silently, and must not leak a value either:
            # the store's messages name fields, never values.
            _log.error("audit.append_failed", kind=kind, error=type(exc).__name__, detail=str(exc))

    async def drain(self) -> None:
        """Wait for rows appended with :meth:`spawn` to be written."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
