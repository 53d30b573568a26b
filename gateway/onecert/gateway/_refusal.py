"""How a gateway service says no: one exception, answered at the server boundary.

Services (lookup, unbind, notices, checks, compliance) take the caller and
plain request values and know nothing of gRPC servers: when they refuse a
call they raise :class:`Refusal` with the status the caller gets, a message
safe to send, a short reason for the log line and, when the refusal is worth
recording, the audit row. :mod:`onecert.gateway._boundary` is the one place
that turns it into the log line, the audit row and the gRPC status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

__all__ = ["AuditNote", "CheckError", "Refusal", "invalid", "store_call"]

_T = TypeVar("_T")

_log = structlog.get_logger("onecert.gateway.refusal")


@dataclass(frozen=True)
class AuditNote:
    """An audit row to write when a refusal is answered (hashed identifiers only)."""

    kind: str
    actor: str
    subject: str = ""
    detail: Mapping[str, str | int | bool] = field(default_factory=dict)


class Refusal(Exception):  # noqa: N818 - a refusal is an answer, not an error of the gateway
    """A call refused with a gRPC status instead of an answer.

    Attributes:
        code: the status the caller gets.
        message: the status details; clear, and free of personal data.
        reason: a short machine-readable word for the log line (``capacity``).
        audit: the audit row the refusal is recorded with, if any.
        trailing_metadata: sent with the status (``retry-after-ms``).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        audit: AuditNote | None = None,
        trailing_metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason or code.name.lower()
        self.audit = audit
        self.trailing_metadata = trailing_metadata


class CheckError(Exception):
    """A credential check (an assertion, a handle) said no; the caller turns it into a refusal.

    Attributes:
        code: the gRPC status to answer with.
        reason: a short machine-readable code for metrics.
        message: a clear explanation, safe to send to the caller.
    """

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def invalid(message: str) -> Refusal:
    """INVALID_ARGUMENT with ``message``: a request field is wrong."""
    return Refusal(grpc.StatusCode.INVALID_ARGUMENT, message, reason="invalid_argument")


async def store_call(call: Awaitable[_T], what: str) -> _T:
    """Await a store call; a database that cannot be reached refuses with UNAVAILABLE.

    Unreachable includes busy: every pooled connection in use past
    ``[store] timeout_s`` (SQLAlchemy's pool timeout) is answered the same way,
    not as an unexpected error.
    """
    try:
        return await call
    except (DBAPIError, PoolTimeoutError, OSError) as exc:
        _log.error("store.unavailable", what=what, error=type(exc).__name__)
        raise Refusal(
            grpc.StatusCode.UNAVAILABLE,
            "the gateway's database is unavailable; try again later",
            reason="store_unavailable",
        ) from exc
