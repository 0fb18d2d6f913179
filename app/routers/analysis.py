"""Custom analysis (category ii): ``POST /v1/partner/analysis``, ``GET .../{analysis_id}``,
and the same for the M&E team, ``POST /v1/staff/analysis``, ``GET .../{analysis_id}``.

Both go through one service (``app.services.products.analysis``): the same checks, the
same disclosure control and differencing, the same store and audit. A partner's scope is
its agreement's; the staff's is :func:`analysis.staff_analyst`'s (the whole country, the
dimensions ``NSER_STAFF_ANALYSIS_DIMENSIONS`` adds to the unlocked ones).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import PoolDep, ReadsDep, SettingsDep
from app.errors import Forbidden
from app.openapi import json_request_body, problems
from app.rate_limit import limit, partner_client_key, partner_limits
from app.replicas import Reads
from app.schemas.products import Analysis, AnalysisRequest
from app.services.products import analysis as analysis_service
from app.services.products.summaries import policy_of
from app.settings import Settings
from app.strict import json_body

partner = APIRouter(prefix="/v1/partner", tags=["partner"])
staff = APIRouter(prefix="/v1/staff", tags=["staff"])
router = APIRouter()

MAX_BODY_BYTES = 16 * 1024
Reader = Annotated[Principal, Depends(require_scope(Scope.ANALYSIS_READ))]
AnalysisBody = Annotated[AnalysisRequest, Depends(json_body(AnalysisRequest, MAX_BODY_BYTES))]


async def partner_reader(principal: Reader) -> Principal:
    if principal.kind != "partner":
        raise Forbidden("analyses are asked here by partners; the staff use /v1/staff/analysis")
    return principal


async def staff_reader(principal: Reader, settings: SettingsDep) -> Principal:
    if principal.kind != "staff":
        raise Forbidden("analyses are asked here by the staff; partners use /v1/partner/analysis")
    return analysis_service.staff_analyst(principal, settings.staff_analysis_dimensions)


PartnerReader = Annotated[Principal, Depends(partner_reader)]
StaffReader = Annotated[Principal, Depends(staff_reader)]

_CREATED: dict[int | str, dict[str, Any]] = {
    201: {
        "headers": {
            "Location": {"description": "The stored analysis", "schema": {"type": "string"}}
        }
    },
    **problems(
        409,
        413,
        _409="The households selected differ from an earlier query's of the same recipient "
        "(the agreement; the staff) by fewer than the suppression threshold, or too many "
        "earlier queries selected nearly as many (differencing)",
    ),
}


async def _create(
    principal: Principal, reads: Reads, settings: Settings, body: AnalysisRequest, prefix: str
) -> Response:
    answer = await analysis_service.run(reads, principal, body, policy_of(settings))
    return Response(
        orjson.dumps(answer),
        status_code=201,
        media_type="application/json",
        headers={"Location": f"{prefix}/analysis/{answer['analysis_id']}"},
    )


async def _get(pool: asyncpg.Pool, principal: Principal, analysis_id: uuid.UUID) -> Response:
    # On the primary: an analysis is read back right after it was stored there.
    answer = await analysis_service.get(pool, principal, analysis_id)
    return Response(orjson.dumps(answer), media_type="application/json")


@partner.post(
    "/analysis",
    status_code=201,
    response_model=Analysis,
    openapi_extra=json_request_body(AnalysisRequest),
    responses=_CREATED,
)
@limit(partner_limits, key_func=partner_client_key)
async def create_analysis(
    request: Request,
    principal: PartnerReader,
    reads: ReadsDep,
    settings: SettingsDep,
    body: AnalysisBody,
) -> Response:
    """A cross-tab of `rows` x `columns` with the measures asked for, within the agreement,
    protected like the summaries, stored and audited; 201 with its `analysis_id`."""
    return await _create(principal, reads, settings, body, partner.prefix)


@partner.get("/analysis/{analysis_id}", response_model=Analysis, responses=problems(404))
@limit(partner_limits, key_func=partner_client_key)
async def get_analysis(
    request: Request, principal: PartnerReader, pool: PoolDep, analysis_id: uuid.UUID
) -> Response:
    """A stored analysis of the caller's agreement, as it was published (404 otherwise)."""
    return await _get(pool, principal, analysis_id)


@staff.post(
    "/analysis",
    status_code=201,
    response_model=Analysis,
    openapi_extra=json_request_body(AnalysisRequest),
    responses=_CREATED,
)
@limit(partner_limits, key_func=partner_client_key)
async def create_staff_analysis(
    request: Request,
    principal: StaffReader,
    reads: ReadsDep,
    settings: SettingsDep,
    body: AnalysisBody,
) -> Response:
    """The M&E team's cross-tab: as a partner's, over the whole country, with the unlocked
    dimensions and those the service grants the staff; the same disclosure control and
    differencing (one log for the team), stored and audited with the staff id; 201."""
    return await _create(principal, reads, settings, body, staff.prefix)


@staff.get("/analysis/{analysis_id}", response_model=Analysis, responses=problems(404))
@limit(partner_limits, key_func=partner_client_key)
async def get_staff_analysis(
    request: Request, principal: StaffReader, pool: PoolDep, analysis_id: uuid.UUID
) -> Response:
    """A stored analysis of the staff, as it was published (404 for a partner's)."""
    return await _get(pool, principal, analysis_id)


router.include_router(partner)
router.include_router(staff)
