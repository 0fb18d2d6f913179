"""The map page's pure parts: measure names, the colour scale's legend, the text alternative.

The picture itself is the public map endpoint's PNG (``GET /v1/public/maps/{measure}
?format=png``), drawn by ``app.services.products.maps``; this module explains it in the
page's language: an SVG legend with the same colour ramp and the same grey hatching for
withheld hexagons, and the facts the ``alt`` text and the table give.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from app.services.products import maps as map_service
from app.web.i18n import N_

MEASURES = map_service.MEASURES
MEASURE_LABELS = {
    "households": N_("Households"),
    "poverty_rate": N_("Poverty rate"),
    "mean_pmt_score": N_("Average PMT score"),
}
# Hexagon sizes offered (H3 resolutions the public map accepts) and their names.
RESOLUTIONS = {
    3: N_("Large hexagons (about 12,000 km²)"),
    4: N_("Medium hexagons (about 1,800 km²)"),
    5: N_("Small hexagons (about 250 km²)"),
}
DEFAULT_RESOLUTION = map_service.PUBLIC_MAX_RESOLUTION
# The picture's colours (app.services.products.maps draws with these).
RAMP: Sequence[tuple[int, int, int]] = map_service.RAMP
WITHHELD_FILL: tuple[int, int, int] = map_service.SUPPRESSED_FILL
WITHHELD_HATCH: tuple[int, int, int] = map_service.SUPPRESSED_HATCH


def hex_colour(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@dataclass(frozen=True)
class Summary:
    """What a map shows, for the legend and the ``alt`` text."""

    hexagons: int
    withheld: int
    low: float | None
    high: float | None


def summarize(features: Sequence[tuple[str, Any, Any]]) -> Summary:
    """Counts and the value range of a map's features ``(h3, value, households)``."""
    values = [float(v) for _, v, _ in features if v is not None]
    return Summary(
        hexagons=len(features),
        withheld=sum(1 for _, v, _ in features if v is None),
        low=min(values) if values else None,
        high=max(values) if values else None,
    )


def format_value(measure: str, value: float | None, fmt: Any) -> str:
    """A measure's value as the page's language writes it ("" when withheld)."""
    if value is None:
        return ""
    if measure == "poverty_rate":
        return str(fmt.percent(value, 0))
    if measure == "households":
        return str(fmt.number(value))
    return str(fmt.number(value, 1))


def legend_svg(
    low: str,
    high: str,
    *,
    withheld_label: str,
    rtl: bool = False,
    legend_id: str = "map-legend",
) -> Markup:
    """The colour scale as on the picture (``low`` to ``high``, already formatted), and the
    grey hatched swatch of withheld hexagons. Hidden from screen readers (``aria-hidden``):
    the text beside it says the same in words."""
    width, bar = 360, 240
    stops = "".join(
        f'<stop offset="{i / (len(RAMP) - 1):.3f}" stop-color="{hex_colour(c)}"/>'
        for i, c in enumerate(RAMP)
    )
    x_bar = width - bar - 4 if rtl else 4
    x_low, x_high = (x_bar + bar, x_bar) if rtl else (x_bar, x_bar + bar)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="map-legend" aria-hidden="true" '
        f'focusable="false" viewBox="0 0 {width} 80" width="{width}" height="80" '
        f'direction="{"rtl" if rtl else "ltr"}">',
        "<defs>",
        f'<linearGradient id="{legend_id}-ramp" x1="{1 if rtl else 0}" x2="{0 if rtl else 1}" '
        f'y1="0" y2="0">{stops}</linearGradient>',
        f'<pattern id="{legend_id}-hatch" width="6" height="6" patternUnits="userSpaceOnUse">'
        f'<rect width="6" height="6" fill="{hex_colour(WITHHELD_FILL)}"/>'
        f'<path d="M-1 1l2-2M0 6l6-6M5 7l2-2" stroke="{hex_colour(WITHHELD_HATCH)}"/></pattern>',
        "</defs>",
        f'<rect x="{x_bar}" y="6" width="{bar}" height="16" fill="url(#{legend_id}-ramp)" '
        f'stroke="#1b1f23"/>',
        f'<text x="{x_low}" y="38" text-anchor="{"end" if rtl else "start"}" '
        f'direction="ltr">{escape(low)}</text>',
        f'<text x="{x_high}" y="38" text-anchor="{"start" if rtl else "end"}" '
        f'direction="ltr">{escape(high)}</text>',
    ]
    x_swatch = width - 22 if rtl else 4
    parts.append(
        f'<rect x="{x_swatch}" y="54" width="18" height="18" fill="url(#{legend_id}-hatch)" '
        f'stroke="#1b1f23"/>'
        f'<text x="{x_swatch - 8 if rtl else x_swatch + 26}" y="68" text-anchor="start">'
        f"{escape(withheld_label)}</text>"
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above is escaped


def measure_text(measure: str, gettext: Callable[..., str], cut_off: str) -> str:
    """What the colours of a map mean, in one sentence of the page's language."""
    if measure == "households":
        return gettext("The darker a hexagon, the more households it has.")
    if measure == "poverty_rate":
        return gettext(
            "The darker a hexagon, the larger the share of its households with a PMT score "
            "below %(cut_off)s.",
            cut_off=cut_off,
        )
    return gettext(
        "The darker a hexagon, the higher the average PMT score of its households "
        "(higher scores mean less poverty)."
    )


__all__ = [
    "DEFAULT_RESOLUTION",
    "MEASURES",
    "MEASURE_LABELS",
    "RAMP",
    "RESOLUTIONS",
    "Summary",
    "format_value",
    "legend_svg",
    "measure_text",
    "summarize",
]
