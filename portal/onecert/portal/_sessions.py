"""Server-side sessions: the browser holds a random id, the portal holds the rest.

A session keeps the signed-in citizen, the CSRF token of its forms, its
latest lookup and the actions it offers (handles stay here, never in the
page), and the unbind tickets it made. Sessions end after
``idle_s`` without a request or ``max_s`` after they began, and their id
changes at sign-in (no session fixation).

The store is in memory: one portal process per set of sticky sessions, or
give each replica the same store behind this interface.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onecert.portal._identity import Citizen
    from onecert.portal._lookups import LookupState
    from onecert.sdk.client import Receipt

__all__ = ["Action", "Session", "SessionStore", "TicketRef"]


@dataclass(frozen=True)
class Action:
    """Something the citizen may ask for from a page: unbind one account, or
    release a number from previous holders' accounts at one provider.

    The page names it by :attr:`key` (random, in a POST body); the handles
    never leave the server.
    """

    key: str
    kind: str  # "unbind" or "release"
    provider_id: str
    provider_name: str
    msisdn: str
    handles: tuple[str, ...]
    account: str = ""
    left_behind: bool = False


@dataclass(frozen=True)
class TicketRef:
    """An unbind ticket this session made, and what it was for."""

    ticket_id: str
    action: Action


@dataclass
class Session:
    """One browser's session."""

    id: str
    csrf: str
    created: float
    last_seen: float
    citizen: Citizen | None = None
    # What Authlib keeps between the redirect to the identity service and the
    # callback (state, nonce, PKCE verifier); Starlette's ``request.session``.
    oauth: dict[str, Any] = field(default_factory=dict)
    lookup: LookupState | None = None
    actions: dict[str, Action] = field(default_factory=dict)
    tickets: list[TicketRef] = field(default_factory=list)
    # The latest receipt read for each ticket (final ones are not read again).
    receipts: dict[str, Receipt] = field(default_factory=dict)
    # The number the "before you cancel" flow is looking at (a key of ``numbers``).
    cancel_number: str = ""
    notice: str = ""

    def add_action(
        self,
        *,
        kind: str,
        provider_id: str,
        provider_name: str,
        msisdn: str,
        handles: tuple[str, ...],
        account: str = "",
        left_behind: bool = False,
    ) -> Action:
        """The action for these handles, registered with a random key on first sight
        (the same handles keep the same key, so a re-rendered page keeps its ids)."""
        for action in self.actions.values():
            if action.handles == handles and action.kind == kind:
                return action
        action = Action(
            key=secrets.token_urlsafe(12),
            kind=kind,
            provider_id=provider_id,
            provider_name=provider_name,
            msisdn=msisdn,
            handles=handles,
            account=account,
            left_behind=left_behind,
        )
        self.actions[action.key] = action
        return action

    def asked(self, action: Action) -> bool:
        """Whether a ticket was already made for this action's handles."""
        return any(
            t.action.handles == action.handles and t.action.provider_id == action.provider_id
            for t in self.tickets
        )

    def end(self) -> None:
        """Forget everything about the citizen (a running lookup is cancelled)."""
        if self.lookup is not None:
            self.lookup.cancel()
        self.citizen = None
        self.lookup = None
        self.actions.clear()
        self.tickets.clear()
        self.receipts.clear()
        self.oauth.clear()
        self.cancel_number = ""


class SessionStore:
    """Sessions in memory, by id, with idle and absolute timeouts.

    Args:
        idle_s: a session ends after this long without a request.
        max_s: a session ends this long after it was created.
        clock: monotonic seconds (a test may pass its own).
        limit: the most sessions kept; past it, expired sessions are dropped,
            then the longest-idle anonymous ones (a visitor who never signed
            in), so page views alone cannot exhaust memory.
    """

    def __init__(
        self,
        *,
        idle_s: float,
        max_s: float,
        clock: Callable[[], float] = time.monotonic,
        limit: int = 100_000,
    ) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self.clock = clock
        self.limit = limit
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def new(self) -> Session:
        """A fresh, anonymous session."""
        now = self.clock()
        if len(self._sessions) >= self.limit:
            self._make_room()
        session = Session(
            id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), created=now, last_seen=now
        )
        self._sessions[session.id] = session
        return session

    def _make_room(self) -> None:
        if self.sweep():
            return
        anonymous = sorted(
            (s for s in self._sessions.values() if s.citizen is None), key=lambda s: s.last_seen
        )
        # A tenth at a time, so a flood does not sort the whole store on every request.
        for session in anonymous[: max(1, self.limit // 10)]:
            self.drop(session)

    def get(self, session_id: str | None) -> tuple[Session | None, bool]:
        """The live session with this id (and touch it), and whether one just expired."""
        if not session_id:
            return None, False
        session = self._sessions.get(session_id)
        if session is None:
            return None, False
        now = self.clock()
        if now - session.last_seen > self.idle_s or now - session.created > self.max_s:
            was_signed_in = session.citizen is not None
            self.drop(session)
            return None, was_signed_in
        session.last_seen = now
        return session, False

    def rotate(self, session: Session) -> Session:
        """Give the session a new id and CSRF token, keeping its contents (at sign-in)."""
        self._sessions.pop(session.id, None)
        session.id = secrets.token_urlsafe(32)
        session.csrf = secrets.token_urlsafe(32)
        session.created = session.last_seen = self.clock()
        self._sessions[session.id] = session
        return session

    def drop(self, session: Session) -> None:
        """End a session for good."""
        session.end()
        self._sessions.pop(session.id, None)

    def sweep(self) -> int:
        """Drop every expired session; returns how many."""
        now = self.clock()
        expired = [
            s
            for s in self._sessions.values()
            if now - s.last_seen > self.idle_s or now - s.created > self.max_s
        ]
        for session in expired:
            self.drop(session)
        return len(expired)
