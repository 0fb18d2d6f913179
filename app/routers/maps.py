"""Hex-bin maps (§4.2.4 vii): ``GET /v1/public/maps/{measure}`` and the partner's own.

Both answer a GeoJSON FeatureCollection of H3 hexagons (``application/geo+json``), or with
``format=png`` a small rendered choropleth (``image/png``). Every value passes the
disclosure control of published aggregates; see ``app.services.products.maps``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from starlette.responses import Response

from app import rate_limit
from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import ReadsDep, SettingsDep
from app.errors import ValidationFailed, problem
from app.openapi import problems
from app.rate_limit import limit, partner_client_key, partner_limits
from app.routers.beneficiaries import Codes, PopulationDep
from app.routers.geography import not_modified
from app.routers.summaries import NOT_READY, public_cache
from app.services.disclosure.policy import Policy
from app.services.products import maps as map_service
from app.services.products import public as public_service
from app.services.products.maps import MapCache, MapQuery, MapResult
from app.services.sharing.beneficiaries_sql import Filters
from app.settings import Settings

router = APIRouter()

PUBLIC_CACHE_CONTROL = "public, max-age=60"
MeasurePath = Annotated[
    map_service.Measure,
    Path(
        description=(
            "`households` (published count per hexagon), `poverty_rate` (share of the "
            "hexagon's households with a PMT score below `cut_off`, 0..1, 3 decimals) or "
            "`mean_pmt_score` (2 decimals)"
        )
    ),
]
CutOff = Annotated[
    float,
    Query(ge=0, le=100, description="PMT score below which a household counts as poor"),
]
FormatParam = Annotated[
    Literal["geojson", "png"],
    Query(alias="format", description="`geojson` (the default) or `png` (an 800x800 picture)"),
]

_FEATURE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "features", "measure", "resolution", "registry_version", "disclosure"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "measure": {"type": "string"},
        "resolution": {"type": "integer"},
        "cut_off": {"type": "number"},
        "registry_version": {"type": "integer"},
        "as_of": {
            "type": "string",
            "format": "date-time",
            "description": "Public maps: the instant of the registry snapshot counted",
        },
        "households_without_location": {"type": ["integer", "null"]},
        "total": {"type": "object"},
        "disclosure": {"type": "object"},
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"const": "Feature"},
                    "geometry": {"type": "object"},
                    "properties": {
                        "type": "object",
                        "properties": {
                            "h3": {"type": "string"},
                            "value": {"type": ["number", "null"]},
                            "households": {"type": ["integer", "null"]},
                        },
                    },
                },
            },
        },
    },
}
_CONTENT: dict[str, Any] = {
    map_service.GEOJSON: {"schema": _FEATURE_SCHEMA},
    map_service.PNG: {"schema": {"type": "string", "format": "binary"}},
}


def map_cache(request: Request) -> MapCache:
    """The application's cache of finished maps (one per app, made on first use)."""
    cache: MapCache | None = getattr(request.app.state, "map_cache", None)
    if cache is None:
        cache = MapCache()
        request.app.state.map_cache = cache
    return cache


def policy_of(settings: Settings) -> Policy:
    return Policy(
        threshold=settings.suppress_below, rounding_base=settings.disclosure_rounding_base
    )


def _answer(result: MapResult, fmt: str, headers: dict[str, str]) -> Response:
    if fmt == "png":
        return Response(result.png(), media_type=map_service.PNG, headers=headers)
    return Response(result.body, media_type=map_service.GEOJSON, headers=headers)


