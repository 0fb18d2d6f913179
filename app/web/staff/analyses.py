"""The M&E team's analyses in the console (``/staff/analyses…``).

A form to ask a cross-tab (rows, columns, measures, the beneficiary filters: what
``POST /v1/staff/analysis`` accepts), and the table as it was published, its withheld
cells marked. Asked and read through the API's service
(:func:`app.services.products.analysis.run` and ``get``) as the same recipient
(:func:`~app.services.products.analysis.staff_analyst`: the whole country, the unlocked
dimensions and those ``NSER_STAFF_ANALYSIS_DIMENSIONS`` grants), so the same disclosure
control, the team's one differencing log, the same store and audit rows.

Who: the members whose roles carry ``analysis:read`` now (role ``me``); others get a 403
page. A question the differencing control refuses (409) is a page that says why, as the
service words it; an invalid question (422) or a dimension not granted (403) is the form
again with the reason.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.auth.scopes import Scope
from app.deps import PoolDep, ReadsDep, SettingsDep
from app.errors import Conflict, Forbidden, ValidationFailed
from app.rate_limit import limit, partner_client_key, partner_limits
from app.schemas.products import AnalysisRequest
from app.services.products import aggregate
from app.services.products import analysis as analysis_service
from app.services.products.summaries import policy_of
from app.services.sharing.rules import denied_dimensions
from app.services.staff.sessions import StaffSession
from app.settings import Settings
from app.web.i18n import N_
from app.web.render import WebContext, WebDep, page
from app.web.staff.forms import read_form
from app.web.staff.reports import ConsoleRoute, Refused, cell_text, holding

PATH = "/staff/analyses"
router = APIRouter(prefix=PATH, route_class=ConsoleRoute, include_in_schema=False)

ANALYSTS = N_(
    "Analyses are asked by the monitoring and evaluation team. Your roles do not include it."
)
Analyst = Annotated[StaffSession, Depends(holding(Scope.ANALYSIS_READ, ANALYSTS))]

MEASURES = {
    "households": N_("Households"),
    "members": N_("Members"),
    "mean_pmt_score": N_("Mean PMT score"),
    "share_below": N_("Share of households below the cut-off"),
}
BANDS = {
    "ultra_poor": N_("Ultra poor"),
    "very_poor": N_("Very poor"),
    "poor": N_("Poor"),
    "non_poor": N_("Non-poor"),
    "well_off": N_("Well off"),
}
MEMBER_TYPES = {
    "children": N_("Children"),
    "adults": N_("Adults"),
    "elderly": N_("Elderly"),
    "ever_married_women": N_("Ever-married women"),
    "disabled": N_("People with a disability"),
}
GEOGRAPHY = ("province", "division", "district", "tehsil", "union_council")
REPEATED = frozenset({"rows", "columns", "measures", "poverty_band", "member_type"})
FIELDS = REPEATED | frozenset({"cut_off", "score_min", "score_max", *GEOGRAPHY})


def dimensions_for(settings: Settings) -> list[str]:
    """The dimensions the team may group by: unlocked, geography, and those granted."""
    granted = set(settings.staff_analysis_dimensions)
    return [
        name
        for name, dim in aggregate.DIMENSIONS.items()
        if name not in ("village", "area_location")
        and (dim.sharing is None or not denied_dimensions([dim.sharing], granted))
    ]


def _number(value: str) -> float | str | None:
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return value  # the model says what is wrong with it


def _codes(value: str) -> list[str]:
    return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]


def request_of(form: dict[str, list[str]]) -> dict[str, Any]:
    """The API's request body from the form's fields."""
    one = {name: form.get(name, [""])[0] for name in FIELDS - REPEATED}
    filters: dict[str, Any] = {level: _codes(one[level]) for level in GEOGRAPHY}
    filters.update(
        score_min=_number(one["score_min"]),
        score_max=_number(one["score_max"]),
        poverty_band=form.get("poverty_band", []),
        member_type=form.get("member_type", []),
    )
    body: dict[str, Any] = {
        "rows": form.get("rows", []),
        "columns": form.get("columns", []),
        "filters": {k: v for k, v in filters.items() if v not in (None, [])},
    }
    if form.get("measures"):
        body["measures"] = form["measures"]
    if _number(one["cut_off"]) is not None:
        body["cut_off"] = _number(one["cut_off"])
    return body


def _form_page(
    web: WebContext,
    member: StaffSession,
    settings: Settings,
    *,
    chosen: dict[str, list[str]] | None = None,
    problems: list[str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    chosen = chosen or {"measures": ["households", "members"]}
    return page(
        web,
        "staff/analyses/form.html",
        status=status,
        member=member,
        dimensions=dimensions_for(settings),
        measures=MEASURES,
        bands=BANDS,
        member_types=MEMBER_TYPES,
        geography=GEOGRAPHY,
        chosen=chosen,
        value=lambda name: (chosen or {}).get(name, [""])[0],
        problems=problems or [],
    )


@router.get("", response_class=HTMLResponse)
async def analysis_form(web: WebDep, member: Analyst, settings: SettingsDep) -> HTMLResponse:
    """The form to ask an analysis."""
    return _form_page(web, member, settings)


def _pydantic_problems(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        out.append(f"{where}: {error['msg']}")
    return out


@router.post("", response_class=HTMLResponse)
@limit(partner_limits, key_func=partner_client_key)
async def ask(
    request: Request, web: WebDep, member: Analyst, reads: ReadsDep, settings: SettingsDep
) -> Response:
    """Ask the analysis (the API's service): then its page; 422, 403 or 409 say why."""
    form = await read_form(request, web, FIELDS, repeatable=REPEATED)
    try:
        body = AnalysisRequest.model_validate(request_of(form))
    except ValidationError as exc:
        return _form_page(
            web, member, settings, chosen=form, problems=_pydantic_problems(exc), status=422
        )
    analyst = analysis_service.staff_analyst(member.principal, settings.staff_analysis_dimensions)
    try:
        answer = await analysis_service.run(reads, analyst, body, policy_of(settings))
    except ValidationFailed as exc:
        return _form_page(web, member, settings, chosen=form, problems=[exc.detail], status=422)
    except Forbidden as exc:
        return _form_page(web, member, settings, chosen=form, problems=[exc.detail], status=403)
    except Conflict as exc:
        message = web.gettext(
            "This analysis was refused: the households it selects differ too little from "
            "those of an earlier analysis of the team, so comparing the two could reveal a "
            "few households (differencing). Ask about a broader or clearly different group. "
            "The registry's reason: %(reason)s",
            reason=exc.detail,
        )
        raise Refused(member, 409, message) from None
    return RedirectResponse(f"{PATH}/{answer['analysis_id']}?lang={web.lang}", status_code=303)


@router.get("/{analysis_id}", response_class=HTMLResponse)
@limit(partner_limits, key_func=partner_client_key)
async def analysis_page(
    request: Request,
    web: WebDep,
    member: Analyst,
    pool: PoolDep,
    settings: SettingsDep,
    analysis_id: uuid.UUID,
) -> HTMLResponse:
    """A stored analysis of the team as it was published (read again: audited)."""
    analyst = analysis_service.staff_analyst(member.principal, settings.staff_analysis_dimensions)
    answer = await analysis_service.get(pool, analyst, analysis_id)
    request = answer["request"]
    dims = [*request["rows"], *request["columns"]]
    measures = list(dict.fromkeys(request["measures"]))
    return page(
        web,
        "staff/analyses/result.html",
        member=member,
        answer=answer,
        dims=dims,
        measures=measures,
        measure_labels=MEASURES,
        show=lambda value: cell_text(web, value),
    )
