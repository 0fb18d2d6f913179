"""Custom analysis (category ii): ``POST /v1/partner/analysis``, ``GET .../{analysis_id}``."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import PoolDep, ReadsDep, SettingsDep
from app.openapi import json_request_body, problems
from app.rate_limit import limit, partner_client_key, partner_limits
from app.schemas.products import Analysis, AnalysisRequest
from app.services.products import analysis as analysis_service
from app.services.products.summaries import policy_of
from app.strict import json_body

router = APIRouter(prefix="/v1/partner", tags=["partner"])

MAX_BODY_BYTES = 16 * 1024
AnalysisReader = Annotated[Principal, Depends(require_scope(Scope.ANALYSIS_READ))]
AnalysisBody = Annotated[AnalysisRequest, Depends(json_body(AnalysisRequest, MAX_BODY_BYTES))]


@router.post(
    "/analysis",
    status_code=201,
    response_model=Analysis,
    openapi_extra=json_request_body(AnalysisRequest),
    responses={
        201: {
            "headers": {
                "Location": {"description": "The stored analysis", "schema": {"type": "string"}}
            }
        },
        **problems(
            409,
            413,
            _409="The households selected differ from an earlier query's of the agreement by "
            "fewer than the suppression threshold, or too many earlier queries selected "
            "nearly as many (differencing)",
        ),
    },
)
@limit(partner_limits, key_func=partner_client_key)
async def create_analysis(
    request: Request,
    partner: AnalysisReader,
    reads: ReadsDep,
    settings: SettingsDep,
    body: AnalysisBody,
) -> Response:
    """A cross-tab of `rows` x `columns` with the measures asked for, within the agreement,
    protected like the summaries, stored and audited; 201 with its `analysis_id`."""
    answer = await analysis_service.run(reads, partner, body, policy_of(settings))
    return Response(
        orjson.dumps(answer),
        status_code=201,
        media_type="application/json",
        headers={"Location": f"/v1/partner/analysis/{answer['analysis_id']}"},
    )


@router.get("/analysis/{analysis_id}", response_model=Analysis, responses=problems(404))
@limit(partner_limits, key_func=partner_client_key)
async def get_analysis(
    request: Request, partner: AnalysisReader, pool: PoolDep, analysis_id: uuid.UUID
) -> Response:
    """A stored analysis of the caller's agreement, as it was published (404 otherwise)."""
    # On the primary: an analysis is read back right after it was stored there.
    answer = await analysis_service.get(pool, partner, analysis_id)
    return Response(orjson.dumps(answer), media_type="application/json")
