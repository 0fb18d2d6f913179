"""The map page, ``/map``: the public hex-bin poverty map, its legend and a table of the same.

The picture is the public map endpoint's PNG (``GET /v1/public/maps/{measure}?format=png``,
same origin). The page asks the same service and cache for that map's GeoJSON (to write
the legend's range and the ``alt`` text), and for one whole-area map per province (or per
district of the chosen province) for the table that says in numbers what the picture
shows: no second back end. The worker pre-renders all of them, pictures included, with
each refresh of the public cube (``app.services.products.public.prerender``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse

from app.deps import ReadsDep, SettingsDep
from app.replicas import Reads
from app.routers.maps import policy_of
from app.routers.summaries import public_cache
from app.services.products import maps as map_service
from app.services.products import public as public_service
from app.web.public.map import page as web_map
from app.web.public.statistics.routes import ProvinceParam, area_names, chosen_province
from app.web.render import WebDep, page
from app.web.site import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)

MeasureParam = Annotated[
    Literal["households", "poverty_rate", "mean_pmt_score"],
    Query(description="What the colours show"),
]
ResolutionParam = Annotated[
    int, Query(ge=min(web_map.RESOLUTIONS), le=max(web_map.RESOLUTIONS), description="H3")
]
# The table's per-area maps: one hexagon level is enough for an area's total.
TOTAL_RESOLUTION = 0
AREA_CONCURRENCY = 3


@dataclass(frozen=True)
class AreaTotal:
    code: str
    households: int | None  # located households, as published
    value: float | None
    without_location: int | None


async def area_total(
    request: Request, reads: Reads, settings: Any, measure: str, level: str, code: str
) -> AreaTotal:
    answer = await public_service.public_map(
        reads,
        public_cache(request),
        public_service.map_query(measure, TOTAL_RESOLUTION, {level: [code]}),
        "geojson",
        policy_of(settings),
    )
    head = answer.json()  # a handful of hexagons at resolution 0
    return AreaTotal(
        code=code,
        households=head["total"]["households"],
        value=head["total"]["value"],
        without_location=head["households_without_location"],
    )


@router.get("/map", response_class=HTMLResponse)
async def poverty_map(
    request: Request,
    web: WebDep,
    reads: ReadsDep,
    settings: SettingsDep,
    measure: MeasureParam = "poverty_rate",
    resolution: ResolutionParam = web_map.DEFAULT_RESOLUTION,
    province: ProvinceParam = None,
) -> HTMLResponse:
    """The map of ``measure`` for the country or one province, with legend and table."""
    provinces, chosen = await chosen_province(reads, web, province)
    geo = {"province": [chosen]} if chosen else {}
    policy = policy_of(settings)
    answer = await public_service.public_map(
        reads,
        public_cache(request),
        public_service.map_query(measure, resolution, geo),
        "geojson",
        policy,
    )
    summary = web_map.summarize(public_service.features_of(answer))
    if chosen is None:
        level, names = "province", provinces
        scope = web.gettext("Pakistan")
    else:
        level = "district"
        names = await area_names(reads, "district", chosen, web.lang)
        scope = provinces[chosen][0]
    # A few at a time: each holds a pool connection while it checks and reads.
    slots = asyncio.Semaphore(AREA_CONCURRENCY)

    async def bounded(code: str) -> AreaTotal:
        async with slots:
            return await area_total(request, reads, settings, measure, level, code)

    totals = await asyncio.gather(*(bounded(code) for code in names))
    fmt = web.fmt
    cut_off = fmt.number(map_service.DEFAULT_CUT_OFF)
    low = web_map.format_value(measure, summary.low, fmt)
    high = web_map.format_value(measure, summary.high, fmt)
    image_query: list[tuple[str, str]] = [("format", "png"), ("resolution", str(resolution))]
    if chosen:
        image_query.append(("province", chosen))
    image_src = f"/v1/public/maps/{measure}?{urlencode(image_query)}"
    measure_label = web.gettext(web_map.MEASURE_LABELS[measure])
    if summary.low is None:
        alt = web.gettext(
            "Map of %(measure)s by hexagon for %(scope)s: no hexagon can be shown.",
            measure=measure_label.lower() if web.lang == "en" else measure_label,
            scope=scope,
        )
    else:
        alt = web.gettext(
            "Map of %(measure)s by hexagon for %(scope)s. %(hexagons)s hexagons, from "
            "%(low)s (lightest) to %(high)s (darkest); %(withheld)s hexagons are withheld "
            "(grey, hatched). The table below the map gives the same measure by area.",
            measure=measure_label.lower() if web.lang == "en" else measure_label,
            scope=scope,
            hexagons=fmt.number(summary.hexagons),
            low=low,
            high=high,
            withheld=fmt.number(summary.withheld),
        )
    return page(
        web,
        "map/index.html",
        measure=measure,
        measures=web_map.MEASURES,
        measure_labels=web_map.MEASURE_LABELS,
        measure_label=measure_label,
        measure_text=web_map.measure_text(measure, web.gettext, cut_off),
        resolution=resolution,
        resolutions=web_map.RESOLUTIONS,
        provinces=provinces,
        chosen=chosen,
        level=level,
        names=names,
        scope=scope,
        totals=totals,
        summary=summary,
        image_src=image_src,
        alt=alt,
        legend=web_map.legend_svg(
            low or "",
            high or "",
            withheld_label=web.gettext("Withheld"),
            rtl=web.dir == "rtl",
        ),
        format_value=lambda value: web_map.format_value(measure, value, fmt),
        cut_off=cut_off,
        suppress_below=policy.threshold,
        rounding_base=policy.rounding_base,
        registry_version=answer.json()["registry_version"],
    )
