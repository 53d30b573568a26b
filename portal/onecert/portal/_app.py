"""The portal's ASGI application: pages, forms, streams, and the headers around them.

Every page works without JavaScript: forms post, results pages refresh
themselves (a ``<noscript>`` refresh) until the lookup ends. With JavaScript,
``/static/portal.js`` follows the same pages as server-sent events instead.
Every form carries the session's CSRF token; every action names what it acts
on by a random key in the POST body, never in the URL, and the handles stay
in the server-side session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import grpc
import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onecert.portal._i18n import Translator, translator
from onecert.portal._identity import AssertionSource, Citizen, DevAssertions, SignInRequiredError
from onecert.portal._lookups import LookupState, start_lookup
from onecert.portal._session_pages import LANG_COOKIE, SessionPages
from onecert.portal._sessions import Action, Session, SessionStore, TicketRef
from onecert.portal._views import receipt_rows, results_view, show_number
from onecert.sdk.client import GatewayClient, GatewayError, Receipt

__all__ = ["CSP", "SESSION_COOKIE", "PortalApp"]

log = structlog.get_logger("onecert.portal")

_HERE = Path(__file__).parent
# __Host- cookies must be Secure, have Path=/ and no Domain: no subdomain can
# set or shadow them.
SESSION_COOKIE = "__Host-onecert-session"
# No inline script or style anywhere; everything comes from this origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)
_HSTS = (b"strict-transport-security", b"max-age=31536000")
# How often receipts are read again while some are not final, and for how long.
_RECEIPT_POLL_S = 1.0
_RECEIPT_WATCH_S = 300.0
# A stream says something at least this often, so proxies keep it open.
_KEEPALIVE_S = 15.0
_MAX_FORM_FIELDS = 8


@dataclass
class Identity:
    """How citizens sign in: the development step, or OpenID Connect."""

    assertions: AssertionSource
    dev: DevAssertions | None = None
    dev_citizens: tuple[tuple[str, str], ...] = ()  # (sub, name)
    oidc: Any = None  # an Authlib Starlette client when signing in by OIDC


class _RefusedError(Exception):
    """A gateway call failed: the page says so in words, with this HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _refusal(exc: GatewayError) -> _RefusedError:
    code = exc.code
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return _RefusedError("error_unavailable", 503)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return _RefusedError("error_busy", 503)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return _RefusedError("error_identity", 401)
    if code in (
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    ):
        return _RefusedError("error_rejected", 400)
    return _RefusedError("error_generic", 502)


