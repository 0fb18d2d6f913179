"""``GET /v1/partner/geo``: geo-tagged households (category viii), streamed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import ReadsDep
from app.rate_limit import limit, partner_client_key, partner_limits
from app.routers.beneficiaries import FiltersDep
from app.services.products import geo as geo_service

router = APIRouter(prefix="/v1/partner", tags=["partner"])

GeoReader = Annotated[Principal, Depends(require_scope(Scope.GEO_READ))]


def chosen_mode(accept: str) -> geo_service.Mode:
    """By ``Accept``: GeoJSON text sequence, CSV, else NDJSON (the default)."""
    if geo_service.GEOJSON_SEQ in accept:
        return "geojson-seq"
    if "text/csv" in accept and "application/x-ndjson" not in accept:
        return "csv"
    return "ndjson"


@router.get(
    "/geo",
    response_class=Response,
    responses={
        200: {
            "description": (
                "Every matching geo-tagged household, streamed: NDJSON (default), an RFC 8142 "
                "GeoJSON text sequence of Point features, or CSV, by Accept"
            ),
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                geo_service.GEOJSON_SEQ: {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
@limit(partner_limits, key_func=partner_client_key)
async def list_geo(
    request: Request, partner: GeoReader, reads: ReadsDep, filters: FiltersDep
) -> Response:
    """Households with coordinates, within the agreement, with the dimensions it grants.

    The filters and `dimensions` of the beneficiary lists; a locked dimension the agreement
    does not grant is 403. Never a household without coordinates, in Balochistan or in a
    unit that is not geo-tagged (the test-phase districts), even when a filter names one
    (the answer is then empty). Records: `{"household_id", "lat", "lon", ...dimensions}`
    (NDJSON, CSV) or a Point Feature whose properties are the household id and dimensions;
    member dimensions come as a `members` list (CSV: a row per member).
    """
    await geo_service.authorize(reads, partner, filters)
    mode = chosen_mode(request.headers.get("accept", ""))
    max_households = request.app.state.settings.export_max_households
    docs = geo_service.stream(reads, partner, filters, mode, max_households)
    await docs.__anext__()  # snapshot opened, audit row committed
    if mode == "csv":
        return StreamingResponse(
            geo_service.csv_rows(filters, docs), media_type="text/csv; charset=utf-8"
        )
    if mode == "geojson-seq":
        return StreamingResponse(geo_service.json_seq(docs), media_type=geo_service.GEOJSON_SEQ)
    return StreamingResponse(geo_service.ndjson(docs), media_type="application/x-ndjson")
