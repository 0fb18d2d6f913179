"""Grievances in the staff console (``/staff/grievances…``): officers work them, M&E read.

- ``/staff/grievances``: the overdue ones first, then every grievance newest first (paged
  by filing time), optionally in one status;
- ``/staff/grievances/{id}``: the filing, the household's score at filing and now, its
  score explanation (the staff API's, audited as a personal-data read), the re-survey, the
  service level and the timeline; the forms of the actions the member's roles may take in
  the grievance's state: triage, order a re-survey, send the re-survey (a staff
  ``household_survey`` update batch the ingest worker applies), resolve, reject.

The re-survey form has the record's indicators: numbers, the toilet, and the list-valued
ones as checkbox groups (electrical and gas equipment, kitchen assets: nothing ticked keeps
the registry's value, "none" records that the household has none), and, hidden, the
household's version shown on the page as ``expected_version``: if the household changes
before the worker applies the survey, the record is refused as a ``conflict`` and nothing
is changed; the page says so and offers the form again on the household as it is now.

Every read and action is the staff API's own service call (:mod:`app.services.grievances.
store`, :mod:`app.services.targeting.explanation`) with the member as the caller, so the
same scopes (``grievances:read``/``grievances:act``, ``staff:read`` for the explanation),
the same state machine (403 for a role, 409 for a state) and the same audit rows hold. A
refusal is shown on the page with its reason.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import ValidationError
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.auth.scopes import Scope
from app.deps import PoolDep, SettingsDep
from app.errors import Conflict, Forbidden, NotFound
from app.models.registry import ELECTRICAL, GAS, KITCHEN, TOILET_TYPES
from app.rate_limit import staff_reads
from app.schemas.base import UUID_RE, IsoDateTime
from app.schemas.grievances import ResurveyIn
from app.services.grievances import sla, store
from app.services.grievances.machine import Action, State
from app.services.staff.sessions import StaffSession
from app.services.targeting import explanation
from app.web.i18n import N_
from app.web.render import WebContext, WebDep, page
from app.web.staff.auth import StaffRoute, StaffSessionDep
from app.web.staff.forms import read_form

LIST = "/staff/grievances"
PAGE_SIZE = 25
OVERDUE_SHOWN = 20
router = APIRouter(prefix=LIST, route_class=StaffRoute, include_in_schema=False)

GrievanceId = Annotated[
    str, Path(pattern=rf"^({UUID_RE}|GRV-[0-9]{{4}}-[0-9]{{6,9}})$", description="id or reference")
]
StatusFilter = Annotated[str | None, Query(pattern="^(" + "|".join(s.value for s in State) + ")$")]

STATES = {
    "received": N_("Received"),
    "triaged": N_("Triaged"),
    "resurvey_ordered": N_("Re-survey ordered"),
    "resolved": N_("Resolved"),
    "rejected": N_("Rejected"),
}
REASONS = {
    "wrong_members": N_("The household's members are wrong"),
    "wrong_assets": N_("The household's assets are wrong"),
    "resurvey": N_("A new survey is asked for"),
    "deceased_listed": N_("A deceased person is listed"),
    "other": N_("Other"),
}
ACTIONS = {
    "triage": N_("Triage"),
    "order_resurvey": N_("Order a re-survey"),
    "record_resurvey": N_("Send the re-survey"),
    "resolve": N_("Resolve"),
    "reject": N_("Reject"),
}
DONE = {
    "triage": N_("The grievance was triaged."),
    "order_resurvey": N_("A re-survey was ordered."),
    "record_resurvey": N_(
        "The re-survey was sent as an update batch. The registry applies it shortly: reload "
        "this page to see its outcome."
    ),
    "resolve": N_("The grievance was resolved. The filer can see the outcome and its reasons."),
    "reject": N_("The grievance was rejected. The filer can see the reasons."),
}
Done = Annotated[str | None, Query(pattern="^(" + "|".join(DONE) + ")$")]
# The re-survey form's indicators: whole numbers, areas of land, and the toilet.
COUNTS = ("rooms", "cows", "goats", "buffaloes", "bullocks", "lambs")
LANDS = ("land_muraba", "land_acre", "land_kanal", "land_marla")
INDICATORS = {
    "rooms": N_("Rooms"),
    "cows": N_("Cows"),
    "goats": N_("Goats"),
    "buffaloes": N_("Buffaloes"),
    "bullocks": N_("Bullocks"),
    "lambs": N_("Lambs"),
    "land_muraba": N_("Land (muraba)"),
    "land_acre": N_("Land (acres)"),
    "land_kanal": N_("Land (kanal)"),
    "land_marla": N_("Land (marla)"),
    "toilet_type": N_("Toilet"),
}
TOILETS = {
    "none": N_("None"),
    "open_pit": N_("Open pit"),
    "covered_pit": N_("Covered pit"),
    "flush_septic": N_("Flush to a septic tank"),
    "flush_sewer": N_("Flush to a sewer"),
}
assert tuple(TOILETS) == TOILET_TYPES
# The list-valued indicators: a checkbox group each, and the items each may hold. Nothing
# ticked leaves the registry's list as it is; NONE alone records an empty list.
NONE = "none"
LISTS = {
    "electrical": N_("Electrical equipment"),
    "gas": N_("Gas equipment"),
    "kitchen": N_("Kitchen assets"),
}
ITEMS = {
    "refrigerator": N_("Refrigerator"),
    "air_conditioner": N_("Air conditioner"),
    "freezer": N_("Freezer"),
    "television": N_("Television"),
    "washing_machine": N_("Washing machine"),
    "microwave_oven": N_("Microwave oven"),
    "air_cooler": N_("Air cooler"),
    "geyser": N_("Geyser"),
    "heater": N_("Heater"),
    "cooking_stove": N_("Cooking stove"),
    "cooking_range": N_("Cooking range"),
}
LIST_ITEMS = {"electrical": ELECTRICAL, "gas": GAS, "kitchen": KITCHEN}
assert set(ITEMS) == {item for items in LIST_ITEMS.values() for item in items}
RESURVEY_FIELDS = frozenset(
    {*COUNTS, *LANDS, *LISTS, "toilet_type", "surveyed_on", "expected_version", "notes"}
)
RESURVEY_LISTS = frozenset(LISTS)
NOTE_FIELDS = frozenset({"notes"})
REASON_FIELDS = frozenset({"reasons", "notes"})


def _endpoint(request: Request) -> str:
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', request.url.path)}"


def _may(session: StaffSession, scope: Scope) -> bool:
    return scope.value in session.principal.scopes


def _not_allowed(web: WebContext, session: StaffSession) -> HTMLResponse:
    return page(web, "staff/grievances/not_allowed.html", status=403, member=session)


async def _detail(
    web: WebContext,
    pool: PoolDep,
    settings: SettingsDep,
    session: StaffSession,
    ident: str,
    *,
    done: str | None = None,
    problem: str | None = None,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    ticked: dict[str, list[str]] | None = None,
    form: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The grievance page (audited as the staff API's read, and the explanation as its)."""
    principal = session.principal
    case = await store.staff_view(pool, principal, ident, sla.Targets.of(settings))
    explained: dict[str, Any] | None = None
    unexplained = False
    household = case["household"]
    if household is not None and _may(session, Scope.STAFF_READ):
        try:
            explained = await explanation.explain(pool, principal, int(household["household_id"]))
        except NotFound:
            unexplained = True
    return page(
        web,
        "staff/grievances/case.html",
        status=status,
        member=session,
        case=case,
        explained=explained,
        unexplained=unexplained,
        states=STATES,
        reasons=REASONS,
        actions=ACTIONS,
        indicators=INDICATORS,
        counts=COUNTS,
        lands=LANDS,
        toilets=TOILETS,
        lists=LISTS,
        list_items=LIST_ITEMS,
        items=ITEMS,
        none_item=NONE,
        done=DONE.get(done or ""),
        problem=problem,
        errors=errors or {},
        values=values or {},
        ticked=ticked or {},
        form=form,
    )


