"""Staff views of one household."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import PoolDep
from app.openapi import problems
from app.rate_limit import staff_reads
from app.schemas.updates import HouseholdHistory
from app.services.registry import history as history_service

router = APIRouter(prefix="/v1/households", tags=["staff"])
StaffReader = Annotated[Principal, Depends(require_scope(Scope.STAFF_READ))]


@router.get("/{household_id}/history", response_model=HouseholdHistory, responses=problems(404))
@staff_reads
async def get_household_history(
    request: Request,
    household_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    staff: StaffReader,
    pool: PoolDep,
) -> HouseholdHistory:
    """Every version of the household, each with its provenance (survey, batch + ref, staff);
    audited, and counted against the staff read limit."""
    return HouseholdHistory.model_validate(
        await history_service.household_history(pool, staff, household_id)
    )
