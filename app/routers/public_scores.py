"""Poverty level by CNIC for the public website (category iii), fair-usage limited per IP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from app.errors import PROBLEM_JSON, NotFound
from app.rate_limit import client_ip, limit, public_lookup_limits
from app.schemas.public import Cnic, PublicScore
from app.services import lookup as lookup_service

router = APIRouter(prefix="/v1/public", tags=["public"])

_PROBLEM: dict[str, Any] = {"content": {PROBLEM_JSON: {}}}


@router.get(
    "/scores/{cnic}",
    response_model=PublicScore,
    responses={404: _PROBLEM, 422: _PROBLEM, 429: _PROBLEM},
)
@limit(public_lookup_limits, key_func=client_ip)
async def get_poverty_score(request: Request, cnic: Annotated[Cnic, Path()]) -> Response:
    """The PMT score and poverty band of a living member's household, by CNIC."""
    # The pool straight from app.state: PoolDep is a sync dependency, and FastAPI runs those
    # in the thread pool - a thread hop that cost this hot path a third of its throughput.
    score = await lookup_service.public_score(request.app.state.pool, cnic)
    if score is None:
        raise NotFound("no living member of the registry has this CNIC")
    # Serialized here by pydantic-core, skipping FastAPI's second validation pass.
    return Response(score.model_dump_json(), media_type="application/json")
