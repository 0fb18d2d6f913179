"""``GET /v1/partner/extracts/anonymized``: k-anonymous records as NDJSON, CSV or Parquet."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import StreamingResponse

from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import ReadsDep, SettingsDep
from app.rate_limit import limit, partner_client_key, partner_limits
from app.routers.beneficiaries import FiltersDep
from app.services.sharing import extracts as extract_service

router = APIRouter(prefix="/v1/partner", tags=["partner"])
PARQUET = "application/vnd.apache.parquet"


@router.get(
    "/extracts/anonymized",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "k-anonymous records: NDJSON (default), CSV or Parquet, by Accept",
            "content": {"application/x-ndjson": {}, "text/csv": {}, PARQUET: {}},
        }
    },
)
@limit(partner_limits, key_func=partner_client_key)
async def get_anonymized_extract(
    request: Request,
    partner: Annotated[Principal, Depends(require_scope(Scope.EXTRACTS_READ))],
    reads: ReadsDep,
    settings: SettingsDep,
    filters: FiltersDep,
) -> StreamingResponse:
    """Pseudonymous, k-anonymous member records; headers say how many were suppressed."""
    await extract_service.authorize(reads, partner, filters)
    accept = request.headers.get("accept", "")
    fmt = "parquet" if PARQUET in accept else "csv" if "text/csv" in accept else "ndjson"
    summary, records = await extract_service.open_extract(
        reads, partner, filters, settings.k_anonymity, fmt, settings.extract_max_records
    )
    headers = {
        "X-K-Anonymity": str(summary.k),
        "X-Records": str(summary.records),
        "X-Generalized-Records": str(summary.generalized),
        "X-Suppressed-Records": str(summary.suppressed),
    }
    if fmt == "parquet":
        body = extract_service.as_parquet(filters, records)
        return StreamingResponse(body, media_type=PARQUET, headers=headers)
    if fmt == "csv":
        body = extract_service.as_csv(filters, records)
        return StreamingResponse(body, media_type="text/csv; charset=utf-8", headers=headers)
    body = extract_service.as_ndjson(records)
    return StreamingResponse(body, media_type="application/x-ndjson", headers=headers)