class PortalApp:
    """The portal: build it, then serve :attr:`asgi` (or call it: it is ASGI).

    Args:
        client: the gateway client (mutual TLS, the portal's certificate).
        identity: how citizens sign in and where assertions come from.
        sessions: the session store.
        lookup_timeout_s: the deadline of one lookup.
        call_timeout_s: the deadline of one unbind or receipt call.
        hsts: send Strict-Transport-Security (production, behind TLS).
    """

    def __init__(
        self,
        *,
        client: GatewayClient,
        identity: Identity,
        sessions: SessionStore,
        lookup_timeout_s: float = 30.0,
        call_timeout_s: float = 10.0,
        hsts: bool = False,
    ) -> None:
        self.client = client
        self.identity = identity
        self.sessions = sessions
        self.lookup_timeout_s = lookup_timeout_s
        self.call_timeout_s = call_timeout_s
        self.hsts = hsts
        self.templates = Environment(
            loader=FileSystemLoader(_HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        own = SessionPages(self)
        routes = [
            Route("/", self.start, methods=["GET"]),
            Route("/healthz", self.health, methods=["GET"]),
            Route("/signin", own.signin, methods=["GET"]),
            Route("/signin/dev", own.signin_dev, methods=["POST"]),
            Route("/signin/oidc", own.signin_oidc, methods=["GET"]),
            Route("/signin/callback", own.signin_callback, methods=["GET"]),
            Route("/signout", own.signout, methods=["POST"]),
            Route("/language", own.language, methods=["POST"]),
            Route("/lookup", self.lookup, methods=["POST"]),
            Route("/results", self.results, methods=["GET"]),
            Route("/results/stream", self.results_stream, methods=["GET"]),
            Route("/confirm", self.confirm, methods=["POST"]),
            Route("/unbind", self.unbind, methods=["POST"]),
            Route("/receipts", self.receipts, methods=["GET"]),
            Route("/receipts/stream", self.receipts_stream, methods=["GET"]),
            Route("/before-cancel", self.before_cancel, methods=["GET", "POST"]),
            Route("/before-cancel/number", self.before_cancel_number, methods=["GET"]),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ]
        self._app = Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_error},  # type: ignore[dict-item]  # Starlette's handler type is a union it cannot narrow
        )
        self.asgi: ASGIApp = _SecurityMiddleware(self._app, self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi(scope, receive, send)

    # ------------------------------------------------------------ helpers

    def session(self, request: Request) -> Session:
        session: Session = request.state.session
        return session

    def t(self, request: Request) -> Translator:
        return translator(request.cookies.get(LANG_COOKIE))

    def render(
        self, request: Request, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse:
        session = self.session(request)
        t = self.t(request)
        notice = session.notice
        session.notice = ""
        html = self.templates.get_template(template).render(
            t=t,
            csrf=session.csrf,
            signed_in=session.citizen is not None,
            dev_mode=self.identity.dev is not None,
            path=request.url.path,
            notice=t(notice) if notice else "",
            **values,
        )
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def fragment(self, request: Request, template: str, **values: Any) -> str:
        """A part of a page, for a stream to send (the same template the page includes)."""
        session = self.session(request)
        return self.templates.get_template(template).render(
            t=self.t(request), csrf=session.csrf, **values
        )

    async def form(self, request: Request) -> FormData:
        """The posted form, after its CSRF token and origin are checked (403 otherwise)."""
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            host = origin.split("://", 1)[-1]
            if host != request.headers.get("host"):
                raise HTTPException(403, "csrf")
        form = await request.form(max_files=0, max_fields=_MAX_FORM_FIELDS)
        token = form.get("csrf")
        if not isinstance(token, str) or not secrets.compare_digest(
            token.encode(), self.session(request).csrf.encode()
        ):
            raise HTTPException(403, "csrf")
        return form

    def citizen(self, request: Request) -> Citizen | None:
        return self.session(request).citizen

    def needs_sign_in(self, request: Request) -> Response | None:
        if self.citizen(request) is None:
            return RedirectResponse("/signin", status_code=303)
        return None

    async def assertion_for(self, citizen: Citizen) -> str:
        try:
            return await self.identity.assertions.assertion(citizen)
        except SignInRequiredError:
            raise _RefusedError("error_identity", 401) from None

    def refused(self, request: Request, refusal: _RefusedError) -> HTMLResponse:
        if refusal.status == 401:
            self.session(request).end()
        return self.render(
            request, "error.html", status=refusal.status, message=self.t(request)(refusal.message)
        )

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        t = self.t(request)
        if exc.status_code == 403:
            return self.render(
                request, "error.html", status=403, title=t("csrf_title"), message=t("csrf_body")
            )
        if exc.status_code == 404:
            return self.render(request, "error.html", status=404, message=t("not_found"))
        return self.render(
            request, "error.html", status=exc.status_code, message=t("error_generic")
        )

    # ------------------------------------------------------------ pages

    async def health(self, request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    async def start(self, request: Request) -> Response:
        session = self.session(request)
        return self.render(request, "start.html", has_lookup=session.lookup is not None)

    # ------------------------------------------------------------ lookup

    async def lookup(self, request: Request) -> Response:
        await self.form(request)
        if (redirect := self.needs_sign_in(request)) is not None:
            return redirect
        session = self.session(request)
        citizen = session.citizen
        assert citizen is not None
        if session.lookup is not None:
            session.lookup.cancel()
        session.actions.clear()
        session.lookup = start_lookup(
            self.client,
            lambda: self.identity.assertions.assertion(citizen),
            timeout=self.lookup_timeout_s,
        )
        return RedirectResponse("/results", status_code=303)

    def _results_values(self, request: Request, state: LookupState) -> dict[str, Any]:
        view = results_view(self.session(request), state, self.t(request))
        return {"view": view, "error_text": self._lookup_error(request, state)}

    def _lookup_error(self, request: Request, state: LookupState) -> str:
        if not state.error:
            return ""
        t = self.t(request)
        code = getattr(grpc.StatusCode, state.error, None)
        message = (
            _refusal(GatewayError(code, "")).message
            if isinstance(code, grpc.StatusCode)
            else "error_generic"
        )
        return t("results_failed", reason=t(message))

    async def results(self, request: Request) -> Response:
        if (redirect := self.needs_sign_in(request)) is not None:
            return redirect
        session = self.session(request)
        state = session.lookup
        if state is None:
            return RedirectResponse("/", status_code=303)
        if _identity_lost(state):
            # The identity service or the gateway no longer vouches for the
            # citizen: the session ends, and they are asked to sign in again.
            session.end()
            session.notice = "error_identity"
            return RedirectResponse("/signin", status_code=303)
        return self.render(request, "results.html", **self._results_values(request, state))

    async def results_stream(self, request: Request) -> Response:
        session = self.session(request)
        state = session.lookup
        if session.citizen is None or state is None:
            raise HTTPException(404)

        async def events() -> AsyncIterator[str]:
            seen = -1
            while session.citizen is not None and session.lookup is state:
                if _identity_lost(state):
                    # The page reloads, and the results page ends the session.
                    yield _event("update", {"reload": True, "done": True})
                    return
                if state.version != seen:
                    seen = state.version
                    values = self._results_values(request, state)
                    html = self.fragment(request, "_results.html", **values)
                    yield _event(
                        "update",
                        {"html": html, "status": values["view"].progress, "done": state.done},
                    )
                    if state.done:
                        return
                else:
                    yield ": keep-alive\n\n"
                await state.changed(seen, _KEEPALIVE_S)

        return _sse(events())

    # ------------------------------------------------------------ unbind

    def _action(self, request: Request, form: FormData) -> Action | None:
        key = form.get("action")
        return self.session(request).actions.get(key) if isinstance(key, str) else None

    async def confirm(self, request: Request) -> Response:
        form = await self.form(request)
        if (redirect := self.needs_sign_in(request)) is not None:
            return redirect
        action = self._action(request, form)
        if action is None:
            return self.render(
                request, "error.html", status=400, message=self.t(request)("item_gone")
            )
        back = form.get("back")
        return self.render(
            request,
            "confirm.html",
            action=action,
            number=show_number(action.msisdn),
            back="/before-cancel/number" if back == "cancel" else "/results",
        )

    async def unbind(self, request: Request) -> Response:
        form = await self.form(request)
        if (redirect := self.needs_sign_in(request)) is not None:
            return redirect
        session = self.session(request)
        citizen = session.citizen
        assert citizen is not None
        action = self._action(request, form)
        if action is None:
            return self.render(
                request, "error.html", status=400, message=self.t(request)("item_gone")
            )
        try:
            for handle in action.handles:
                token = await self.assertion_for(citizen)
                try:
                    ticket = await self.client.unbind(token, handle, timeout=self.call_timeout_s)
                except GatewayError as exc:
                    log.warning("unbind_refused", code=exc.code.name)
                    raise _refusal(exc) from None
                if all(t.ticket_id != ticket.ticket_id for t in session.tickets):
                    session.tickets.append(TicketRef(ticket.ticket_id, action))
        except _RefusedError as refusal:
            return self.refused(request, refusal)
        log.info("unbind_asked", kind=action.kind, handles=len(action.handles))
        return RedirectResponse("/receipts", status_code=303)

    async def _read_receipts(self, session: Session) -> dict[str, Receipt | None]:
        """The receipts of the session's tickets; final ones from memory, others asked anew."""
        citizen = session.citizen
        if citizen is None:
            return {}

        async def one(ticket_id: str) -> tuple[str, Receipt | None]:
            known = session.receipts.get(ticket_id)
            if known is not None and known.final:
                return ticket_id, known
            try:
                token = await self.identity.assertions.assertion(citizen)
                receipt = await self.client.get_unbind(
                    token, ticket_id, timeout=self.call_timeout_s
                )
            except (GatewayError, SignInRequiredError) as exc:
                code = exc.code.name if isinstance(exc, GatewayError) else "identity"
                log.warning("receipt_unreadable", code=code)
                return ticket_id, known
            session.receipts[ticket_id] = receipt
            return ticket_id, receipt

        pairs = await asyncio.gather(*(one(t.ticket_id) for t in session.tickets))
        return dict(pairs)

    async def receipts(self, request: Request) -> Response:
        if (redirect := self.needs_sign_in(request)) is not None:
            return redirect
        session = self.session(request)
        rows = receipt_rows(session, await self._read_receipts(session), self.t(request))
        return self.render(request, "receipts.html", rows=rows, final=all(r.final for r in rows))

    async def receipts_stream(self, request: Request) -> Response:
        session = self.session(request)
        if session.citizen is None:
            raise HTTPException(404)

        async def events() -> AsyncIterator[str]:
            last = ""
            ends = time.monotonic() + _RECEIPT_WATCH_S
            while session.citizen is not None and time.monotonic() < ends:
                rows = receipt_rows(session, await self._read_receipts(session), self.t(request))
                final = all(r.final for r in rows)
                html = self.fragment(request, "_receipts.html", rows=rows)
                if html != last:
                    last = html
                    # The live region reads out the newest receipt's status.
                    status = rows[0].status if rows else ""
                    yield _event("update", {"html": html, "status": status, "done": final})
                else:
                    yield ": keep-alive\n\n"
                if final:
                    return
                await asyncio.sleep(_RECEIPT_POLL_S)

        return _sse(events())

    # ------------------------------------------------------------ before you cancel

    def _cancellable(self, session: Session) -> list[str]:
        """The numbers in use found by the session's finished lookup."""
        state = session.lookup
        if state is None or state.started is None or not state.done:
            return []
        return [n.msisdn for n in state.started.numbers if n.current]

    async def before_cancel(self, request: Request) -> Response:
        form = await self.form(request) if request.method == "POST" else None
        if (redirect := self.needs_sign_in(request)) is not None:
            return redirect
        session = self.session(request)
        numbers = self._cancellable(session)
        if form is not None:
            # The number is chosen by its position in the list, never named in the request.
            choice = form.get("number")
            chosen = next((n for i, n in enumerate(numbers) if f"n{i}" == choice), None)
            if chosen is None:
                raise HTTPException(400)
            session.cancel_number = chosen
            return RedirectResponse("/before-cancel/number", status_code=303)
        state = session.lookup
        return self.render(
            request,
            "before_cancel.html",
            ready=state is not None and state.done and not state.error,
            numbers=[(f"n{i}", show_number(n)) for i, n in enumerate(numbers)],
        )

    async def before_cancel_number(self, request: Request) -> Response:
        if (redirect := self.needs_sign_in(request)) is not None:
            return redirect
        session = self.session(request)
        state = session.lookup
        if state is None or not session.cancel_number:
            return RedirectResponse("/before-cancel", status_code=303)
        view = results_view(session, state, self.t(request), msisdn=session.cancel_number)
        todo = sum(not r.asked for r in [*view.left_behind, *view.mine]) + sum(
            not p.asked for p in view.previous
        )
        unknown = [p.provider for p in view.providers if not p.ok]
        return self.render(
            request,
            "before_cancel_number.html",
            view=view,
            number=show_number(session.cancel_number),
            todo=todo,
            unknown=unknown,
        )


def _identity_lost(state: LookupState) -> bool:
    return state.error == grpc.StatusCode.UNAUTHENTICATED.name


def _event(name: str, data: Mapping[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _sse(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


class _SecurityMiddleware:
    """Loads the session from its cookie, sets the cookie when the id changes, and
    adds the security headers to every response."""

    def __init__(self, app: ASGIApp, portal: PortalApp) -> None:
        self.app = app
        self.portal = portal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookies = SimpleCookie()
        for name, value in scope["headers"]:
            if name == b"cookie":
                with contextlib.suppress(Exception):
                    cookies.load(value.decode("latin-1"))
        morsel = cookies.get(SESSION_COOKIE)
        sent_id = morsel.value if morsel is not None else None
        store = self.portal.sessions
        session, expired = store.get(sent_id)
        if session is None:
            session = store.new()
            if expired:
                session.notice = "session_ended"
        state = scope.setdefault("state", {})
        state["session"] = session
        # Authlib keeps its OAuth state in Starlette's request.session.
        scope["session"] = session.oauth

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(_HEADERS)
                if self.portal.hsts:
                    headers.append(_HSTS)
                current: Session = state["session"]
                if current.id != sent_id:
                    cookie = (
                        f"{SESSION_COOKIE}={current.id}; Path=/; Secure; HttpOnly; SameSite=Lax"
                    )
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
