"""Data-sharing requests in the console (``/staff/requests…``).

- ``GET /staff/requests``: the requests, newest first, filtered by state, a page at a time
  (``before``: the submission instant the next page starts before), as
  ``GET /v1/staff/requests`` lists them;
- ``GET /staff/requests/{id}``: the Annex I form as submitted, the timeline, the quote with
  its letters A-G in words, the obligations, and a form for each action the member's roles
  may take in the request's state (``machine.allowed_actions``). It is the staff API's
  ``store.staff_view``, which writes the audit row (the form holds contact details);
- ``POST /staff/requests/{id}/actions/{action}``: one action, through ``store.act`` as
  ``POST /v1/staff/requests/{id}/actions/{action}``. Approve, reject and sign need a recent
  passkey verification. A role that does not own the action gets 403 and a state that does
  not allow it 409, each as the request's page with a message saying why.

The member acts as a staff principal whose scopes are their roles' scopes now.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import ValidationError
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.auth.scopes import Scope
from app.deps import PoolDep, SettingsDep
from app.errors import Conflict, Forbidden, ValidationFailed
from app.rate_limit import staff_reads
from app.schemas.base import UUID_RE
from app.schemas.updates import UPDATE_KINDS
from app.services.requests import obligations, pricing, store
from app.services.requests.machine import Action, State
from app.services.sharing import rules as sharing
from app.services.staff.sessions import StaffSession
from app.web.i18n import N_
from app.web.render import WebContext, WebDep, WebError, page
from app.web.staff.auth import StaffRoute, StaffSessionDep, require_recent_verification
from app.web.staff.forms import read_form

LIST = "/staff/requests"
PAGE = 50
router = APIRouter(prefix=LIST, route_class=StaffRoute, include_in_schema=False)

RequestId = Annotated[
    str,
    Path(
        pattern=rf"^({UUID_RE}|DSR-[0-9]{{4}}-[0-9]{{6}})$",
        description="the request's id or reference",
    ),
]
ActionName = Annotated[Action, Path(description="a request action")]

STATE_LABELS = {
    "submitted": N_("Submitted"),
    "under_review": N_("Under review"),
    "reviewed": N_("Reviewed"),
    "interviewed": N_("Interviewed"),
    "recommended": N_("Recommended"),
    "not_recommended": N_("Not recommended"),
    "approved": N_("Approved"),
    "rejected": N_("Rejected"),
    "active": N_("Active (agreement signed)"),
    "expired": N_("Expired"),
    "suspended": N_("Suspended"),
    "revoked": N_("Revoked"),
    "withdrawn": N_("Withdrawn"),
}
ACTION_LABELS = {
    "submit": N_("Submitted by the organization"),
    "start_review": N_("Start the review"),
    "review": N_("Record the review"),
    "record_interview": N_("Record the interview"),
    "recommend": N_("Record the committee's recommendation"),
    "approve": N_("Approve"),
    "reject": N_("Reject"),
    "sign": N_("Sign the agreement"),
    "withdraw": N_("Withdraw the request"),
    "suspend": N_("Suspend"),
    "resume": N_("Resume"),
    "revoke": N_("Revoke"),
    "expire": N_("Expire"),
}
DONE = {
    "start_review": N_("The review has started."),
    "review": N_("The review was recorded."),
    "record_interview": N_("The interview was recorded."),
    "recommend": N_("The committee's recommendation was recorded."),
    "approve": N_("The request was approved; its price is now fixed."),
    "reject": N_("The request was rejected."),
    "sign": N_("The agreement was signed."),
    "withdraw": N_("The request was withdrawn."),
}
Done = Annotated[str | None, Query(pattern="^(" + "|".join(DONE) + ")$")]
STEP_UP_ACTIONS = frozenset({Action.approve, Action.reject, Action.sign})
CATEGORY_LABELS = {
    "i": N_("(i) Information summary"),
    "ii": N_("(ii) Custom analysis"),
    "iii": N_("(iii) Score against a CNIC"),
    "iv": N_("(iv) Base list"),
    "v": N_("(v) Subsets with selected dimensions"),
    "vi": N_("(vi) Anonymized data"),
    "vii": N_("(vii) Information maps"),
    "viii": N_("(viii) Geo-tagged information"),
}
ORGANIZATION_TYPES = {
    "government": N_("Government"),
    "semi_autonomous": N_("Semi-autonomous government agency"),
    "academic": N_("Academic or research institution"),
    "local_ngo": N_("Local NGO"),
    "donor": N_("Donor"),
    "private": N_("Business or private sector"),
}
STORAGE = {
    "hard_copy": N_("Hard copy"),
    "soft_copy": N_("Soft copy"),
    "vpn": N_("Over a VPN"),
}
# The fields each action's form has (as named in its body; "repeatable" ones are lists).
FIELDS: dict[Action, frozenset[str]] = {
    Action.start_review: frozenset({"notes"}),
    Action.review: frozenset(
        {
            "category",
            "clearance_level",
            "conditions",
            "dimensions",
            "geography",
            "geography_codes",
            "valid_days",
            "amount",
            "update_kinds",
            "update_frequency",
            "quality_checks",
            "organization_id",
        }
    ),
    Action.record_interview: frozenset({"outcome", "notes"}),
    Action.recommend: frozenset({"recommendation", "gratis", "notes"}),
    Action.approve: frozenset({"reasons"}),
    Action.reject: frozenset({"reasons"}),
    Action.sign: frozenset({"notes", "organization_id"}),
    Action.withdraw: frozenset({"notes"}),
}
LISTS = frozenset({"dimensions", "geography", "update_kinds"})


def _endpoint_base(ident: str, web: WebContext) -> str:
    return f"{LIST}/{ident}?lang={web.lang}"


def _require(session: StaffSession, scope: str, web: WebContext) -> None:
    if scope not in session.principal.scopes:
        raise WebError(403, web.gettext("Your roles do not open data-sharing requests."))


@router.get("", response_class=HTMLResponse)
async def list_requests(
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    state: Annotated[list[State] | None, Query(max_length=13)] = None,
    before: Annotated[datetime | None, Query(description="submitted before (paging)")] = None,
) -> HTMLResponse:
    """Requests, newest first; ``state`` filters (several allowed), ``before`` pages."""
    _require(session, Scope.REQUESTS_READ, web)
    chosen = [s.value for s in state or []]
    items = await store.list_requests(pool, chosen, PAGE, before)
    next_before = items[-1]["submitted_at"] if len(items) == PAGE else None
    return page(
        web,
        "staff/requests/list.html",
        member=session,
        items=items,
        chosen=chosen,
        states=list(State),
        state_labels=STATE_LABELS,
        next_before=next_before,
        before=before,
    )


def _quote_words(web: WebContext, quote: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """The letters of the quote, each with what it means (Annex III)."""
    if quote is None:
        return []
    meaning = {
        "A": web.gettext("Base rate per household for this type of organization (Annex II)"),
        "B": web.gettext("Households in the reviewed scope"),
        "C": web.gettext("Base data cost: A × B, rounded to whole rupees"),
        "D": web.gettext("Priced dimensions granted (Annex III V-XVI), each counted once"),
        "E": web.gettext("Cost per household per dimension: 15% of A"),
        "F": web.gettext("Cost of the dimensions: B × D × E, rounded to whole rupees"),
        "G": web.gettext("Total data cost: C + F (or the amount set case by case, or 0 if gratis)"),
    }
    out = []
    for letter in "ABCDEFG":
        value = quote.get(letter)
        if value is None:
            shown = web.gettext("not applicable")
        elif letter in "BD":
            shown = web.fmt.number(int(value))
        else:
            shown = web.fmt.number(float(value), 2 if "." in str(value) else 0)
        out.append((letter, shown, meaning[letter]))
    return out


async def _request_page(
    web: WebContext,
    pool: PoolDep,
    session: StaffSession,
    ident: str,
    *,
    done: str | None = None,
    problem: str | None = None,
    problem_detail: str | None = None,
    status: int = 200,
    signed: dict[str, Any] | None = None,
) -> HTMLResponse:
    view = await store.staff_view(pool, session.principal, ident)
    owed = await obligations.of_request(pool, view["reference"])
    can_act = Scope.REQUESTS_ACT in session.principal.scopes
    allowed = [a for a in view["allowed_actions"] if a in {x.value for x in store.STAFF_ACTIONS}]
    return page(
        web,
        "staff/requests/request.html",
        status=status,
        member=session,
        r=view,
        form=view["form"],
        obligations=owed,
        actions=allowed if can_act else [],
        step_up_actions={a.value for a in STEP_UP_ACTIONS},
        quote_words=_quote_words(web, view["quote"]),
        state_labels=STATE_LABELS,
        action_labels=ACTION_LABELS,
        category_labels=CATEGORY_LABELS,
        organization_types=ORGANIZATION_TYPES,
        storage_labels=STORAGE,
        gratis_criteria=pricing.GRATIS_CRITERIA,
        dimensions=sharing.DIMENSIONS,
        update_kinds=UPDATE_KINDS,
        done=DONE.get(done or ""),
        problem=problem,
        problem_detail=problem_detail,
        signed=signed,
    )


@router.get("/{request_id}", response_class=HTMLResponse)
@staff_reads
async def request_page(
    request: Request,
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    request_id: RequestId,
    done: Done = None,
) -> HTMLResponse:
    """One request: the form, timeline, quote, obligations, and this member's actions."""
    _require(session, Scope.REQUESTS_READ, web)
    return await _request_page(web, pool, session, request_id, done=done)


