"""The statistics page, ``/statistics``: public summaries by province, or by district of one.

Reads the protected public summary through the same service and cache as
``GET /v1/public/summaries`` (``app.services.products.public``, answers the worker
pre-renders with each refresh of the public cube): the website adds no second back end,
and every number on the page has passed the same disclosure control.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse

from app.deps import ReadsDep, SettingsDep
from app.replicas import Reads
from app.routers.summaries import public_cache
from app.services.products import public as public_service
from app.services.products import summaries as summary_service
from app.services.registry import geography as geography_service
from app.web.public.statistics import page as stats
from app.web.render import RenderedPages, WebContext, WebDep, WebError, render, respond
from app.web.site import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)

NAMES_TTL = 300.0
_names: dict[tuple[str, str | None, str], tuple[float, dict[str, tuple[str, str]]]] = {}

ProvinceParam = Annotated[
    str | None,
    Query(max_length=16, pattern=r"^[A-Za-z0-9]*$", description="A province code, e.g. PK6"),
]


async def area_names(
    reads: Reads, level: str, parent: str | None, lang: str
) -> dict[str, tuple[str, str]]:
    """``{code: (name, lang of the name)}`` of a level's units (under ``parent``): the Urdu
    name on Urdu pages where the registry has one, else the English name.

    Provinces and districts are reference data that change only with a release, so the
    answer is kept for ``NAMES_TTL`` seconds rather than read for every page."""
    key = (level, parent, lang)
    kept = _names.get(key)
    if kept is not None and kept[0] > time.monotonic():
        return kept[1]
    units = orjson.loads(await geography_service.units(reads, level, parent, None))["items"]
    names: dict[str, tuple[str, str]] = {}
    for unit in units:
        if lang == "ur" and unit["name_ur"]:
            names[unit["code"]] = (unit["name_ur"], "ur")
        else:
            names[unit["code"]] = (unit["name"], "en")
    if len(_names) > 1000:  # the levels x parents x languages pages ask for are few
        _names.clear()
    _names[key] = (time.monotonic() + NAMES_TTL, names)
    return names


async def chosen_province(
    reads: Reads, web: WebContext, province: str | None
) -> tuple[dict[str, tuple[str, str]], str | None]:
    """The provinces' names and the province asked for (None: the whole country); a code
    that is not a province is a friendly 404 page."""
    provinces = await area_names(reads, "province", None, web.lang)
    chosen = province.upper() if province else None
    if chosen is not None and chosen not in provinces:
        raise WebError(
            404,
            web.gettext(
                "There is no province with the code %(code)s. Choose a province from the list.",
                code=province,
            ),
        )
    return provinces, chosen


def chart(
    web: WebContext,
    areas: list[stats.AreaRow],
    names: dict[str, tuple[str, str]],
    bands: list[str],
    title: str,
) -> Any:
    bars = [
        stats.Bar(
            names.get(area.code or "", (area.code or "", "en"))[0],
            tuple(stats.segments(area.bands, area.households is not None)),
        )
        for area in areas
    ]
    legend = [(band, web.gettext(stats.BAND_LABELS.get(band, band))) for band in bands]
    legend.append((stats.WITHHELD, web.gettext("Withheld")))
    return stats.stacked_bars(
        bars,
        legend,
        title=title,
        desc=web.gettext(
            "Each bar is one area, divided by the share of its households in each poverty "
            "band. Hatched parts are withheld to protect privacy. The table above gives "
            "the same numbers."
        ),
        percent=lambda share: web.fmt.percent(share, 0),
        rtl=web.dir == "rtl",
        chart_id="band-chart",
        row_height=46 if web.lang == "ur" else 34,
    )


@router.get("/statistics", response_class=HTMLResponse)
async def statistics(
    request: Request,
    web: WebDep,
    reads: ReadsDep,
    settings: SettingsDep,
    province: ProvinceParam = None,
) -> HTMLResponse:
    """Households, people and poverty bands by province, or by district of ``province``."""
    provinces, chosen = await chosen_province(reads, web, province)
    if chosen is None:
        level, names, geo = "province", provinces, {}
    else:
        level = "district"
        names = await area_names(reads, "district", chosen, web.lang)
        geo = {"province": [chosen]}
    answer_bytes = await public_service.public_summary(
        reads,
        public_cache(request),
        [level, "poverty_band"],
        geo,
        summary_service.policy_of(settings),
    )
    # The page depends only on the language, the area and the published summary: render it
    # once per summary version (its ETag) rather than for every visitor.
    key = (web.lang, chosen, answer_bytes.etag)
    rendered = _rendered(request)
    html = rendered.get(key)
    if html is None:
        html = _render(web, answer_bytes.body, provinces, chosen, level, names)
        rendered.put(key, html)
    return respond(web, html)


def _rendered(request: Request) -> RenderedPages:
    pages: RenderedPages | None = getattr(request.app.state, "statistics_pages", None)
    if pages is None:
        pages = request.app.state.statistics_pages = RenderedPages()
    return pages


def _render(
    web: WebContext,
    body: bytes,
    provinces: dict[str, tuple[str, str]],
    chosen: str | None,
    level: str,
    names: dict[str, tuple[str, str]],
) -> str:
    answer = orjson.loads(body)
    areas, total = stats.areas_of(answer, level)
    bands = stats.bands_of(answer)
    if chosen is None:
        scope = web.gettext("Pakistan, by province")
        chart_title = web.gettext("Share of households in each poverty band, by province")
    else:
        scope = web.gettext("%(province)s, by district", province=provinces[chosen][0])
        chart_title = web.gettext(
            "Share of households in each poverty band, by district of %(province)s",
            province=provinces[chosen][0],
        )
    return render(
        web,
        "statistics/index.html",
        provinces=provinces,
        chosen=chosen,
        level=level,
        names=names,
        areas=areas,
        total=total,
        bands=bands,
        band_labels=stats.BAND_LABELS,
        scope=scope,
        disclosure=answer["disclosure"],
        registry_version=answer["registry_version"],
        chart=chart(web, areas, names, bands, chart_title),
        **stats.cell_formatters(web, names),
    )
