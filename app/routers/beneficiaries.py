"""``GET /v1/partner/beneficiaries``: filtered households, paged JSON or streamed NDJSON/CSV."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field
from starlette.responses import Response, StreamingResponse

from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import ReadsDep
from app.rate_limit import limit, partner_client_key, partner_limits
from app.replicas import Reads
from app.schemas.geography import CODE_PATTERN
from app.schemas.partner import BeneficiaryPage
from app.services.sharing import asof as asof_service
from app.services.sharing import beneficiaries as beneficiary_service
from app.services.sharing.beneficiaries_sql import Filters
from app.services.sharing.rules import split_list

router = APIRouter(prefix="/v1/partner", tags=["partner"])

MemberType = Literal["children", "adults", "elderly", "ever_married_women", "disabled"]
Band = Literal["ultra_poor", "very_poor", "poor", "non_poor", "well_off"]
# A geography code is shaped before any query (PK6, PK604, PK6D01, a union council
# PK604001...): anything else never reaches the database.
Codes = Annotated[
    list[Annotated[str, Field(pattern=CODE_PATTERN)]] | None,
    Query(max_length=200, description="unit codes (repeatable), as GET /v1/public/geography gives"),
]


def population_filters(
    province: Codes = None,
    division: Codes = None,
    district: Codes = None,
    tehsil: Codes = None,
    union_council: Codes = None,
    score_min: Annotated[float | None, Query(ge=0, le=100)] = None,
    score_max: Annotated[float | None, Query(ge=0, le=100)] = None,
    poverty_band: Annotated[list[Band] | None, Query()] = None,
    member_type: Annotated[list[MemberType] | None, Query()] = None,
) -> Filters:
    """Which households: the filters of beneficiary lists, extracts, tables and maps."""
    return Filters(
        province=province or [],
        division=division or [],
        district=district or [],
        tehsil=tehsil or [],
        union_council=union_council or [],
        score_min=score_min,
        score_max=score_max,
        poverty_band=list(poverty_band or []),
        member_type=list(dict.fromkeys(member_type or [])),
    )


PopulationDep = Annotated[Filters, Depends(population_filters)]


def beneficiary_filters(
    population: PopulationDep,
    dimensions: Annotated[str | None, Query(max_length=1000)] = None,
) -> Filters:
    """The filters shared by beneficiary lists and anonymized extracts: which households,
    and which dimensions of them."""
    population.dimensions = list(dict.fromkeys(split_list(dimensions)))
    return population


FiltersDep = Annotated[Filters, Depends(beneficiary_filters)]
AsOf = Annotated[
    str | None,
    Query(
        max_length=64,
        description="ISO 8601 date-time with offset: the list as the registry stood then "
        "(rebuilt from history), with a snapshot id; 422 in the future or before the registry",
        examples=["2026-11-30T09:00:00Z"],
    ),
]
SNAPSHOT_HEADER = "X-Snapshot-Id"
BeneficiaryReader = Annotated[Principal, Depends(require_scope(Scope.BENEFICIARIES_READ))]


@router.get(
    "/beneficiaries",
    response_model=BeneficiaryPage,
    responses={
        200: {
            "description": "A page (JSON), or every match streamed (NDJSON or CSV, by Accept)",
            "content": {"application/x-ndjson": {}, "text/csv": {}},
        }
    },
)
@limit(partner_limits, key_func=partner_client_key)
async def list_beneficiaries(
    request: Request,
    partner: BeneficiaryReader,
    reads: ReadsDep,
    filters: FiltersDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    as_of: AsOf = None,
) -> Response:
    """Households matching the filters within the agreement; NDJSON/CSV stream everything."""
    return await respond(request, partner, reads, filters, limit, cursor, as_of)


async def respond(
    request: Request,
    partner: Principal,
    reads: Reads,
    filters: Filters,
    limit: int,
    cursor: str | None,
    as_of: str | None = None,
) -> Response:
    """The beneficiary list answer: a JSON page, or an NDJSON/CSV stream by ``Accept``.

    Lists that are this list with a restriction (a programme's eligible list sets
    ``filters.restriction``) answer through here too, so they share every rule. With
    ``as_of`` (or an as-of cursor) the list is the registry as it stood then, with a
    ``snapshot`` id (body and ``X-Snapshot-Id``). Read on a read replica when the service
    has one (app/replicas.py), at the WAL position the cursor or the as-of check names.
    """
    at = asof_service.instant_of(as_of, cursor)
    await beneficiary_service.authorize(reads, partner, filters)
    headers = None
    if at is not None:
        snapshot = await asof_service.prepare(
            reads, partner, filters, at, asof_service.cursor_read_after(cursor)
        )
        headers = {SNAPSHOT_HEADER: snapshot}
    accept = request.headers.get("accept", "")
    if "application/x-ndjson" in accept or "text/csv" in accept:
        csv_wanted = "text/csv" in accept and "application/x-ndjson" not in accept
        docs = beneficiary_service.stream_documents(
            reads,
            partner,
            filters,
            "csv" if csv_wanted else "ndjson",
            request.app.state.settings.export_max_households,
        )
        await docs.__anext__()  # snapshot opened, audit row committed
        if csv_wanted:
            body = beneficiary_service.csv_rows(filters, docs)
            return StreamingResponse(body, media_type="text/csv; charset=utf-8", headers=headers)
        return StreamingResponse(
            beneficiary_service.ndjson(docs), media_type="application/x-ndjson", headers=headers
        )
    page = await beneficiary_service.page(reads, partner, filters, limit, cursor)
    return Response(page, media_type="application/json", headers=headers)