def _one(form: dict[str, list[str]], name: str) -> str:
    return form.get(name, [""])[0].strip()


def _payload(action: Action, form: dict[str, list[str]]) -> dict[str, Any]:
    """The action's body from its form: blank optional fields left out."""
    body: dict[str, Any] = {}
    for name in FIELDS[action]:
        if name in LISTS:
            values = [v for v in form.get(name, []) if v]
            if values or name in form:
                body[name] = values
        elif name == "gratis":
            body["gratis"] = _one(form, "gratis") == "yes"
        elif name == "geography_codes":
            continue
        else:
            value = _one(form, name)
            if value:
                body[name] = value
    if action is Action.review:
        typed = _one(form, "geography_codes").replace(",", " ").split()
        if typed:
            body["geography"] = [*body.get("geography", []), *typed]
    return body


def _invalid(web: WebContext, exc: ValidationError) -> str:
    fields = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
    return web.gettext("Please check these fields: %(fields)s.", fields=", ".join(fields))


@router.post("/{request_id}/actions/{action}", response_class=HTMLResponse)
async def act(
    request: Request,
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    settings: SettingsDep,
    request_id: RequestId,
    action: ActionName,
) -> Response:
    """One workflow action by the member (step-up first for approve, reject and sign)."""
    if action not in FIELDS:
        raise WebError(404, web.gettext("There is no such action on a request."))
    form = await read_form(request, web, FIELDS[action], repeatable=LISTS)
    if action in STEP_UP_ACTIONS:
        require_recent_verification(session, settings, back=f"{LIST}/{request_id}")
    problem_detail: str | None = None
    if Scope.REQUESTS_ACT not in session.principal.scopes:
        problem, status = web.gettext("Your roles do not allow this action."), 403
    else:
        try:
            payload = store.PAYLOADS[action].model_validate(_payload(action, form))
        except ValidationError as exc:
            problem, status = _invalid(web, exc), 422
            problem_detail = str(exc.errors()[0].get("msg", ""))
        else:
            try:
                answer = await store.act(pool, session.principal, request_id, action, payload)
            except Forbidden as exc:
                problem, status = web.gettext("Your roles do not allow this action."), 403
                problem_detail = exc.detail
            except Conflict as exc:
                state = str(exc.extra.get("state", ""))
                problem = web.gettext(
                    "This action is not possible while the request is %(state)s. It may have"
                    " moved on since you opened the page.",
                    state=web.gettext(STATE_LABELS.get(state, state)),
                )
                status, problem_detail = 409, exc.detail
            except ValidationFailed as exc:
                problem, status = web.gettext("Please check the form and try again."), 422
                problem_detail = exc.detail
            else:
                if action is Action.sign:
                    return await _request_page(
                        web, pool, session, request_id, done="sign", signed=answer
                    )
                return RedirectResponse(
                    f"{LIST}/{request_id}?done={action.value}&lang={web.lang}", status_code=303
                )
    return await _request_page(
        web,
        pool,
        session,
        request_id,
        problem=problem,
        problem_detail=problem_detail,
        status=status,
    )
