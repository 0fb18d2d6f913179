"""Programmes: staff manage them and their rules; partners read the ones their agreement
names, eligibility by CNIC and the eligible list (the beneficiary list with the rule)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from app.auth.deps import PrincipalDep, require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import PoolDep, ReadsDep
from app.errors import Forbidden, NotFound
from app.openapi import json_request_body, problems
from app.rate_limit import limit, partner_client_key, partner_limits
from app.routers.beneficiaries import AsOf, FiltersDep, respond
from app.schemas.base import UUID_RE
from app.schemas.partner import BeneficiaryPage
from app.schemas.programmes import (
    Eligibility,
    ProgrammeIn,
    ProgrammeList,
    RuleVersionIn,
    StaffProgramme,
    StatusChangeIn,
)
from app.schemas.programmes import Programme as ProgrammeOut
from app.schemas.public import Cnic
from app.services.programmes import eligibility, status, store
from app.services.sharing import asof
from app.strict import json_body

partner_router = APIRouter(prefix="/v1/partner", tags=["partner"])
staff_router = APIRouter(prefix="/v1/staff", tags=["staff"])

ProgrammeRef = Annotated[
    str,
    Path(
        description="The programme's id, or its code",
        pattern=rf"^({UUID_RE}|[a-z0-9][a-z0-9_-]{{1,39}})$",
        examples=["cash-transfer"],
    ),
]
BeneficiaryReader = Annotated[Principal, Depends(require_scope(Scope.BENEFICIARIES_READ))]
Manager = Annotated[Principal, Depends(require_scope(Scope.PROGRAMMES_MANAGE))]
BODY_CAP = 64 * 1024
NOT_NAMED = "No such programme is named by the agreement"
CLOSED = "The programme is closed (since the instant named); as of an earlier instant it answers"


def partner_only(principal: PrincipalDep) -> Principal:
    if principal.kind != "partner":
        raise Forbidden("programmes are read here by partners; staff use /v1/staff/programmes")
    return principal


Partner = Annotated[Principal, Depends(partner_only)]


@partner_router.get("/programmes", response_model=ProgrammeList)
async def list_partner_programmes(partner: Partner, pool: PoolDep) -> dict[str, Any]:
    """The programmes the agreement names, each with the rule in force."""
    return {"items": await store.list_for_partner(pool, partner)}


@partner_router.get(
    "/programmes/{programme_id}",
    response_model=ProgrammeOut,
    responses=problems(404, _404=NOT_NAMED),
)
async def get_partner_programme(
    programme_id: ProgrammeRef, partner: Partner, pool: PoolDep
) -> dict[str, Any]:
    """One programme the agreement names, with the rule in force."""
    return (await store.for_partner(pool, partner, programme_id)).view


@partner_router.get(
    "/programmes/{programme_id}/eligibility/{cnic}",
    response_model=Eligibility,
    responses=problems(
        404,
        409,
        _404="The agreement names no such programme, or no living member within the "
        "agreement's scope has this CNIC",
        _409="The programme is closed (since the instant named)",
    ),
)
@limit(partner_limits, key_func=partner_client_key)
async def get_eligibility(
    request: Request,
    programme_id: ProgrammeRef,
    cnic: Annotated[Cnic, Path()],
    partner: BeneficiaryReader,
    pool: PoolDep,
    reads: ReadsDep,
) -> dict[str, Any]:
    """Eligible or not under the rule in force, and the clause that decided it."""
    # The programme, its rule and status from the primary (staff change them); the
    # household from a read replica when the service has one.
    programme = await store.for_partner(pool, partner, programme_id)
    status.ensure_open(programme)
    answer = await eligibility.check(reads, partner, programme, cnic)
    if answer is None:
        raise NotFound("no living member within the agreement's scope has this CNIC")
    return answer


@partner_router.get(
    "/programmes/{programme_id}/beneficiaries",
    response_model=BeneficiaryPage,
    responses={
        200: {
            "description": "A page (JSON), or every eligible household streamed (NDJSON or "
            "CSV, by Accept)",
            "content": {"application/x-ndjson": {}, "text/csv": {}},
        },
        **problems(404, 409, _404=NOT_NAMED, _409=CLOSED),
    },
)
@limit(partner_limits, key_func=partner_client_key)
async def list_programme_beneficiaries(
    request: Request,
    programme_id: ProgrammeRef,
    partner: BeneficiaryReader,
    pool: PoolDep,
    reads: ReadsDep,
    filters: FiltersDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    as_of: AsOf = None,
) -> Response:
    """``GET /v1/partner/beneficiaries`` restricted to the programme's eligible households
    (with ``as_of``: under the rule version in force then)."""
    programme = await store.for_partner(pool, partner, programme_id)
    at = asof.instant_of(as_of, cursor)
    if at is not None:
        programme = await asof.programme_at(pool, programme, at)
    await status.ensure_open_at(pool, programme, at)
    filters.restriction = eligibility.restriction(programme)
    return await respond(request, partner, reads, filters, limit, cursor, as_of)


@staff_router.get("/programmes", response_model=ProgrammeList)
async def list_programmes(_staff: Manager, pool: PoolDep) -> dict[str, Any]:
    """Every programme, each with the rule in force."""
    return {"items": await store.list_all(pool)}


@staff_router.post(
    "/programmes",
    status_code=201,
    response_model=StaffProgramme,
    openapi_extra=json_request_body(ProgrammeIn),
    responses=problems(409, 413, _409="A programme with this code exists"),
)
async def create_programme(
    staff: Manager,
    pool: PoolDep,
    body: Annotated[ProgrammeIn, Depends(json_body(ProgrammeIn, BODY_CAP))],
) -> dict[str, Any]:
    """A new programme with its first rule version (validated; 422 names the problem)."""
    return await store.create(pool, staff, body)


@staff_router.get(
    "/programmes/{programme_id}", response_model=StaffProgramme, responses=problems(404)
)
async def get_programme(
    programme_id: ProgrammeRef, _staff: Manager, pool: PoolDep
) -> dict[str, Any]:
    """The programme, every rule version, and the agreements that name it."""
    return await store.staff_view(pool, programme_id)


@staff_router.post(
    "/programmes/{programme_id}/versions",
    status_code=201,
    response_model=StaffProgramme,
    openapi_extra=json_request_body(RuleVersionIn),
    responses=problems(404, 413),
)
async def add_rule_version(
    programme_id: ProgrammeRef,
    staff: Manager,
    pool: PoolDep,
    body: Annotated[RuleVersionIn, Depends(json_body(RuleVersionIn, BODY_CAP))],
) -> dict[str, Any]:
    """A new rule version, in force at once; earlier versions are kept."""
    return await store.add_version(pool, staff, programme_id, body)


@staff_router.post(
    "/programmes/{programme_id}/close",
    response_model=StaffProgramme,
    openapi_extra=json_request_body(StatusChangeIn),
    responses=problems(404, 409, 413, _409="The programme is closed already"),
)
async def close_programme(
    programme_id: ProgrammeRef,
    staff: Manager,
    pool: PoolDep,
    body: Annotated[StatusChangeIn, Depends(json_body(StatusChangeIn, BODY_CAP))],
) -> dict[str, Any]:
    """Close the programme: partners still read it, but its eligibility and its list are
    refused from now on (a list as of an earlier instant still answers)."""
    return await status.close(pool, staff, programme_id, body.reason)


@staff_router.post(
    "/programmes/{programme_id}/reopen",
    response_model=StaffProgramme,
    openapi_extra=json_request_body(StatusChangeIn),
    responses=problems(404, 409, 413, _409="The programme is active"),
)
async def reopen_programme(
    programme_id: ProgrammeRef,
    staff: Manager,
    pool: PoolDep,
    body: Annotated[StatusChangeIn, Depends(json_body(StatusChangeIn, BODY_CAP))],
) -> dict[str, Any]:
    """Reopen a closed programme: its eligibility and its list answer again."""
    return await status.reopen(pool, staff, programme_id, body.reason)


@staff_router.put(
    "/programmes/{programme_id}/agreements/{agreement_id}",
    status_code=204,
    responses=problems(404, _404="No such programme or agreement"),
)
async def name_in_agreement(
    programme_id: ProgrammeRef, agreement_id: uuid.UUID, staff: Manager, pool: PoolDep
) -> Response:
    """The agreement names the programme: its partner may read it and its eligibility."""
    await store.set_named(pool, staff, programme_id, agreement_id, named=True)
    return Response(status_code=204)


@staff_router.delete(
    "/programmes/{programme_id}/agreements/{agreement_id}",
    status_code=204,
    responses=problems(404, _404="No such programme or agreement"),
)
async def unname_in_agreement(
    programme_id: ProgrammeRef, agreement_id: uuid.UUID, staff: Manager, pool: PoolDep
) -> Response:
    """The agreement stops naming the programme."""
    await store.set_named(pool, staff, programme_id, agreement_id, named=False)
    return Response(status_code=204)


# One router for app.main: the partner and the staff halves.
router = APIRouter()
router.include_router(partner_router)
router.include_router(staff_router)
