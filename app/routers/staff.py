"""Registry staff: what waits on them, the request workflow, agreements' oversight (spot
checks; the Secretary's suspend, revoke and resume), obligations (§5.1, §6.4).

Staff tokens come from the token endpoint; their scopes follow their roles, read live. Which
workflow action a role may take is the machine's rule: another role's action is 403, an
action the request's state does not allow is 409 naming the state.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from app.auth.deps import require_scope, require_staff
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import PoolDep, SettingsDep
from app.errors import ValidationFailed
from app.openapi import json_request_body, problems
from app.rate_limit import staff_reads
from app.schemas.base import UUID_RE, IsoDateTime
from app.schemas.console import MyWork
from app.schemas.requests import ObligationMetIn, ResumeIn, RevokeIn, SpotCheckIn, SuspendIn
from app.services.console import queues
from app.services.monitoring import spot_checks
from app.services.requests import obligations, store
from app.services.requests.machine import Action, State
from app.strict import json_body, parse_json, read_capped

router = APIRouter(prefix="/v1/staff", tags=["staff"])

StaffMember = Annotated[Principal, Depends(require_staff)]
Reader = Annotated[Principal, Depends(require_scope(Scope.REQUESTS_READ))]
Actor = Annotated[Principal, Depends(require_scope(Scope.REQUESTS_ACT))]
Overseer = Annotated[Principal, Depends(require_scope(Scope.AGREEMENTS_OVERSEE))]
RequestId = Annotated[
    str,
    Path(
        description="The request's id, or its reference",
        pattern=rf"^({UUID_RE}|DSR-[0-9]{{4}}-[0-9]{{6}})$",
        examples=["DSR-2026-000123"],
    ),
]
StaffAction = Annotated[
    Action,
    Path(
        description="start_review, review, record_interview, recommend, approve, reject, "
        "sign, withdraw"
    ),
]
BODY_CAP = 64 * 1024


@router.get("/my-work", response_model=MyWork)
async def my_work(
    staff: StaffMember,
    pool: PoolDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=queues.MAX_PAGE, description="items per section")] = (
        queues.PAGE
    ),
) -> Response:
    """What waits on the caller now, by its roles: requests its roles move on (waiting
    longest first), grievances new or overdue, obligations falling due, agreements due for
    a spot check. Each section a count, a breakdown and the first ``limit`` items; a
    section none of the caller's roles acts on is null. Names no person (not audited)."""
    async with pool.acquire() as conn:
        work = await queues.my_work(conn, staff, queues.Rules.of(settings), limit=limit)
    return Response(orjson.dumps(work.as_json()), media_type="application/json")


