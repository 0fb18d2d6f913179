"""Grievances about a score: filed by the public, followed by token, worked by staff.

Filing needs no credentials and is counted per client IP like the public look-up
(``NSER_GRIEVANCE_LIMITS``, by default the look-up's limits). Whether the CNIC is in the
registry does not change the answer. The 201 carries a status link whose token is the
filer's only key; a wrong token is 404, like an unknown reference.

Staff (``grievances:read``: officer, me; ``grievances:act``: officer) list, read and move
grievances; which role may take which action is the machine's rule (403), an action the
state does not allow is 409 naming the state.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from limits import parse_many
from starlette.responses import JSONResponse, Response

from app import rate_limit
from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import PoolDep, SettingsDep
from app.errors import ValidationFailed, problem
from app.openapi import json_request_body, problems
from app.schemas.base import UUID_RE, IsoDateTime
from app.schemas.grievances import GrievanceAccepted, GrievanceForm, GrievanceStatus, ResurveyIn
from app.services.grievances import sla, store
from app.services.grievances.machine import Action, State
from app.settings import Settings
from app.strict import json_body, parse_json, read_capped

BODY_CAP = 16 * 1024
REFERENCE = r"^GRV-[0-9]{4}-[0-9]{6,9}$"

public = APIRouter(prefix="/v1/public/grievances", tags=["public"])
staff = APIRouter(prefix="/v1/staff/grievances", tags=["staff"])
router = APIRouter()

Reference = Annotated[str, Path(pattern=REFERENCE, examples=["GRV-2026-000123"])]
Token = Annotated[str, Query(min_length=20, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]
GrievanceId = Annotated[
    str,
    Path(
        description="The grievance's id, or its reference",
        pattern=rf"^({UUID_RE}|GRV-[0-9]{{4}}-[0-9]{{6,9}})$",
        examples=["GRV-2026-000123"],
    ),
]
GrievanceAction = Annotated[Action, Path(description="triage, order_resurvey, resolve, reject")]
Reader = Annotated[Principal, Depends(require_scope(Scope.GRIEVANCES_READ))]
Actor = Annotated[Principal, Depends(require_scope(Scope.GRIEVANCES_ACT))]


def _limits(request: Request) -> Any:
    """The filing limits, parsed once per application."""
    state = request.app.state
    parsed = getattr(state, "grievance_limits", None)
    if parsed is None:
        settings: Settings = state.settings
        parsed = parse_many(settings.grievance_limits or settings.public_lookup_limits)
        state.grievance_limits = parsed
    return parsed


def filing_wait(request: Request) -> int | None:
    """Count one filing against the client IP's budget; the seconds to wait if it is spent.
    The website's /grievance form spends this same budget (one per IP for both)."""
    return rate_limit.hit(
        request.app.state.rate_limit_backend,
        _limits(request),
        "grievance_filing",
        rate_limit.client_ip(request),
    )


@public.post(
    "",
    status_code=201,
    response_model=GrievanceAccepted,
    openapi_extra=json_request_body(GrievanceForm),
    # Counted in the handler (as the look-up is), so 429 is declared rather than implied.
    responses=problems(413, 429),
)
async def file_grievance(request: Request, pool: PoolDep) -> Response:
    """File a grievance about a household's score. Keep the ``status_url``: its token is
    shown once and is the only way to follow the grievance. The answer is the same whether
    or not the CNIC is in the registry."""
    retry_after = filing_wait(request)
    if retry_after is not None:
        return problem(
            429,
            f"fair-usage limit reached; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
    form = parse_json(GrievanceForm, await read_capped(request, BODY_CAP))
    filed = await store.file(pool, form)
    body = {"reference": filed.reference, "status_url": filed.status_url}
    return JSONResponse(body, status_code=201, headers={"Location": filed.status_url})


@public.get(
    "/{grievance_reference}",
    response_model=GrievanceStatus,
    responses=problems(404, _404="No grievance has this reference and token"),
)
async def get_grievance_status(grievance_reference: Reference, token: Token, pool: PoolDep) -> Any:
    """The grievance's status, the dates of its steps and, once closed, the outcome with its
    reasons; the CNIC masked, never the household, the score or staff names."""
    return await store.public_view(pool, grievance_reference, token)


@staff.get("")
@rate_limit.staff_reads
async def list_grievances(
    request: Request,
    principal: Reader,
    pool: PoolDep,
    settings: SettingsDep,
    status: Annotated[list[State] | None, Query(max_length=5)] = None,
    overdue: Annotated[
        bool | None, Query(description="true: past a service-level target now; false: not")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[IsoDateTime | None, Query(description="filed before (paging)")] = None,
) -> dict[str, Any]:
    """Grievances, newest first, optionally in some statuses or overdue; no CNIC here, but
    each names its household (audited; counted against the staff read limit)."""
    items = await store.list_grievances(
        pool,
        principal,
        [s.value for s in status or []],
        overdue,
        limit,
        before,
        sla.Targets.of(settings),
    )
    next_before = items[-1]["filed_at"] if len(items) == limit else None
    return {"items": items, "next_before": next_before}


@staff.get("/{grievance_id}", responses=problems(404))
@rate_limit.staff_reads
async def get_grievance(
    request: Request,
    grievance_id: GrievanceId,
    principal: Reader,
    pool: PoolDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    """The filing (the CNIC and contact phone), the household's score at filing and now, the
    re-survey, the resolution, the service level and the timeline with its actors (audited;
    counted against the staff read limit)."""
    return await store.staff_view(pool, principal, grievance_id, sla.Targets.of(settings))


@staff.post(
    "/{grievance_id}/actions/{grievance_action}",
    openapi_extra=json_request_body(*dict.fromkeys(store.PAYLOADS.values())),
    responses=problems(404, 409, 413),
)
async def act_on_grievance(
    request: Request,
    grievance_id: GrievanceId,
    grievance_action: GrievanceAction,
    principal: Actor,
    pool: PoolDep,
) -> dict[str, Any]:
    """Move the grievance: ``triage`` and ``order_resurvey`` take ``notes``; ``resolve``
    and ``reject`` need ``reasons`` (shown to the filer)."""
    if grievance_action not in store.PAYLOADS:
        raise ValidationFailed(
            f"grievance_action: {grievance_action.value} is not taken here; a re-survey is "
            f"sent with POST /v1/staff/grievances/{{grievance_id}}/resurvey",
            errors=[
                {
                    "loc": ["path", "grievance_action"],
                    "field": "grievance_action",
                    "message": "not an action of this endpoint",
                }
            ],
        )
    model = store.PAYLOADS[grievance_action]
    payload = parse_json(model, await read_capped(request, BODY_CAP) or b"{}")
    return await store.act(pool, principal, grievance_id, grievance_action, payload)


@staff.post(
    "/{grievance_id}/resurvey",
    status_code=202,
    openapi_extra=json_request_body(ResurveyIn),
    responses=problems(404, 409, 413),
)
async def resurvey_grievance(
    grievance_id: GrievanceId,
    principal: Actor,
    pool: PoolDep,
    body: Annotated[ResurveyIn, Depends(json_body(ResurveyIn, BODY_CAP))],
) -> dict[str, Any]:
    """Send the re-survey's indicators for the grievance's household: queued as a staff
    ``household_survey`` update batch (validated, re-scored and kept in the history like a
    partner's); 202 with the ``batch_id``, whose outcome shows on the grievance."""
    return await store.resurvey(pool, principal, grievance_id, body)


router.include_router(public)
router.include_router(staff)
