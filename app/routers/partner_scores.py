"""``GET /v1/partner/scores/{cnic}``: a household's score for a partner (scope scores:read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import Response

from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import ReadsDep
from app.errors import NotFound
from app.openapi import problems
from app.rate_limit import limit, partner_client_key, partner_limits
from app.schemas.partner import PartnerScore
from app.schemas.public import Cnic
from app.services.sharing import scores as score_service

router = APIRouter(prefix="/v1/partner", tags=["partner"])


@router.get(
    "/scores/{cnic}",
    response_model=PartnerScore,
    responses=problems(404, _404="No living member within the agreement's scope has this CNIC"),
)
@limit(partner_limits, key_func=partner_client_key)
async def get_partner_score(
    request: Request,
    cnic: Annotated[Cnic, Path()],
    partner: Annotated[Principal, Depends(require_scope(Scope.SCORES_READ))],
    reads: ReadsDep,
) -> Response:
    """PMT score, band and household id of a living member, by CNIC."""
    score = await score_service.partner_score(reads, partner, cnic)
    if score is None:
        raise NotFound("no living member within the agreement's scope has this CNIC")
    return Response(score.model_dump_json(), media_type="application/json")
