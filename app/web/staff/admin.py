"""Staff members, for administrators (``/staff/admin/staff…``, role ``admin``).

List the members; create one (its one-time enrolment link and API credentials are shown
once); and on a member's page: change roles, disable or enable, turn the API credentials
off or on, issue a fresh enrolment link, remove a passkey. The service
(:mod:`app.services.staff.accounts`) audits every change.

The changes that widen access or could lock someone out — creating a member, roles,
enabling, credentials on, an enrolment link, removing a passkey — need a recent passkey
verification (``require_recent_verification``); disabling and turning credentials off
never wait for one: cutting access must be quick.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.deps import PoolDep, SettingsDep
from app.errors import Conflict
from app.models.requests import STAFF_ROLES
from app.services.staff import accounts
from app.services.staff.sessions import StaffSession
from app.strict import has_control
from app.web.i18n import N_
from app.web.render import WebContext, WebDep, WebError, page
from app.web.staff.auth import (
    AdminDep,
    RecentlyVerifiedDep,
    StaffRoute,
    require_recent_verification,
)
from app.web.staff.forms import read_form
from app.web.staff.routes import ROLE_LABELS

LIST = "/staff/admin/staff"
router = APIRouter(prefix=LIST, route_class=StaffRoute, include_in_schema=False)

StaffId = Annotated[str, Path(pattern=r"^nss_[0-9a-f]{24}$", description="the staff id")]
DONE = {
    "roles": N_("The roles were changed. They apply from the member's next request."),
    "disabled": N_(
        "The staff member was disabled: their console sessions have ended and their API "
        "tokens no longer work."
    ),
    "enabled": N_("The staff member was enabled again."),
    "credentials_off": N_("The API credentials were turned off: no token works any more."),
    "credentials_on": N_("The API credentials were turned on again."),
    "passkey_removed": N_("The passkey was removed; the sessions it opened have ended."),
}
Done = Annotated[str | None, Query(pattern="^(" + "|".join(DONE) + ")$")]
ROLES_ONLY = frozenset({"role"})


def _endpoint(request: Request) -> str:
    """The audit's endpoint: the route's template, with the switch named (never an id)."""
    route = request.scope.get("route")
    path: str = getattr(route, "path", request.url.path)
    switch = request.path_params.get("switch")
    if switch in SWITCHES:
        path = path.replace("{switch}", switch)
    return f"{request.method} {path}"


async def _member_page(
    web: WebContext,
    pool: PoolDep,
    admin: StaffSession,
    staff_id: str,
    *,
    done: str | None = None,
    problem: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    async with pool.acquire() as conn:
        person = await accounts.get(conn, staff_id)
        passkeys = await accounts.passkeys_of(conn, staff_id)
    return page(
        web,
        "staff/admin/member.html",
        status=status,
        member=admin,
        person=person,
        passkeys=passkeys,
        roles=STAFF_ROLES,
        role_labels=ROLE_LABELS,
        done=DONE.get(done or ""),
        problem=problem,
    )


def _back(staff_id: str, done: str, web: WebContext) -> RedirectResponse:
    return RedirectResponse(f"{LIST}/{staff_id}?done={done}&lang={web.lang}", status_code=303)


def _refusal(web: WebContext, exc: Conflict) -> str:
    messages = {
        "self_disable": N_("You cannot disable yourself. Ask another administrator."),
        "self_demote": N_("You cannot give up your own administrator role."),
        "disabled": N_("Enable the staff member first."),
    }
    message = messages.get(str(exc.extra.get("code")))
    return web.gettext(message) if message else exc.detail


@router.get("", response_class=HTMLResponse)
async def list_staff(web: WebDep, admin: AdminDep, pool: PoolDep) -> HTMLResponse:
    """Every staff member: roles, whether enabled, API credentials, passkeys, last sign-in."""
    async with pool.acquire() as conn:
        members = await accounts.list_members(conn)
    return page(
        web, "staff/admin/list.html", member=admin, members=members, role_labels=ROLE_LABELS
    )


def _new_form(
    web: WebContext,
    admin: StaffSession,
    *,
    name: str = "",
    chosen: list[str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return page(
        web,
        "staff/admin/new.html",
        status=status,
        member=admin,
        roles=STAFF_ROLES,
        role_labels=ROLE_LABELS,
        name=name,
        chosen=chosen or [],
        errors=errors or {},
    )


@router.get("/new", response_class=HTMLResponse)
async def new_staff(web: WebDep, admin: AdminDep, _: RecentlyVerifiedDep) -> HTMLResponse:
    """The form to add a staff member (asks for the passkey first if it was long ago, so
    that nothing typed is lost to the step-up)."""
    return _new_form(web, admin)


@router.post("/new", response_class=HTMLResponse)
async def create_staff(
    request: Request, web: WebDep, admin: AdminDep, pool: PoolDep, settings: SettingsDep
) -> HTMLResponse:
    """Create the member; show its enrolment link and API credentials once."""
    form = await read_form(request, web, frozenset({"name", "role"}), repeatable=ROLES_ONLY)
    require_recent_verification(admin, settings, back=f"{LIST}/new")
    name = " ".join(form.get("name", [""])[0].split())
    chosen = form.get("role", [])
    if any(role not in STAFF_ROLES for role in chosen):
        raise WebError(422, web.gettext("The form sent fields it does not have."))
    errors = {}
    if not name or len(name) > 200 or has_control(name):
        errors["name"] = web.gettext("Enter the staff member's name (at most 200 characters).")
    if not chosen:
        errors["role"] = web.gettext("Choose at least one role.")
    if errors:
        return _new_form(web, admin, name=name, chosen=chosen, errors=errors, status=422)
    async with pool.acquire() as conn:
        made = await accounts.create(
            conn,
            name,
            chosen,
            actor=admin,
            endpoint=_endpoint(request),
            origin=settings.staff_origin,
            link_hours=settings.staff_enrol_link_hours,
        )
    return page(web, "staff/admin/created.html", member=admin, made=made, name=name)


@router.get("/{staff_id}", response_class=HTMLResponse)
async def staff_member(
    web: WebDep, admin: AdminDep, pool: PoolDep, staff_id: StaffId, done: Done = None
) -> HTMLResponse:
    """One member: roles, state, API credentials, passkeys, and what an admin may change."""
    return await _member_page(web, pool, admin, staff_id, done=done)


@router.post("/{staff_id}/roles", response_class=HTMLResponse)
async def change_roles(
    request: Request,
    web: WebDep,
    admin: AdminDep,
    pool: PoolDep,
    settings: SettingsDep,
    staff_id: StaffId,
) -> Response:
    """Replace the member's roles (needs a recent passkey verification)."""
    form = await read_form(request, web, ROLES_ONLY, repeatable=ROLES_ONLY)
    require_recent_verification(admin, settings, back=f"{LIST}/{staff_id}")
    chosen = form.get("role", [])
    if any(role not in STAFF_ROLES for role in chosen):
        raise WebError(422, web.gettext("The form sent fields it does not have."))
    if not chosen:
        problem = web.gettext("Choose at least one role.")
        return await _member_page(web, pool, admin, staff_id, problem=problem, status=422)
    try:
        async with pool.acquire() as conn:
            await accounts.set_roles(
                conn, staff_id, chosen, actor=admin, endpoint=_endpoint(request)
            )
    except Conflict as exc:
        problem = _refusal(web, exc)
        return await _member_page(web, pool, admin, staff_id, problem=problem, status=409)
    return _back(staff_id, "roles", web)


