"""Programmes in the staff console (``/staff/programmes…``, scope ``programmes:manage``:
officers and staff administrators).

- the list, and a new programme (its first rule version);
- a programme's page: its rule versions, the agreements that name it, close (after a
  recent passkey verification) and reopen;
- the rule editor of a new version, which PREVIEWS the version before it is saved: the
  households entering and leaving eligibility against the rule in force, by province. A
  preview is a simulation queued for the worker (:mod:`app.services.targeting.simulation`,
  ``submit``: read-only, on one snapshot, linear in the registry, so never run inside the
  web request) by members who may run simulations (``simulations:run``), audited as a
  staff action. "Preview" posts the form and is sent to the editor again
  (``?preview=<simulation id>``), filled with the candidate rule, showing the run's
  progress until it is done, then the table; "Save" creates the version.

The writes are the staff API's (:mod:`app.services.programmes.store`, ``status``), audited
there; 403/409 are shown on the page with the reason.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import ValidationError
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.auth.scopes import Scope
from app.deps import PoolDep
from app.errors import Conflict, NotFound, ValidationFailed
from app.schemas.base import UUID_RE
from app.schemas.programmes import ProgrammeIn, RuleVersionIn
from app.services.audit import trail as audit
from app.services.programmes import rules, status, store
from app.services.staff.sessions import StaffSession
from app.services.targeting import simulation
from app.web.i18n import N_
from app.web.render import WebContext, WebDep, page
from app.web.staff.auth import StaffRoute, StaffSessionDep, require_recent_verification
from app.web.staff.forms import read_form

LIST = "/staff/programmes"
router = APIRouter(prefix=LIST, route_class=StaffRoute, include_in_schema=False)

ProgrammeRef = Annotated[
    str, Path(pattern=rf"^({UUID_RE}|[a-z0-9][a-z0-9_-]{{1,39}})$", description="id or code")
]
RAISED_ROWS = 3
CONDITIONS = {
    "has_disabled_member": N_("A member with a disability"),
    "has_ever_married_woman": N_("An ever-married woman"),
    "has_child_under_5": N_("A child under 5"),
    "has_school_age_child": N_("A child of school age (5 to 16)"),
    "has_child": N_("A child under 18"),
    "has_elderly_member": N_("A member aged 65 or more"),
    "has_female_head": N_("A woman at the head"),
}
assert set(CONDITIONS) == set(rules.CONDITIONS)
UNITS = {"household": N_("Household"), "family": N_("Family (each ever-married woman)")}
RULE_FIELDS = frozenset(
    {
        "unit",
        "cut_off",
        "geography",
        "requires",
        "note",
        *(f"raised_when_{i}" for i in range(RAISED_ROWS)),
        *(f"raised_cut_off_{i}" for i in range(RAISED_ROWS)),
    }
)
NEW_FIELDS = RULE_FIELDS | {"code", "name", "organization_id", "description"}
VERSION_FIELDS = RULE_FIELDS | {"intent"}
REPEATABLE = frozenset({"requires"})
DONE = {
    "created": N_("The programme was created with its first rule version."),
    "version": N_("The new rule version is in force from now."),
    "closed": N_(
        "The programme was closed: partners' eligibility checks and lists are refused from now."
    ),
    "reopened": N_("The programme was reopened."),
}
Done = Annotated[str | None, Query(pattern="^(" + "|".join(DONE) + ")$")]


def _may(session: StaffSession, scope: Scope) -> bool:
    return scope.value in session.principal.scopes


def _not_allowed(web: WebContext, session: StaffSession) -> HTMLResponse:
    return page(web, "staff/programmes/not_allowed.html", status=403, member=session)


def _values(form: dict[str, list[str]]) -> dict[str, Any]:
    values: dict[str, Any] = {k: v[0] for k, v in form.items() if k not in REPEATABLE}
    values["requires"] = form.get("requires", [])
    return values


def _number(text: str) -> float | str:
    try:
        return float(text.strip())
    except ValueError:
        return text


def rule_of(values: dict[str, Any]) -> dict[str, Any]:
    """The rule document the form describes (validated by ``RuleIn`` after)."""
    raised = []
    for i in range(RAISED_ROWS):
        when = values.get(f"raised_when_{i}", "")
        cut = values.get(f"raised_cut_off_{i}", "").strip()
        if when or cut:
            raised.append({"when": when, "cut_off": _number(cut)})
    geography = [code for code in values.get("geography", "").replace(",", " ").split() if code]
    return {
        "unit": values.get("unit") or "household",
        "cut_off": _number(values.get("cut_off", "")),
        "raised_cut_offs": raised,
        "geography": geography,
        "requires": list(values.get("requires", [])),
    }


def values_of(rule: dict[str, Any]) -> dict[str, Any]:
    """A stored rule as the form's values (the editor starts from the rule in force)."""
    values: dict[str, Any] = {
        "unit": rule.get("unit", "household"),
        "cut_off": _shown(rule.get("cut_off", "")),
        "geography": " ".join(rule.get("geography", [])),
        "requires": list(rule.get("requires", [])),
    }
    for i, raised in enumerate(rule.get("raised_cut_offs", [])[:RAISED_ROWS]):
        values[f"raised_when_{i}"] = raised["when"]
        values[f"raised_cut_off_{i}"] = _shown(raised["cut_off"])
    return values


