"""Who is signed in to the staff console, and how recently they proved it.

The session cookie holds only a random token (``HttpOnly``, ``SameSite=Strict``, ``Secure``
and ``__Host-`` named when ``NSER_STAFF_ORIGIN`` is https); the session itself lives in
PostgreSQL (:mod:`app.services.staff.sessions`) and is read on every request, so that
sign-out, idle and absolute expiry, and an administrator disabling the member hold at
the next request.

- ``StaffSessionDep``: the signed-in member, or "sign in first" (``SignInRequired``);
- ``AdminDep``: the same, holding the ``admin`` role (else a 403 page);
- ``require_recent_verification(session, settings, back=…)``: a sensitive action
  (approve, reject, sign, suspend, resume, revoke, close a programme, change roles, remove a
  passkey…) needs a passkey verification within ``NSER_STAFF_STEP_UP_SECONDS``; older, it
  raises ``StepUpRequired`` and the member is sent to ``/staff/step-up``, then ``back``.
  ``RecentlyVerifiedDep`` is the same as a dependency, coming back to the page asked for.

``StaffRoute`` (the pages' route class) answers those two as redirects (303) to the
sign-in or step-up page with a ``next`` that brings the member back; the JSON steps of the
ceremonies get them as problem+json (401 ``signed_out``, 403 ``step_up``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.responses import RedirectResponse, Response

from app.deps import PoolDep, SettingsDep
from app.errors import Forbidden, SignInFailed
from app.services.staff import sessions
from app.services.staff.sessions import StaffSession
from app.settings import Settings
from app.web.render import page, web_context
from app.web.site import WebRoute

HOME = "/staff/"
SIGN_IN = "/staff/sign-in"
STEP_UP = "/staff/step-up"
# A path of the console, as a place to come back to (no host, no scheme, no "//").
_LOCAL = re.compile(r"/staff/[A-Za-z0-9_./?=&%-]{0,400}")


def cookie_name(settings: Settings) -> str:
    # The __Host- prefix makes a browser refuse the cookie unless it is Secure, host-only
    # and for the whole path: no subdomain or plain-http page can set or shadow it.
    return "__Host-nser_staff" if settings.staff_origin_secure else "nser_staff"


def set_session_cookie(response: Response, settings: Settings, token: str) -> None:
    """The session's cookie: no Max-Age (the server decides when a session ends)."""
    response.set_cookie(
        cookie_name(settings),
        token,
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings.staff_origin_secure,
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        cookie_name(settings),
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings.staff_origin_secure,
    )


def local_next(value: str | None) -> str:
    """``value`` if it is a page of the console to return to, else the landing page."""
    if value and _LOCAL.fullmatch(value) and "//" not in value and "/.." not in value:
        return value
    return HOME


class SignInRequired(SignInFailed):
    """No live session: sign in (again). ``ended``: a cookie was presented that no longer
    opens a session (expired, ended, or its member disabled)."""

    def __init__(self, *, ended: bool) -> None:
        super().__init__("sign in to the staff console first", extra={"code": "signed_out"})
        self.ended = ended


class StepUpRequired(Forbidden):
    """The last passkey verification is too old for this action: verify again, then go
    ``back``."""

    def __init__(self, back: str) -> None:
        back = local_next(back)
        super().__init__(
            "confirm it is you with your passkey again",
            extra={"code": "step_up", "step_up": f"{STEP_UP}?{urlencode({'next': back})}"},
        )
        self.back = back


class NotAllowed(Exception):
    """A signed-in member whose roles do not open the page (a 403 page saying so)."""

    def __init__(self, session: StaffSession) -> None:
        super().__init__("not allowed")
        self.session = session


async def current_session(request: Request, pool: PoolDep, settings: SettingsDep) -> StaffSession:
    token = request.cookies.get(cookie_name(settings))
    async with pool.acquire() as conn:
        session = await sessions.load(
            conn,
            token,
            idle_seconds=settings.staff_idle_timeout_seconds,
            max_seconds=settings.staff_session_max_seconds,
        )
    if session is None:
        raise SignInRequired(ended=token is not None)
    # The member's budgets are their staff client's: the console's reads of personal data
    # and analyses count with the API's (the rate limits key on the client id).
    request.state.client_id = session.staff_id
    return session


StaffSessionDep = Annotated[StaffSession, Depends(current_session)]


async def current_admin(session: StaffSessionDep) -> StaffSession:
    if "admin" not in session.roles:
        raise NotAllowed(session)
    return session


AdminDep = Annotated[StaffSession, Depends(current_admin)]


def require_recent_verification(session: StaffSession, settings: Settings, *, back: str) -> None:
    """Raise ``StepUpRequired`` (back to ``back`` after) unless the member verified a passkey
    within ``NSER_STAFF_STEP_UP_SECONDS``."""
    if not session.verified_within(settings.staff_step_up_seconds):
        raise StepUpRequired(back)


async def recently_verified(
    request: Request, session: StaffSessionDep, settings: SettingsDep
) -> StaffSession:
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    require_recent_verification(session, settings, back=back)
    return session


RecentlyVerifiedDep = Annotated[StaffSession, Depends(recently_verified)]


def _here(request: Request) -> str:
    """Where to come back to after signing in: this page if it is one (a GET)."""
    if request.method != "GET":
        return HOME
    query = request.url.query
    return local_next(request.url.path + (f"?{query}" if query else ""))


def _lang(request: Request) -> dict[str, str]:
    lang = request.query_params.get("lang")
    return {"lang": lang} if lang in ("en", "ur") else {}


class _SessionRedirects(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def redirecting(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as exc:
                query = {"next": _here(request), **_lang(request)}
                if exc.ended:
                    query["ended"] = "expired"
                response = RedirectResponse(f"{SIGN_IN}?{urlencode(query)}", status_code=303)
                if exc.ended:
                    clear_session_cookie(response, request.app.state.settings)
                return response
            except StepUpRequired as exc:
                query = {"next": exc.back, **_lang(request)}
                return RedirectResponse(f"{STEP_UP}?{urlencode(query)}", status_code=303)
            except NotAllowed as exc:
                web = await web_context(request, _lang(request).get("lang"))
                return page(web, "staff/not_allowed.html", status=403, member=exc.session)

        return redirecting


class StaffRoute(WebRoute, _SessionRedirects):
    """The console's pages: "sign in first" and "verify again" are redirects, every other
    failure a page in the member's language (``WebRoute``)."""
