"""The statistics page's pure parts: summary answers as table rows, and the SVG bar chart.

Nothing here touches the database or the request: the router fetches the protected public
summary (``app.services.products.summaries``, the service behind ``GET /v1/public/summaries``)
and the geography names, and these functions shape them for the templates.

- :func:`areas_of` turns a summary grouped by one geography level and ``poverty_band`` into
  one :class:`AreaRow` per area (households, people, households per band and each band's
  share of the area), and the total row. Withheld counts stay ``None``; a share is known
  only when both its count and the area's total are published.
- :func:`stacked_bars` draws those shares as a horizontal stacked bar chart in SVG
  (``role="img"`` with ``<title>`` and ``<desc>``), each band with its own colour *and*
  pattern, percentages written on the wider segments, mirrored for right-to-left pages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from markupsafe import Markup, escape

from app.web.i18n import N_

if TYPE_CHECKING:
    from app.web.render import WebContext

# The bands in the order of the PMT model, then a household not yet scored.
BANDS = ("ultra_poor", "very_poor", "poor", "non_poor", "well_off", "unscored")
BAND_LABELS = {
    "ultra_poor": N_("Ultra poor"),
    "very_poor": N_("Very poor"),
    "poor": N_("Poor"),
    "non_poor": N_("Not poor"),
    "well_off": N_("Well off"),
    "unscored": N_("Not yet scored"),
}
WITHHELD = "withheld"


@dataclass(frozen=True)
class Style:
    """How a band is drawn: a fill with at least 4.5:1 contrast against white (so the
    white percentages on it are legible and the bar stands out from the page) and a
    pattern of its own, so no band is told apart by colour alone."""

    fill: str
    pattern: str  # "diagonal", "dots", "horizontal", "vertical", "none", "checks", "hatch"


STYLES = {
    "ultra_poor": Style("#8b1a1a", "diagonal"),
    "very_poor": Style("#b3410e", "dots"),
    "poor": Style("#7a5800", "horizontal"),
    "non_poor": Style("#1d5f99", "vertical"),
    "well_off": Style("#0b5d3b", "none"),
    "unscored": Style("#4a5560", "checks"),
    WITHHELD: Style("#ffffff", "hatch"),
}


@dataclass(frozen=True)
class BandCell:
    band: str
    households: int | None
    share: float | None  # of the area's households, 0..1; None: withheld or unknown


@dataclass(frozen=True)
class AreaRow:
    code: str | None  # None: the total row
    households: int | None
    members: int | None
    bands: tuple[BandCell, ...]


def _share(count: int | None, total: int | None) -> float | None:
    if count is None or total is None or total <= 0:
        return None
    return min(count / total, 1.0)


def bands_of(answer: Mapping[str, Any]) -> list[str]:
    """The bands the answer lists, in the model's order (any other value last, sorted)."""
    seen = {row["poverty_band"] for row in answer["rows"]}
    known = [b for b in BANDS if b in seen]
    return known + sorted(b for b in seen if b not in BANDS and b is not None)


def areas_of(answer: Mapping[str, Any], level: str) -> tuple[list[AreaRow], AreaRow]:
    """The rows of a public summary grouped by ``[level, "poverty_band"]``: one per area in
    the answer's order, and the total row (the grand total and the bands' margins)."""
    bands = bands_of(answer)
    cells: dict[tuple[str | None, str | None], Mapping[str, Any]] = {}
    for row in (*answer["rows"], *answer["margins"]):
        cells[(row[level], row["poverty_band"])] = row
    codes: list[str] = []
    for row in answer["rows"]:
        if row[level] not in codes:
            codes.append(row[level])

    def area(code: str | None) -> AreaRow:
        whole = cells.get((code, None), {})
        total = whole.get("households")
        return AreaRow(
            code=code,
            households=total,
            members=whole.get("members"),
            bands=tuple(
                BandCell(
                    band,
                    cells.get((code, band), {}).get("households"),
                    _share(cells.get((code, band), {}).get("households"), total),
                )
                for band in bands
            ),
        )

    return [area(code) for code in codes], area(None)


# -- the chart ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    key: str  # a band, or WITHHELD
    start: float  # 0..1 along the bar
    width: float  # 0..1


def segments(bands: Sequence[BandCell], total_known: bool = True) -> list[Segment]:
    """A bar's segments: each band's published share; whatever the withheld bands hold is
    one "withheld" segment at the end. Shares of rounded counts may add up to a little more
    or less than 1: with nothing withheld they are scaled to fill the bar, otherwise cut to
    it."""
    known = [(b.band, b.share) for b in bands if b.share is not None]
    unknown = any(b.share is None for b in bands)
    if not total_known or not known:
        return [Segment(WITHHELD, 0.0, 1.0)]
    total = sum(share for _, share in known)
    scale = 1 / total if (total > 1 or not unknown) and total > 0 else 1.0
    out: list[Segment] = []
    at = 0.0
    for band, share in known:
        width = share * scale
        if width > 0:
            out.append(Segment(band, at, width))
        at += width
    if unknown and at < 1 - 1e-9:
        out.append(Segment(WITHHELD, at, 1 - at))
    return out


@dataclass(frozen=True)
class Bar:
    label: str
    segments: tuple[Segment, ...]