@router.get("", response_class=HTMLResponse)
async def list_grievances(
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    settings: SettingsDep,
    status: StatusFilter = None,
    before: Annotated[IsoDateTime | None, Query(description="filed before (paging)")] = None,
) -> HTMLResponse:
    """The overdue grievances first, then all, newest first (``before``: the next page)."""
    if not _may(session, Scope.GRIEVANCES_READ):
        return _not_allowed(web, session)
    cursor = before
    targets = sla.Targets.of(settings)
    statuses = [status] if status else []
    principal = session.principal
    overdue: list[dict[str, Any]] = []
    if cursor is None:
        overdue = await store.list_grievances(
            pool, principal, statuses, True, OVERDUE_SHOWN, None, targets
        )
    items = await store.list_grievances(pool, principal, statuses, None, PAGE_SIZE, cursor, targets)
    next_before = items[-1]["filed_at"].isoformat() if len(items) == PAGE_SIZE else None
    return page(
        web,
        "staff/grievances/list.html",
        member=session,
        overdue=overdue,
        items=items,
        chosen=status,
        states=STATES,
        reasons=REASONS,
        next_before=next_before,
        paged=cursor is not None,
    )


@router.get("/{grievance_id}", response_class=HTMLResponse)
@staff_reads
async def grievance(
    request: Request,
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    settings: SettingsDep,
    grievance_id: GrievanceId,
    done: Done = None,
) -> HTMLResponse:
    """One grievance, its household's score explanation, and the member's actions."""
    if not _may(session, Scope.GRIEVANCES_READ):
        return _not_allowed(web, session)
    return await _detail(web, pool, settings, session, grievance_id, done=done)