@router.get("/requests")
async def list_requests(
    _staff: Reader,
    pool: PoolDep,
    status: Annotated[list[State] | None, Query(max_length=13)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[IsoDateTime | None, Query(description="submitted before (paging)")] = None,
) -> dict[str, Any]:
    """Requests, newest first, optionally in some statuses."""
    items = await store.list_requests(pool, [s.value for s in status or []], limit, before)
    next_before = items[-1]["submitted_at"] if len(items) == limit else None
    return {"items": items, "next_before": next_before}


@router.get("/requests/{request_id}", responses=problems(404))
@staff_reads
async def get_request(
    request: Request, request_id: RequestId, staff: Reader, pool: PoolDep
) -> dict[str, Any]:
    """The form (with the applicant's contact details), its status, the review, the price,
    and the timeline with its actors; audited, and counted against the staff read limit."""
    return await store.staff_view(pool, staff, request_id)


@router.get("/requests/{request_id}/quote", responses=problems(404, 409))
async def get_quote(request_id: RequestId, staff: Reader, pool: PoolDep) -> dict[str, Any]:
    """A, B, C, D, E, F, G (Annexes II-III): frozen at approval; 409 before the review."""
    return await store.quote(pool, staff, request_id)


@router.post(
    "/requests/{request_id}/actions/{action}",
    openapi_extra=json_request_body(*dict.fromkeys(store.PAYLOADS.values())),
    responses=problems(404, 409, 413),
)
async def act_on_request(
    request: Request, request_id: RequestId, action: StaffAction, staff: Actor, pool: PoolDep
) -> dict[str, Any]:
    """Move the request: the body depends on the action (docs/api.md lists each)."""
    if action not in store.PAYLOADS:
        raise_unknown_action(action)
    payload = parse_json(store.PAYLOADS[action], await read_capped(request, BODY_CAP) or b"{}")
    return await store.act(pool, staff, request_id, action, payload)


def raise_unknown_action(action: Action) -> None:
    raise ValidationFailed(
        f"action: {action.value} is not a request action here (suspend, resume and revoke "
        "are spot-check and agreement actions)",
        errors=[{"loc": ["path", "action"], "field": "action", "message": "not a request action"}],
    )


@router.post(
    "/agreements/{agreement_id}/spot-checks",
    status_code=201,
    openapi_extra=json_request_body(SpotCheckIn),
    responses=problems(404, 409, 413),
)
async def post_spot_check(
    agreement_id: uuid.UUID,
    staff: Overseer,
    pool: PoolDep,
    check: Annotated[SpotCheckIn, Depends(json_body(SpotCheckIn, BODY_CAP))],
) -> dict[str, Any]:
    """A spot check by the M&E team; ``suspend`` or ``revoke`` cuts the partner's access."""
    return await spot_checks.record(pool, staff, agreement_id, check)


@router.post(
    "/agreements/{agreement_id}/resume",
    openapi_extra=json_request_body(ResumeIn),
    responses=problems(404, 409, 413),
)
async def resume_agreement(
    agreement_id: uuid.UUID,
    staff: Overseer,
    pool: PoolDep,
    body: Annotated[ResumeIn, Depends(json_body(ResumeIn, BODY_CAP))],
) -> dict[str, Any]:
    """The Secretary lifts a suspension (revocation is final)."""
    return await spot_checks.resume(pool, staff, agreement_id, body)


@router.post(
    "/agreements/{agreement_id}/suspend",
    openapi_extra=json_request_body(SuspendIn),
    responses=problems(404, 409, 413),
)
async def suspend_agreement(
    agreement_id: uuid.UUID,
    staff: Overseer,
    pool: PoolDep,
    body: Annotated[SuspendIn, Depends(json_body(SuspendIn, BODY_CAP))],
) -> dict[str, Any]:
    """The Secretary suspends an active agreement: the partner's next call is refused."""
    return await spot_checks.suspend(pool, staff, agreement_id, body)


@router.post(
    "/agreements/{agreement_id}/revoke",
    openapi_extra=json_request_body(RevokeIn),
    responses=problems(404, 409, 413),
)
async def revoke_agreement(
    agreement_id: uuid.UUID,
    staff: Overseer,
    pool: PoolDep,
    body: Annotated[RevokeIn, Depends(json_body(RevokeIn, BODY_CAP))],
) -> dict[str, Any]:
    """The Secretary revokes an active or suspended agreement (final)."""
    return await spot_checks.revoke(pool, staff, agreement_id, body)


@router.get("/obligations")
async def list_obligations(
    _staff: Reader,
    pool: PoolDep,
    status: Annotated[obligations.Status | None, Query()] = None,
) -> dict[str, Any]:
    """Obligations of partners: open, met, overdue (open past due)."""
    return {"items": await obligations.list_obligations(pool, status)}


@router.post(
    "/obligations/{obligation_id}/met",
    openapi_extra=json_request_body(ObligationMetIn),
    responses=problems(404, 409, 413),
)
async def obligation_met(
    obligation_id: uuid.UUID,
    staff: Actor,
    pool: PoolDep,
    body: Annotated[ObligationMetIn, Depends(json_body(ObligationMetIn, BODY_CAP))],
) -> dict[str, Any]:
    """An officer records the deliverable of an obligation."""
    return await obligations.mark_met(pool, staff, obligation_id, body)