async def _switch(
    request: Request,
    web: WebContext,
    admin: StaffSession,
    pool: PoolDep,
    staff_id: str,
    change: str,
) -> Response:
    await read_form(request, web, frozenset(), repeatable=frozenset())
    endpoint = _endpoint(request)
    if change in ("enabled", "credentials_on"):  # widening access: the passkey again
        require_recent_verification(admin, request.app.state.settings, back=f"{LIST}/{staff_id}")
    try:
        async with pool.acquire() as conn:
            if change in ("disabled", "enabled"):
                await accounts.set_disabled(
                    conn, staff_id, change == "disabled", actor=admin, endpoint=endpoint
                )
            else:
                await accounts.set_credentials(
                    conn, staff_id, change == "credentials_on", actor=admin, endpoint=endpoint
                )
    except Conflict as exc:
        problem = _refusal(web, exc)
        return await _member_page(web, pool, admin, staff_id, problem=problem, status=409)
    return _back(staff_id, change, web)


@router.post("/{staff_id}/enrol-link", response_class=HTMLResponse)
async def issue_enrolment_link(
    request: Request,
    web: WebDep,
    admin: AdminDep,
    pool: PoolDep,
    settings: SettingsDep,
    staff_id: StaffId,
) -> Response:
    """A fresh one-time link to register a passkey, shown once (needs a recent
    verification: whoever holds the link can add a passkey to the member)."""
    await read_form(request, web, frozenset(), repeatable=frozenset())
    require_recent_verification(admin, settings, back=f"{LIST}/{staff_id}")
    try:
        async with pool.acquire() as conn:
            link = await accounts.issue_link(
                conn,
                staff_id,
                actor=admin,
                endpoint=_endpoint(request),
                origin=settings.staff_origin,
                hours=settings.staff_enrol_link_hours,
            )
            person = await accounts.get(conn, staff_id)
    except Conflict as exc:
        problem = _refusal(web, exc)
        return await _member_page(web, pool, admin, staff_id, problem=problem, status=409)
    return page(web, "staff/admin/link.html", member=admin, person=person, link=link)


@router.post("/{staff_id}/passkeys/{passkey_id}/remove", response_class=HTMLResponse)
async def remove_passkey(
    request: Request,
    web: WebDep,
    admin: AdminDep,
    pool: PoolDep,
    settings: SettingsDep,
    staff_id: StaffId,
    passkey_id: uuid.UUID,
) -> Response:
    """Remove one of the member's passkeys (needs a recent passkey verification)."""
    await read_form(request, web, frozenset(), repeatable=frozenset())
    require_recent_verification(admin, settings, back=f"{LIST}/{staff_id}")
    async with pool.acquire() as conn:
        await accounts.remove_passkey(
            conn, staff_id, passkey_id, actor=admin, endpoint=_endpoint(request)
        )
    return _back(staff_id, "passkey_removed", web)


# The switches, by the path segment their forms post to. Disabling a member ends their
# sessions and refuses their API tokens at once; turning credentials off leaves the console.
# Enabling a member or their credentials again needs a recent passkey verification.
SWITCHES = {
    "disable": "disabled",
    "enable": "enabled",
    "credentials-off": "credentials_off",
    "credentials-on": "credentials_on",
}
Switch = Annotated[
    Literal["disable", "enable", "credentials-off", "credentials-on"],
    Path(description="disable, enable, credentials-off or credentials-on"),
]


@router.post("/{staff_id}/{switch}", response_class=HTMLResponse)
async def switch_member(
    request: Request, web: WebDep, admin: AdminDep, pool: PoolDep, staff_id: StaffId, switch: Switch
) -> Response:
    """Disable or enable a member, or turn their API client credentials off or on."""
    return await _switch(request, web, admin, pool, staff_id, SWITCHES[switch])