def _shown(value: object) -> str:
    """A score as typed: 45 rather than 45.0."""
    return f"{value:g}" if isinstance(value, float) else f"{value}"


def _errors(web: WebContext, exc: ValidationError) -> dict[str, str]:
    messages = {
        "code": N_(
            "Enter a code of 2 to 40 lower-case letters, digits, '-' or '_', starting with a "
            "letter or digit."
        ),
        "name": N_("Enter the programme's name (at most 200 characters)."),
        "organization_id": N_("Choose the organization that runs the programme."),
        "description": N_("The description is too long (at most 4000 characters)."),
        "note": N_("The note is too long (at most 2000 characters)."),
        "cut_off": N_("Enter a cut-off score from 0 to 100."),
        "unit": N_("Choose the unit."),
        "geography": N_("Enter geography codes (digits and letters), separated by spaces."),
        "requires": N_("Choose among the listed conditions."),
        "raised": N_("Each raised cut-off needs a condition and a score from 0 to 100."),
    }
    found: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if loc and loc[0] == "rule":
            loc = loc[1:]
        name = loc[0] if loc else "cut_off"
        if name == "raised_cut_offs":
            name = "raised"
        found[name] = web.gettext(messages.get(name, messages["cut_off"]))
    return found


async def _organizations(pool: PoolDep) -> list[dict[str, str]]:
    rows = await pool.fetch("SELECT id, name FROM organizations ORDER BY name, id")
    return [{"id": str(r["id"]), "name": r["name"]} for r in rows]


def _back(ref: str, done: str, web: WebContext) -> RedirectResponse:
    return RedirectResponse(f"{LIST}/{ref}?done={done}&lang={web.lang}", status_code=303)


@router.get("", response_class=HTMLResponse)
async def list_programmes(web: WebDep, session: StaffSessionDep, pool: PoolDep) -> HTMLResponse:
    """Every programme with its rule in force."""
    if not _may(session, Scope.PROGRAMMES_MANAGE):
        return _not_allowed(web, session)
    items = await store.list_all(pool)
    return page(web, "staff/programmes/list.html", member=session, items=items)