def _pattern(pid: str, style: Style) -> str:
    mark = "#ffffff" if style.pattern != "hatch" else "#4a5560"
    body = {
        "diagonal": f'<path d="M-2 2l4-4M0 8l8-8M6 10l4-4" stroke="{mark}" stroke-width="1.5"/>',
        "dots": f'<circle cx="4" cy="4" r="1.6" fill="{mark}"/>',
        "horizontal": f'<path d="M0 4h8" stroke="{mark}" stroke-width="1.5"/>',
        "vertical": f'<path d="M4 0v8" stroke="{mark}" stroke-width="1.5"/>',
        "checks": f'<path d="M0 0h4v4H0zM4 4h4v4H4z" fill="{mark}"/>',
        "hatch": f'<path d="M-2 2l4-4M0 8l8-8M6 10l4-4" stroke="{mark}" stroke-width="1.2"/>',
        "none": "",
    }[style.pattern]
    opacity = "" if style.pattern == "hatch" else ' opacity="0.45"'
    return (
        f'<pattern id="{pid}" width="8" height="8" patternUnits="userSpaceOnUse">'
        f'<rect width="8" height="8" fill="{style.fill}"/><g{opacity}>{body}</g></pattern>'
    )


def stacked_bars(
    bars: Sequence[Bar],
    legend: Iterable[tuple[str, str]],
    *,
    title: str,
    desc: str,
    percent: Callable[[float], str],
    rtl: bool = False,
    chart_id: str = "chart",
    width: int = 760,
    row_height: int = 34,
    label_width: int = 190,
) -> Markup:
    """An SVG horizontal stacked bar chart, one bar per area, 100% wide.

    ``legend`` is ``(key, label)`` per band shown (and ``WITHHELD``); ``percent`` formats a
    share in the page's language. Every text is escaped. With ``rtl`` the labels are on the
    right and the bars run from right to left.
    """
    legend = list(legend)
    gap = 8
    bar_height = row_height - 12
    bar_width = width - label_width - gap
    bar_x0 = gap if rtl else label_width
    top = 8
    legend_row = row_height
    per_line = 3
    legend_lines = (len(legend) + per_line - 1) // per_line
    height = top + len(bars) * row_height + 12 + legend_lines * legend_row + 4
    keys = {key for key, _ in legend} | {s.key for bar in bars for s in bar.segments}
    ids = {key: f"{chart_id}-{key}" for key in keys}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'direction="{"rtl" if rtl else "ltr"}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
        "<defs>",
        *(_pattern(ids[key], STYLES.get(key, STYLES["unscored"])) for key in sorted(keys)),
        "</defs>",
    ]
    label_x = width - 4 if rtl else 4
    for i, bar in enumerate(bars):
        y = top + i * row_height
        parts.append(
            f'<text x="{label_x}" y="{y + bar_height / 2:.1f}" dominant-baseline="central" '
            f'text-anchor="start" class="chart-label">{escape(bar.label)}</text>'
        )
        for seg in bar.segments:
            w = seg.width * bar_width
            x = bar_x0 + ((1 - seg.start - seg.width) if rtl else seg.start) * bar_width
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_height}" '
                f'fill="url(#{ids[seg.key]})" stroke="#1b1f23" stroke-width="1"/>'
            )
            if seg.key != WITHHELD and seg.width >= 0.09:
                fill = STYLES.get(seg.key, STYLES["unscored"]).fill
                parts.append(
                    f'<text x="{x + w / 2:.1f}" y="{y + bar_height / 2:.1f}" '
                    f'dominant-baseline="central" text-anchor="middle" class="chart-value" '
                    f'fill="#ffffff" stroke="{fill}" stroke-width="4" paint-order="stroke">'
                    f"{escape(percent(seg.width))}</text>"
                )
    y0 = top + len(bars) * row_height + 12
    column = width // per_line
    for i, (key, label) in enumerate(legend):
        line, col = divmod(i, per_line)
        y = y0 + line * legend_row
        x = width - col * column - 22 if rtl else col * column + 4
        text_x = x - 8 if rtl else x + 26
        parts.append(
            f'<rect x="{x}" y="{y}" width="18" height="18" fill="url(#{ids[key]})" '
            f'stroke="#1b1f23" stroke-width="1"/>'
            f'<text x="{text_x}" y="{y + 9}" dominant-baseline="central" text-anchor="start" '
            f'class="chart-legend">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above is escaped


__all__ = [
    "BANDS",
    "BAND_LABELS",
    "STYLES",
    "WITHHELD",
    "AreaRow",
    "BandCell",
    "Bar",
    "Segment",
    "areas_of",
    "bands_of",
    "segments",
    "stacked_bars",
]


def cell_formatters(
    web: WebContext, names: Mapping[str, tuple[str, str]]
) -> dict[str, Callable[[Any], Markup]]:
    """``name_of(code)``, ``count(n)`` and ``share(x)`` for the tables' cells: a withheld
    value reads "withheld", an area name carries ``lang`` when it is not the page's."""
    withheld = Markup('<span class="suppressed">{}</span>').format(web.gettext("withheld"))

    def name_of(code: str | None) -> Markup:
        name, lang = names.get(code or "", (code or "", "en"))
        if lang != web.lang:
            return Markup('<span lang="{}">{}</span>').format(lang, name)
        return Markup("<span>{}</span>").format(name)

    def count(value: int | None) -> Markup:
        return withheld if value is None else escape(web.fmt.number(value))

    def share(value: float | None) -> Markup:
        return withheld if value is None else escape(web.fmt.percent(value))

    return {"name_of": name_of, "count": count, "share": share}