@router.get(
    "/v1/public/maps/{measure}",
    tags=["public"],
    response_class=Response,
    responses={
        200: {
            "description": "The map: GeoJSON hexagons, or a PNG picture (`format=png`)",
            "content": _CONTENT,
            "headers": {
                "ETag": {"description": "Tag of refresh and body", "schema": {"type": "string"}},
                "Cache-Control": {
                    "description": PUBLIC_CACHE_CONTROL,
                    "schema": {"type": "string"},
                },
            },
        },
        304: {"description": "Not Modified: If-None-Match names the current tag"},
        **problems(
            429,
            503,
            _422="Unknown measure, resolution above 5, a cut-off that is not a whole number, "
            "unknown or misplaced code",
            _503=NOT_READY,
        ),
    },
)
async def public_map(
    request: Request,
    reads: ReadsDep,
    settings: SettingsDep,
    measure: MeasurePath,
    resolution: Annotated[
        int, Query(ge=0, le=map_service.PUBLIC_MAX_RESOLUTION, description="H3 resolution")
    ] = map_service.PUBLIC_MAX_RESOLUTION,
    cut_off: CutOff = map_service.DEFAULT_CUT_OFF,
    province: Codes = None,
    division: Codes = None,
    district: Codes = None,
    format_: FormatParam = "geojson",
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Households, poverty rate or mean PMT score per H3 hexagon; no credentials.

    Fair-use limited per client IP (`NSER_PUBLIC_LOOKUP_LIMITS`, counted apart from the
    score look-up). A hexagon of fewer than `NSER_SUPPRESS_BELOW` households, or withheld by
    another disclosure rule, has a null `value` and null `households`; published counts are
    rounded to `NSER_DISCLOSURE_ROUNDING_BASE`. `households_without_location` counts the
    households in scope without coordinates (Balochistan and the test-phase districts,
    missing by design), protected the same way. `cut_off` is a whole number here (partner
    maps take any). Counted by the worker's latest refresh of the public cube, never on the
    request: `registry_version` and `as_of` say which registry it describes.
    """
    state = request.app.state
    retry_after = rate_limit.hit(
        state.rate_limit_backend,
        state.public_lookup_limits,
        "public_maps",
        rate_limit.client_ip(request),
    )
    if retry_after is not None:
        return problem(
            429,
            f"fair-usage limit reached; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
    if cut_off != int(cut_off):
        raise ValidationFailed(
            f"cut_off: the public map takes a whole-number cut-off from 0 to 100, not "
            f"{cut_off:g} (partners' maps take any cut-off)"
        )
    query = MapQuery(
        measure,
        resolution,
        float(int(cut_off)),
        Filters(province=province or [], division=division or [], district=district or []),
    )
    answer = await public_service.public_map(
        reads, public_cache(request), query, format_, policy_of(settings)
    )
    headers = {"ETag": answer.etag, "Cache-Control": PUBLIC_CACHE_CONTROL}
    if not_modified(if_none_match, answer.etag):
        return Response(status_code=304, headers=headers)
    return Response(answer.body, media_type=answer.media_type, headers=headers)


MapReader = Annotated[Principal, Depends(require_scope(Scope.MAPS_READ))]


@router.get(
    "/v1/partner/maps/{measure}",
    tags=["partner"],
    response_class=Response,
    responses={
        200: {
            "description": "The map: GeoJSON hexagons, or a PNG picture (`format=png`)",
            "content": _CONTENT,
        },
        **problems(
            409,
            422,
            _409="The population differs from an earlier aggregate query of the agreement "
            "by fewer than the threshold's households, or too many earlier queries selected "
            "nearly as many (differencing control)",
            _422="Unknown measure, resolution above 7, unknown or misplaced code",
        ),
    },
)
@limit(partner_limits, key_func=partner_client_key)
async def partner_map(
    request: Request,
    partner: MapReader,
    reads: ReadsDep,
    settings: SettingsDep,
    measure: MeasurePath,
    filters: PopulationDep,
    resolution: Annotated[
        int, Query(ge=0, le=map_service.PARTNER_MAX_RESOLUTION, description="H3 resolution")
    ] = 6,
    cut_off: CutOff = map_service.DEFAULT_CUT_OFF,
    format_: FormatParam = "geojson",
) -> Response:
    """A map of the households within the agreement's geography (category vii), audited.

    The filters of the beneficiary lists; a code outside the agreement's geography is 403.
    Disclosure control as on the public map.
    """
    query = MapQuery(measure, resolution, cut_off, filters, partner.geo_codes)
    result = await map_service.partner_map(
        reads, map_cache(request), partner, query, policy_of(settings)
    )
    if format_ == "png":
        await map_service.rendered(result)
    # Each answer is audited: nothing between the partner and the service may keep it.
    return _answer(result, format_, {"Cache-Control": "no-store"})
