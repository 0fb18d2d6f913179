"""Geography units for partners and the website: names to the codes the API takes.

Public reference data (no personal data): no credentials, no audit record, no rate limit.
It changes only with a migration (or, for union councils, the seeding), so answers carry a
strong ETag over the body and may be cached by anyone for a day.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from starlette.responses import Response

from app.deps import ReadsDep
from app.openapi import problems
from app.schemas.geography import (
    CODE_PATTERN,
    SEARCH_MAX_LENGTH,
    SEARCH_PATTERN,
    GeoUnits,
    Level,
)
from app.services.registry import geography as geography_service

router = APIRouter(prefix="/v1/public", tags=["public"])

CACHE_CONTROL = "public, max-age=86400"
_CACHE_HEADERS: dict[str, Any] = {
    "ETag": {"description": "Strong tag of the body", "schema": {"type": "string"}},
    "Cache-Control": {"description": CACHE_CONTROL, "schema": {"type": "string"}},
}


def entity_tag(body: bytes) -> str:
    """A strong ETag: the same body always gets the same tag, on every worker and replica."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """Whether ``If-None-Match`` names ``tag`` (weak comparison, RFC 9110 §13.1.2) or is *."""
    if if_none_match is None:
        return False
    listed = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in listed or tag in listed


@router.get(
    "/geography",
    response_model=GeoUnits,
    responses={
        200: {"headers": _CACHE_HEADERS},
        304: {"description": "Not Modified: If-None-Match names the current tag"},
        **problems(
            404,
            422,
            _404="No unit has the parent code",
            _422="Unknown level, malformed parent or q, parent not coarser than level",
        ),
    },
)
async def list_geography(
    reads: ReadsDep,
    level: Annotated[Level, Query(description="The level of the units listed")],
    parent: Annotated[
        str | None,
        Query(
            description="Code of a coarser unit: list the units of `level` below it",
            examples=["PK6"],
            pattern=CODE_PATTERN,
        ),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            description="Case-insensitive part of the English or Urdu name",
            examples=["lahore"],
            max_length=SEARCH_MAX_LENGTH,
            pattern=SEARCH_PATTERN,
        ),
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The units of a level, sorted by code, each with its parent's code and centroid.

    `parent` may be any coarser unit, not only the level directly above: the answer is
    every unit of `level` beneath it (`level=tehsil&parent=PK6` is every tehsil of Punjab).
    An unknown parent is 404; a parent that is not coarser than `level` (a tehsil as the
    parent of a district) is 422. `union_council` and `village` require `parent` (422
    without it): the country has thousands. Codes are letters and digits; `q` is 1-100
    characters without control characters.
    """
    body = await geography_service.units(reads, level, parent, q)
    tag = entity_tag(body)
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL}
    if not_modified(if_none_match, tag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
