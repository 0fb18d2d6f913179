"""Summary tables (category i): ``GET /v1/public/summaries`` and ``GET /v1/partner/summaries``."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import Response

from app import rate_limit
from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import ReadsDep, SettingsDep
from app.errors import problem
from app.openapi import problems
from app.rate_limit import limit, partner_client_key, partner_limits
from app.routers.beneficiaries import Codes, PopulationDep
from app.routers.geography import not_modified
from app.schemas.products import PartnerSummary, PublicSummary
from app.services.products import public as public_service
from app.services.products import summaries as summary_service
from app.services.products.public import PublicCache

router = APIRouter()

CACHE_CONTROL = "public, max-age=60"
_CACHE_HEADERS: dict[str, Any] = {
    "ETag": {
        "description": "Strong tag of the refresh and the body",
        "schema": {"type": "string"},
    },
    "Cache-Control": {"description": CACHE_CONTROL, "schema": {"type": "string"}},
}
GroupBy = Annotated[
    list[Annotated[str, Query(max_length=200)]],
    Query(
        min_length=1,
        max_length=10,
        description="Dimensions of the table (repeatable, or comma-separated)",
        examples=[["province,poverty_band,gender"]],
    ),
]


NOT_READY = (
    "The public statistics are not counted yet (the worker's first refresh of a registry "
    "that already had households is running), or the registry's database is unavailable; "
    "retry after `Retry-After` seconds"
)


def public_cache(request: Request) -> PublicCache:
    """The application's cache of finished public answers (summaries and maps)."""
    cache: PublicCache | None = getattr(request.app.state, "public_cache", None)
    if cache is None:
        cache = PublicCache()
        request.app.state.public_cache = cache
    return cache


@router.get(
    "/v1/public/summaries",
    tags=["public"],
    response_model=PublicSummary,
    responses={
        200: {"headers": _CACHE_HEADERS},
        304: {"description": "Not Modified: If-None-Match names the current tag"},
        # Limited by rate_limit.hit (as the public look-up), not the decorator.
        **problems(429, 503, _503=NOT_READY),
    },
)
async def public_summaries(
    request: Request,
    reads: ReadsDep,
    settings: SettingsDep,
    group_by: GroupBy,
    province: Codes = None,
    division: Codes = None,
    district: Codes = None,
    if_none_match: Annotated[str | None, Header(max_length=2000)] = None,
) -> Response:
    """Households and members by province, division or district, poverty band, gender and
    age bracket, with every margin, protected (suppressed below the threshold, rounded).

    `gender` and `age_bracket` are member attributes: a group's households are the
    households with at least one living member in the group, its members the living
    members in the group; a margin over them adds its groups up (a household with a woman
    and a man counts in both). Tehsil, union council and village are 422 (partners only).
    Fair-use limited per IP (`NSER_PUBLIC_LOOKUP_LIMITS`). Counted by the worker's latest
    refresh of the public cube, never on the request: `registry_version` and `as_of` say
    which registry it describes (a few minutes behind a change at most).
    """
    state = request.app.state
    retry_after = rate_limit.hit(
        state.rate_limit_backend,
        state.public_lookup_limits,
        "public_summaries",
        rate_limit.client_ip(request),
    )
    if retry_after is not None:
        return problem(
            429,
            f"fair-usage limit reached; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
    geo = {
        level: codes
        for level, codes in (("province", province), ("division", division), ("district", district))
        if codes
    }
    answer = await public_service.public_summary(
        reads, public_cache(request), group_by, geo, summary_service.policy_of(settings)
    )
    headers = {"ETag": answer.etag, "Cache-Control": CACHE_CONTROL}
    if not_modified(if_none_match, answer.etag):
        return Response(status_code=304, headers=headers)
    return Response(answer.body, media_type="application/json", headers=headers)


AggregateFiltersDep = PopulationDep
SummaryReader = Annotated[Principal, Depends(require_scope(Scope.SUMMARIES_READ))]


@router.get(
    "/v1/partner/summaries",
    tags=["partner"],
    response_model=PartnerSummary,
    responses=problems(
        409,
        _409="The households selected differ from an earlier query's of the agreement by "
        "fewer than the suppression threshold, or too many earlier queries selected nearly "
        "as many (differencing)",
    ),
)
@limit(partner_limits, key_func=partner_client_key)
async def partner_summaries(
    request: Request,
    partner: SummaryReader,
    reads: ReadsDep,
    settings: SettingsDep,
    filters: AggregateFiltersDep,
    group_by: GroupBy,
) -> Response:
    """The summary tables for partners: geography down to union councils within the
    agreement's, and any dimension the agreement grants (a locked one not granted is 403).
    Audited; refused (409) when its households differ from an earlier query's of the
    agreement by fewer than the suppression threshold."""
    answer = await summary_service.partner_summary(
        reads, partner, group_by, filters, summary_service.policy_of(settings)
    )
    return Response(orjson.dumps(answer), media_type="application/json")
