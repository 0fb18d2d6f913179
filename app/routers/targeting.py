"""Score explanations (partner and staff) and what-if targeting simulations (staff)."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import Response

from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import PoolDep
from app.openapi import json_request_body, problems
from app.rate_limit import limit, partner_client_key, partner_limits, staff_reads
from app.schemas.targeting import (
    PartnerScoreExplanation,
    ScoreExplanation,
    Simulation,
    SimulationAccepted,
    SimulationIn,
)
from app.services.targeting import explanation, simulation
from app.strict import json_body

router = APIRouter()

HouseholdId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The household's id")]
StaffReader = Annotated[Principal, Depends(require_scope(Scope.STAFF_READ))]
Simulator = Annotated[Principal, Depends(require_scope(Scope.SIMULATIONS_RUN))]
BODY_CAP = 64 * 1024
_404 = "No scored household with this id (for a partner: within the agreement's geography)"


@router.get(
    "/v1/partner/households/{household_id}/score-explanation",
    response_model=PartnerScoreExplanation,
    responses=problems(404, _404=_404),
    tags=["partner"],
)
@limit(partner_limits, key_func=partner_client_key)
async def partner_score_explanation(
    request: Request,
    household_id: HouseholdId,
    partner: Annotated[Principal, Depends(require_scope(Scope.SCORES_READ))],
    pool: PoolDep,
) -> Response:
    """The household's score under its model version: the values of the indicators the
    agreement covers (weights and points for unlocked ones only), the nearest changes of
    those across each band edge, and the score's history (audited). Never a locked
    dimension's weight, the intercept or the raw score: docs/api.md gives the rule."""
    answer = await explanation.explain(pool, partner, household_id)
    return Response(orjson.dumps(answer), media_type="application/json")


@router.get(
    "/v1/staff/households/{household_id}/score-explanation",
    response_model=ScoreExplanation,
    responses=problems(404, _404=_404),
    tags=["staff"],
)
@staff_reads
async def staff_score_explanation(
    request: Request, household_id: HouseholdId, staff: StaffReader, pool: PoolDep
) -> Response:
    """The full explanation: every indicator's weight and points, the intercept and the raw
    score, changes of every indicator across each band edge, and who and which batch moved
    the score (audited; counted against the staff read limit)."""
    answer = await explanation.explain(pool, staff, household_id)
    return Response(orjson.dumps(answer), media_type="application/json")


@router.post(
    "/v1/staff/simulations",
    status_code=202,
    response_model=SimulationAccepted,
    openapi_extra=json_request_body(SimulationIn),
    responses={
        202: {
            "headers": {"Location": {"description": "The simulation", "schema": {"type": "string"}}}
        },
        **problems(413),
    },
    tags=["staff"],
)
async def create_simulation(
    staff: Simulator,
    pool: PoolDep,
    body: Annotated[SimulationIn, Depends(json_body(SimulationIn, BODY_CAP))],
) -> Response:
    """Queue a what-if simulation for the worker; 202 with its `simulation_id`."""
    sim_id = await simulation.submit(pool, staff, body.model_dump(mode="json"))
    url = f"/v1/staff/simulations/{sim_id}"
    return Response(
        orjson.dumps({"simulation_id": sim_id, "status": "pending", "status_url": url}),
        status_code=202,
        media_type="application/json",
        headers={"Location": url},
    )


@router.get(
    "/v1/staff/simulations/{simulation_id}",
    response_model=Simulation,
    responses=problems(404),
    tags=["staff"],
)
async def get_simulation(simulation_id: uuid.UUID, staff: Simulator, pool: PoolDep) -> Response:
    """The simulation: its request, its status and, once done, its stored result."""
    answer = await simulation.get(pool, staff, simulation_id)
    return Response(orjson.dumps(answer), media_type="application/json")