def _field_errors(web: WebContext, exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        name = loc[1] if len(loc) > 1 and loc[0] == "indicators" else (loc[0] if loc else "form")
        if name in errors:
            continue
        if name in LISTS:
            errors[name] = web.gettext("Tick only the items listed.")
        elif name == "expected_version":
            errors[name] = web.gettext(
                "The household's version on the form is not valid: reload the page and enter "
                "the survey again."
            )
        elif name == "reasons":
            errors[name] = web.gettext("Write the reasons (at most 4000 characters).")
        elif name == "notes":
            errors[name] = web.gettext("The note is too long (at most 4000 characters).")
        elif name == "surveyed_on":
            errors[name] = web.gettext("Enter the survey's date as YYYY-MM-DD.")
        else:
            errors[name] = web.gettext("Enter a number in the allowed range.")
    return errors


async def _refused(
    web: WebContext,
    pool: PoolDep,
    settings: SettingsDep,
    session: StaffSession,
    ident: str,
    exc: Forbidden | Conflict,
) -> HTMLResponse:
    if isinstance(exc, Forbidden):
        message = web.gettext(
            "Your roles do not allow this action. Nothing was changed. (%(why)s)", why=exc.detail
        )
        status = 403
    else:
        message = web.gettext(
            "This action is not possible now. Nothing was changed. (%(why)s)", why=exc.detail
        )
        status = 409
    return await _detail(web, pool, settings, session, ident, problem=message, status=status)


def _back(ident: str, done: str, web: WebContext) -> RedirectResponse:
    return RedirectResponse(f"{LIST}/{ident}?done={done}&lang={web.lang}", status_code=303)


@router.post("/{grievance_id}/actions/{grievance_action}", response_class=HTMLResponse)
async def act(
    request: Request,
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    settings: SettingsDep,
    grievance_id: GrievanceId,
    grievance_action: Annotated[str, Path(pattern="^(triage|order_resurvey|resolve|reject)$")],
) -> Response:
    """Triage, order a re-survey, resolve or reject (the API's ``actions/{action}``)."""
    action = Action(grievance_action)
    fields = REASON_FIELDS if action in (Action.resolve, Action.reject) else NOTE_FIELDS
    form = await read_form(request, web, fields, repeatable=frozenset())
    values = {name: found[0] for name, found in form.items()}
    if not _may(session, Scope.GRIEVANCES_ACT):
        exc = Forbidden(f"the scope {Scope.GRIEVANCES_ACT.value} is not among your roles'")
        return await _refused(web, pool, settings, session, grievance_id, exc)
    model = store.PAYLOADS[action]
    try:
        payload = model.model_validate({k: v.replace("\r\n", "\n") for k, v in values.items()})
    except ValidationError as exc:
        return await _detail(
            web,
            pool,
            settings,
            session,
            grievance_id,
            problem=web.gettext("Please correct the form below."),
            errors=_field_errors(web, exc),
            values=values,
            form=action.value,
            status=422,
        )
    try:
        await store.act(pool, session.principal, grievance_id, action, payload)
    except (Forbidden, Conflict) as exc:
        return await _refused(web, pool, settings, session, grievance_id, exc)
    return _back(grievance_id, action.value, web)


def _lists(web: WebContext, ticked: dict[str, list[str]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The checkbox groups as the record's lists (a group left blank is left out: unchanged),
    and an error for a group with "none" ticked beside an item."""
    lists: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, chosen in ticked.items():
        if len(set(chosen)) != len(chosen):
            errors[name] = web.gettext("Tick only the items listed.")
        elif NONE in chosen and len(chosen) > 1:
            errors[name] = web.gettext(
                "Tick either “None of these” or the items the household has, not both."
            )
        elif chosen:
            lists[name] = [] if chosen == [NONE] else chosen
    return lists, errors


def _whole(text: str) -> int | str:
    """A whole number written in ASCII digits, else the text for the schema to refuse (a
    digit ``int`` does not read, such as "²", stays text: a 422, never a 500)."""
    return int(text) if text.isascii() and text.isdigit() else text


def _survey(values: dict[str, str], lists: dict[str, Any]) -> dict[str, Any]:
    """The re-survey's body as the API takes it: blank fields are left out (unchanged)."""
    indicators: dict[str, Any] = {}
    for name in COUNTS:
        if values.get(name, "").strip():
            text = values[name].strip()
            indicators[name] = _whole(text)
    for name in LANDS:
        if values.get(name, "").strip():
            text = values[name].strip()
            try:
                indicators[name] = float(text)
            except ValueError:
                indicators[name] = text
    if values.get("toilet_type"):
        indicators["toilet_type"] = values["toilet_type"]
    indicators.update(lists)
    body: dict[str, Any] = {"indicators": indicators, "notes": values.get("notes", "")}
    if values.get("surveyed_on", "").strip():
        body["surveyed_on"] = values["surveyed_on"].strip()
    if values.get("expected_version", "").strip():
        body["expected_version"] = _whole(values["expected_version"].strip())
    return body


@router.post("/{grievance_id}/resurvey", response_class=HTMLResponse)
async def resurvey(
    request: Request,
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    settings: SettingsDep,
    grievance_id: GrievanceId,
) -> Response:
    """Send the re-survey: queued as a staff update batch, applied by the ingest worker."""
    form = await read_form(request, web, RESURVEY_FIELDS, repeatable=RESURVEY_LISTS)
    values = {name: found[0] for name, found in form.items() if name not in RESURVEY_LISTS}
    ticked = {name: form[name] for name in LISTS if name in form}
    if not _may(session, Scope.GRIEVANCES_ACT):
        exc = Forbidden(f"the scope {Scope.GRIEVANCES_ACT.value} is not among your roles'")
        return await _refused(web, pool, settings, session, grievance_id, exc)
    lists, errors = _lists(web, ticked)
    try:
        body = ResurveyIn.model_validate(_survey(values, lists))
    except ValidationError as exc:
        errors = {**_field_errors(web, exc), **errors}
    else:
        if not errors and not body.indicators.model_dump(exclude_none=True):
            errors["indicators"] = web.gettext("Enter at least one indicator measured again.")
    if errors:
        return await _detail(
            web,
            pool,
            settings,
            session,
            grievance_id,
            problem=web.gettext("Please correct the form below."),
            errors=errors,
            values=values,
            ticked=ticked,
            form="record_resurvey",
            status=422,
        )
    try:
        await store.resurvey(pool, session.principal, grievance_id, body)
    except (Forbidden, Conflict) as exc:
        return await _refused(web, pool, settings, session, grievance_id, exc)
    return _back(grievance_id, "record_resurvey", web)
