"""A session's own pages: sign in (development or OpenID Connect), sign out, language."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from onecert.portal._i18n import LANGUAGES
from onecert.portal._identity import Citizen

if TYPE_CHECKING:
    from onecert.portal._app import PortalApp

__all__ = ["LANG_COOKIE", "SessionPages"]

log = structlog.get_logger("onecert.portal")

LANG_COOKIE = "__Host-onecert-lang"
# The pages a GET shows: where the language switch may return to.
_PAGES = frozenset(
    ("/", "/signin", "/results", "/receipts", "/before-cancel", "/before-cancel/number")
)


class SessionPages:
    """Sign-in, sign-out and language routes, over the portal's rendering and sessions."""

    def __init__(self, app: PortalApp) -> None:
        self._app = app

    async def signin(self, request: Request) -> Response:
        if self._app.identity.dev is not None:
            return self._app.render(
                request, "signin_dev.html", citizens=self._app.identity.dev_citizens
            )
        return self._app.render(request, "signin_oidc.html")

    async def signin_dev(self, request: Request) -> Response:
        form = await self._app.form(request)
        dev = self._app.identity.dev
        sub = form.get("citizen")
        if dev is None:
            raise HTTPException(404)
        if not isinstance(sub, str) or not dev.knows(sub):
            return self._app.render(
                request,
                "signin_dev.html",
                status=400,
                citizens=self._app.identity.dev_citizens,
                error=self._app.t(request)("signin_failed"),
            )
        return self._signed_in(request, Citizen(sub=sub))

    def _signed_in(self, request: Request, citizen: Citizen) -> Response:
        session = self._app.session(request)
        session.end()
        session.citizen = citizen
        self._app.sessions.rotate(session)
        log.info("signed_in")
        return RedirectResponse("/", status_code=303)

    async def signin_oidc(self, request: Request) -> Response:
        if self._app.identity.oidc is None:
            raise HTTPException(404)
        redirect: Response = await self._app.identity.oidc.authorize_redirect(
            request, self._app.identity.oidc.portal_redirect_uri
        )
        return redirect

    async def signin_callback(self, request: Request) -> Response:
        oidc = self._app.identity.oidc
        if oidc is None:
            raise HTTPException(404)
        try:
            token = await oidc.authorize_access_token(request)
        except Exception as exc:  # noqa: BLE001 - any failure of the sign-in is "try again", logged by type
            log.warning("sign_in_failed", error=type(exc).__name__)
            self._app.session(request).notice = "signin_failed"
            return RedirectResponse("/signin", status_code=303)
        userinfo = token.get("userinfo") or {}
        sub = userinfo.get("sub")
        if not isinstance(sub, str) or not sub:
            self._app.session(request).notice = "signin_failed"
            return RedirectResponse("/signin", status_code=303)
        citizen = Citizen(
            sub=sub,
            access_token=str(token.get("access_token", "")),
            expires_at=float(token.get("expires_at") or 0),
        )
        return self._signed_in(request, citizen)

    async def signout(self, request: Request) -> Response:
        await self._app.form(request)
        self._app.sessions.drop(self._app.session(request))
        fresh = self._app.sessions.new()
        fresh.notice = "signed_out"
        request.state.session = fresh
        log.info("signed_out")
        return RedirectResponse("/", status_code=303)

    async def language(self, request: Request) -> Response:
        form = await self._app.form(request)
        lang = form.get("lang")
        back = form.get("back")
        # Back to the page the form was on if it is a page one can GET (a
        # confirmation is a POST's answer), and never anywhere else.
        target = back if back in _PAGES else "/"
        response = RedirectResponse(target, status_code=303)
        if isinstance(lang, str) and lang in LANGUAGES:
            response.set_cookie(
                LANG_COOKIE,
                lang,
                max_age=365 * 86400,
                path="/",
                secure=True,
                httponly=True,
                samesite="lax",
            )
        return response