async def _new_form(
    web: WebContext,
    pool: PoolDep,
    session: StaffSession,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return page(
        web,
        "staff/programmes/new.html",
        status=status_code,
        member=session,
        organizations=await _organizations(pool),
        values=values or {"unit": "household", "requires": []},
        errors=errors or {},
        conditions=CONDITIONS,
        units=UNITS,
        raised_rows=RAISED_ROWS,
    )


@router.get("/new", response_class=HTMLResponse)
async def new_programme(web: WebDep, session: StaffSessionDep, pool: PoolDep) -> HTMLResponse:
    """The form of a new programme and its first rule."""
    if not _may(session, Scope.PROGRAMMES_MANAGE):
        return _not_allowed(web, session)
    return await _new_form(web, pool, session)


@router.post("/new", response_class=HTMLResponse)
async def create_programme(
    request: Request, web: WebDep, session: StaffSessionDep, pool: PoolDep
) -> Response:
    """Create the programme (the API's ``POST /v1/staff/programmes``)."""
    form = await read_form(request, web, NEW_FIELDS, repeatable=REPEATABLE)
    if not _may(session, Scope.PROGRAMMES_MANAGE):
        return _not_allowed(web, session)
    values = _values(form)
    body = {
        "code": values.get("code", "").strip(),
        "name": " ".join(values.get("name", "").split()),
        "organization_id": values.get("organization_id", ""),
        "description": values.get("description", "").replace("\r\n", "\n"),
        "rule": rule_of(values),
        "note": values.get("note", "").replace("\r\n", "\n"),
    }
    try:
        parsed = ProgrammeIn.model_validate(body)
    except ValidationError as exc:
        errors = _errors(web, exc)
        return await _new_form(web, pool, session, values=values, errors=errors, status_code=422)
    try:
        made = await store.create(pool, session.principal, parsed)
    except Conflict:
        errors = {"code": web.gettext("A programme with this code exists already.")}
        return await _new_form(web, pool, session, values=values, errors=errors, status_code=409)
    except ValidationFailed as exc:
        errors = {"form": exc.detail}
        return await _new_form(web, pool, session, values=values, errors=errors, status_code=422)
    return _back(made["code"], "created", web)


async def _programme_page(
    web: WebContext,
    pool: PoolDep,
    session: StaffSession,
    ref: str,
    *,
    done: str | None = None,
    problem: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    view = await store.staff_view(pool, ref)
    return page(
        web,
        "staff/programmes/programme.html",
        status=status_code,
        member=session,
        programme=view,
        conditions=CONDITIONS,
        units=UNITS,
        done=DONE.get(done or ""),
        problem=problem,
    )


@router.get("/{programme_id}", response_class=HTMLResponse)
async def programme(
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    programme_id: ProgrammeRef,
    done: Done = None,
) -> HTMLResponse:
    """The programme, its rule versions and agreements, close or reopen."""
    if not _may(session, Scope.PROGRAMMES_MANAGE):
        return _not_allowed(web, session)
    return await _programme_page(web, pool, session, programme_id, done=done)


async def _editor(
    web: WebContext,
    pool: PoolDep,
    session: StaffSession,
    ref: str,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    preview: dict[str, Any] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    view = await store.staff_view(pool, ref)
    if values is None:
        rule = preview["request"]["candidate"]["rule"] if preview else view["rule"]
        values = values_of(rule)
    return page(
        web,
        "staff/programmes/version.html",
        status=status_code,
        member=session,
        programme=view,
        values=values,
        errors=errors or {},
        preview=preview,
        running=preview is not None and preview["status"] in ("pending", "running"),
        may_preview=_may(session, Scope.SIMULATIONS_RUN),
        conditions=CONDITIONS,
        units=UNITS,
        raised_rows=RAISED_ROWS,
    )


@router.get("/{programme_id}/versions/new", response_class=HTMLResponse)
async def new_version(
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    programme_id: ProgrammeRef,
    preview: Annotated[
        uuid.UUID | None, Query(description="a preview's simulation: its progress or result")
    ] = None,
) -> HTMLResponse:
    """The rule editor, starting from the rule in force, or from a preview's candidate rule
    with the preview's progress or result."""
    if not _may(session, Scope.PROGRAMMES_MANAGE):
        return _not_allowed(web, session)
    if preview is None:
        return await _editor(web, pool, session, programme_id)
    if not _may(session, Scope.SIMULATIONS_RUN):
        return _not_allowed(web, session)
    view = await store.staff_view(pool, programme_id)
    try:
        found = await simulation.get(pool, session.principal, preview)
    except NotFound:
        found = None
    shown = (found or {}).get("request", {}).get("programme") or {}
    if found is None or shown.get("id") != view["programme_id"]:
        raise NotFound(f"no preview {preview} of this programme")
    return await _editor(web, pool, session, programme_id, preview=found)


async def queue_preview(
    pool: PoolDep, session: StaffSession, ref: str, rule: dict[str, Any]
) -> str:
    """Queue the candidate rule against the rule in force as a simulation (the worker
    counts the households entering and leaving eligibility, by province); audited as the
    preview it is. Returns the simulation's id."""
    body = {"programme_id": ref, "rule": rule, "transfer_amount": "0", "label": "Rule preview"}
    sim_id = await simulation.submit(pool, session.principal, body)
    async with pool.acquire() as conn, conn.transaction():
        await audit.append_action(
            conn,
            session.principal,
            "POST /staff/programmes/{programme_id}/versions/new (preview)",
            {"programme": ref, "simulation_id": sim_id, "rule": rule},
        )
    return sim_id


@router.post("/{programme_id}/versions/new", response_class=HTMLResponse)
async def save_version(
    request: Request,
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    programme_id: ProgrammeRef,
) -> Response:
    """``intent=preview``: the form again with the preview; ``intent=save``: the new
    version (the API's ``POST /v1/staff/programmes/{id}/versions``)."""
    form = await read_form(request, web, VERSION_FIELDS, repeatable=REPEATABLE)
    if not _may(session, Scope.PROGRAMMES_MANAGE):
        return _not_allowed(web, session)
    values = _values(form)
    intent = values.pop("intent", "save")
    body = {"rule": rule_of(values), "note": values.get("note", "").replace("\r\n", "\n")}
    try:
        parsed = RuleVersionIn.model_validate(body)
    except ValidationError as exc:
        errors = _errors(web, exc)
        return await _editor(
            web, pool, session, programme_id, values=values, errors=errors, status_code=422
        )
    try:
        if intent == "preview":
            if not _may(session, Scope.SIMULATIONS_RUN):
                errors = {"form": web.gettext("Your roles do not include running simulations.")}
                return await _editor(
                    web, pool, session, programme_id, values=values, errors=errors, status_code=403
                )
            sim_id = await queue_preview(pool, session, programme_id, parsed.rule.model_dump())
            return RedirectResponse(
                f"{LIST}/{programme_id}/versions/new?preview={sim_id}&lang={web.lang}",
                status_code=303,
            )
        await store.add_version(pool, session.principal, programme_id, parsed)
    except ValidationFailed as exc:
        errors = {"form": exc.detail}
        return await _editor(
            web, pool, session, programme_id, values=values, errors=errors, status_code=422
        )
    return _back(programme_id, "version", web)


async def _status(
    request: Request,
    web: WebContext,
    session: StaffSession,
    pool: PoolDep,
    ref: str,
    action: str,
) -> Response:
    form = await read_form(request, web, frozenset({"reason"}), repeatable=frozenset())
    if not _may(session, Scope.PROGRAMMES_MANAGE):
        return _not_allowed(web, session)
    if action == "close":  # step-up: closing stops partners' checks and lists
        require_recent_verification(session, request.app.state.settings, back=f"{LIST}/{ref}")
    reason = " ".join(form.get("reason", [""])[0].split())
    if not reason or len(reason) > 2000:
        problem = web.gettext("Give the reason (at most 2000 characters).")
        return await _programme_page(web, pool, session, ref, problem=problem, status_code=422)
    try:
        if action == "close":
            await status.close(pool, session.principal, ref, reason)
        else:
            await status.reopen(pool, session.principal, ref, reason)
    except Conflict as exc:
        problem = web.gettext(
            "This is not possible now. Nothing was changed. (%(why)s)", why=exc.detail
        )
        return await _programme_page(web, pool, session, ref, problem=problem, status_code=409)
    return _back(ref, "closed" if action == "close" else "reopened", web)


@router.post("/{programme_id}/close", response_class=HTMLResponse)
async def close_programme(
    request: Request,
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    programme_id: ProgrammeRef,
) -> Response:
    """Close the programme (needs a recent passkey verification)."""
    return await _status(request, web, session, pool, programme_id, "close")


@router.post("/{programme_id}/reopen", response_class=HTMLResponse)
async def reopen_programme(
    request: Request,
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    programme_id: ProgrammeRef,
) -> Response:
    """Reopen a closed programme."""
    return await _status(request, web, session, pool, programme_id, "reopen")
