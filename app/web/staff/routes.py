"""Sign-in, enrolment, step-up and sign-out (``/staff/…``; "My work" is :mod:`.work`).

The pages are server-rendered; the passkey ceremonies run in ``static/passkeys.js``, which
calls the JSON steps below (``ceremonies``: ``…/options`` then ``…/verify``) and follows the
``redirect`` they answer. Their failures are problem+json with a ``code`` the script turns
into a message of the page, already in the member's language.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from app.deps import PoolDep, SettingsDep
from app.rate_limit import client_ip
from app.schemas.staff import AssertionIn, EnrolAnswerIn, EnrolOptionsIn, Nothing
from app.services.staff import ceremonies as ceremony
from app.services.staff import sessions
from app.services.staff.ceremonies import RelyingParty
from app.web.i18n import N_
from app.web.render import WebDep, page
from app.web.staff.auth import (
    SIGN_IN,
    StaffRoute,
    StaffSessionDep,
    clear_session_cookie,
    cookie_name,
    local_next,
    set_session_cookie,
)
from app.web.staff.forms import read_form, read_json

router = APIRouter(route_class=StaffRoute, include_in_schema=False)
ceremonies = APIRouter(prefix="/staff", include_in_schema=False)

# The roles as the console names them (DESIGN: NSER-MU officers, the Data Sharing
# Committee, the Secretary, M&E, and the staff administrators).
ROLE_LABELS = {
    "officer": N_("Officer (NSER-MU)"),
    "committee": N_("Data Sharing Committee"),
    "secretary": N_("Secretary"),
    "me": N_("Monitoring and evaluation"),
    "admin": N_("Staff administrator"),
}
NO_STORE = {"Cache-Control": "no-store"}


def _options(json_text: str) -> Response:
    return Response(json_text, media_type="application/json", headers=NO_STORE)


# --- pages ------------------------------------------------------------------------------


@router.get("/staff/sign-in", response_class=HTMLResponse)
async def sign_in_page(
    request: Request,
    web: WebDep,
    pool: PoolDep,
    settings: SettingsDep,
    next_: Annotated[str | None, Query(alias="next", max_length=500)] = None,
    ended: Annotated[str | None, Query(pattern="^(expired|signed_out)$")] = None,
) -> Response:
    """Sign in with a passkey (the browser offers the registry's passkeys it holds)."""
    go_on = local_next(next_)
    token = request.cookies.get(cookie_name(settings))
    if token is not None:
        async with pool.acquire() as conn:
            live = await sessions.load(
                conn,
                token,
                idle_seconds=settings.staff_idle_timeout_seconds,
                max_seconds=settings.staff_session_max_seconds,
            )
        if live is not None:  # signed in already: on to the page asked for
            return RedirectResponse(go_on, status_code=303)
    return page(
        web,
        "staff/sign_in.html",
        member=None,
        next=go_on,
        ended=ended,
        origin=settings.staff_origin,
    )


@router.get("/staff/enrol", response_class=HTMLResponse)
async def enrol_page(web: WebDep, settings: SettingsDep) -> HTMLResponse:
    """Register a passkey with a one-time link (its token is the address's fragment)."""
    return page(web, "staff/enrol.html", member=None, origin=settings.staff_origin)


@router.get("/staff/step-up", response_class=HTMLResponse)
async def step_up_page(
    web: WebDep,
    session: StaffSessionDep,
    settings: SettingsDep,
    next_: Annotated[str | None, Query(alias="next", max_length=500)] = None,
) -> HTMLResponse:
    """Confirm it is you with your passkey again, then go on to the action."""
    return page(
        web,
        "staff/step_up.html",
        member=session,
        next=local_next(next_),
        origin=settings.staff_origin,
    )


@router.post("/staff/sign-out")
async def sign_out(
    request: Request, web: WebDep, pool: PoolDep, settings: SettingsDep
) -> RedirectResponse:
    """End this browser's session at once (the form carries the CSRF field)."""
    await read_form(request, web, frozenset(), repeatable=frozenset())
    async with pool.acquire() as conn:
        session = await sessions.load(
            conn,
            request.cookies.get(cookie_name(settings)),
            idle_seconds=settings.staff_idle_timeout_seconds,
            max_seconds=settings.staff_session_max_seconds,
        )
        if session is not None:
            await sessions.sign_out(conn, session, client=client_ip(request))
    response = RedirectResponse(f"{SIGN_IN}?ended=signed_out&lang={web.lang}", status_code=303)
    clear_session_cookie(response, settings)
    return response


# --- the ceremonies' JSON steps (problem+json on failure) -------------------------------


@ceremonies.post("/sign-in/options")
async def sign_in_options(
    request: Request, web: WebDep, pool: PoolDep, settings: SettingsDep
) -> Response:
    """Options for navigator.credentials.get: any passkey of this registry."""
    await read_json(request, web, Nothing)
    async with pool.acquire() as conn:
        return _options(await ceremony.begin_sign_in(conn, RelyingParty.of(settings)))


@ceremonies.post("/sign-in/verify")
async def sign_in_verify(
    request: Request, web: WebDep, pool: PoolDep, settings: SettingsDep
) -> JSONResponse:
    """Verify the assertion; a new session (its cookie) and where to go."""
    body = await read_json(request, web, AssertionIn)
    async with pool.acquire() as conn:
        token, _ = await ceremony.finish_sign_in(
            conn, RelyingParty.of(settings), body.credential, client=client_ip(request)
        )
        # A sign-in replaces this browser's earlier session, if it had one.
        await sessions.end_by_token(conn, request.cookies.get(cookie_name(settings)))
    response = JSONResponse({"redirect": local_next(body.next)}, headers=NO_STORE)
    set_session_cookie(response, settings, token)
    return response


@ceremonies.post("/enrol/options")
async def enrol_options(
    request: Request, web: WebDep, pool: PoolDep, settings: SettingsDep
) -> Response:
    """Options for navigator.credentials.create, for the member of the link."""
    body = await read_json(request, web, EnrolOptionsIn)
    async with pool.acquire() as conn:
        return _options(await ceremony.begin_enrolment(conn, RelyingParty.of(settings), body.token))


@ceremonies.post("/enrol/verify")
async def enrol_verify(
    request: Request, web: WebDep, pool: PoolDep, settings: SettingsDep
) -> JSONResponse:
    """Register the new passkey and use the link up."""
    body = await read_json(request, web, EnrolAnswerIn)
    async with pool.acquire() as conn:
        await ceremony.finish_enrolment(
            conn,
            RelyingParty.of(settings),
            body.token,
            body.credential,
            body.label,
            client=client_ip(request),
        )
    return JSONResponse({"redirect": SIGN_IN}, headers=NO_STORE)


@ceremonies.post("/step-up/options")
async def step_up_options(
    request: Request, web: WebDep, pool: PoolDep, settings: SettingsDep, session: StaffSessionDep
) -> Response:
    """Options for navigator.credentials.get: the member's own passkeys."""
    await read_json(request, web, Nothing)
    async with pool.acquire() as conn:
        return _options(await ceremony.begin_step_up(conn, RelyingParty.of(settings), session))


@ceremonies.post("/step-up/verify")
async def step_up_verify(
    request: Request, web: WebDep, pool: PoolDep, settings: SettingsDep, session: StaffSessionDep
) -> JSONResponse:
    """Verify the assertion: the session's last verification is now; back to the action."""
    body = await read_json(request, web, AssertionIn)
    async with pool.acquire() as conn:
        await ceremony.finish_step_up(
            conn, RelyingParty.of(settings), session, body.credential, client=client_ip(request)
        )
    return JSONResponse({"redirect": local_next(body.next)}, headers=NO_STORE)
