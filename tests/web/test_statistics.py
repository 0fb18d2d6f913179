"""/statistics: the public summaries as tables and an SVG chart, in a browser and over HTTP;
and the pure parts (app.web.public.statistics.page: table rows, bar segments, the SVG builder)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from xml.etree import ElementTree

import httpx
import pytest
from browser import axe_violations, screenshot
from playwright.sync_api import Page
from server import Server

from app.web.public.statistics import page as stats

SVG = "{http://www.w3.org/2000/svg}"
_ips = itertools.count(1)


def visitor(site: Server) -> httpx.Client:
    n = next(_ips)
    return httpx.Client(
        base_url=site.base_url, headers={"X-Forwarded-For": f"10.91.{n // 250}.{n % 250 + 1}"}
    )


# -- pure: rows, segments, the chart ------------------------------------------------------------

ANSWER = {
    "rows": [
        {"province": "PK1", "poverty_band": "poor", "households": 20, "members": 90},
        {"province": "PK1", "poverty_band": "non_poor", "households": None, "members": None},
        {"province": "PK2", "poverty_band": "poor", "households": 30, "members": 100},
        {"province": "PK2", "poverty_band": "non_poor", "households": 70, "members": 300},
    ],
    "margins": [
        {"province": "PK1", "poverty_band": None, "households": 25, "members": 100},
        {"province": "PK2", "poverty_band": None, "households": 100, "members": 400},
        {"province": None, "poverty_band": "poor", "households": 50, "members": 190},
        {"province": None, "poverty_band": "non_poor", "households": 75, "members": 310},
        {"province": None, "poverty_band": None, "households": 125, "members": 500},
    ],
}


def test_areas_of_keeps_withheld_counts_and_their_shares_unknown() -> None:
    areas, total = stats.areas_of(ANSWER, "province")
    assert [a.code for a in areas] == ["PK1", "PK2"]
    pk1, pk2 = areas
    assert (pk1.households, pk1.members) == (25, 100)
    assert pk1.bands == (
        stats.BandCell("poor", 20, 0.8),
        stats.BandCell("non_poor", None, None),
    )
    assert [b.share for b in pk2.bands] == [0.3, 0.7]
    assert total.code is None
    assert total.households == 125
    assert [b.households for b in total.bands] == [50, 75]
    assert stats.bands_of(ANSWER) == ["poor", "non_poor"]


def test_areas_of_without_a_published_total_has_no_shares() -> None:
    answer = {
        "rows": [{"district": "PK601", "poverty_band": "poor", "households": 15, "members": 1}],
        "margins": [
            {"district": "PK601", "poverty_band": None, "households": None, "members": None},
            {"district": None, "poverty_band": "poor", "households": 15, "members": 1},
            {"district": None, "poverty_band": None, "households": None, "members": None},
        ],
    }
    (area,), _ = stats.areas_of(answer, "district")
    assert area.bands == (stats.BandCell("poor", 15, None),)


def test_segments_fill_the_bar_and_put_what_is_withheld_last() -> None:
    known = [stats.BandCell("poor", 30, 0.3), stats.BandCell("non_poor", 70, 0.71)]
    # Rounded counts may overshoot: scaled to fill exactly.
    segs = stats.segments(known)
    assert [s.key for s in segs] == ["poor", "non_poor"]
    assert segs[1].start == pytest.approx(segs[0].width)
    assert sum(s.width for s in segs) == pytest.approx(1.0)
    partly = [stats.BandCell("poor", 20, 0.8), stats.BandCell("non_poor", None, None)]
    segs = stats.segments(partly)
    assert [(s.key, round(s.start, 3), round(s.width, 3)) for s in segs] == [
        ("poor", 0.0, 0.8),
        (stats.WITHHELD, 0.8, 0.2),
    ]
    # Nothing published, or no total: the whole bar is withheld.
    assert stats.segments([stats.BandCell("poor", None, None)]) == [
        stats.Segment(stats.WITHHELD, 0.0, 1.0)
    ]
    assert stats.segments(known, total_known=False) == [stats.Segment(stats.WITHHELD, 0.0, 1.0)]


def chart(rtl: bool = False, label: str = "Punjab") -> ElementTree.Element:
    bars = [
        stats.Bar(label, tuple(stats.segments([stats.BandCell("poor", 20, 0.8)]))),
        stats.Bar("Sindh", (stats.Segment(stats.WITHHELD, 0.0, 1.0),)),
    ]
    svg = stats.stacked_bars(
        bars,
        [("poor", "Poor"), (stats.WITHHELD, "Withheld")],
        title="Bands <by> province",
        desc="Same as the table",
        percent=lambda share: f"{share * 100:.0f}%",
        rtl=rtl,
        chart_id="t",
    )
    return ElementTree.fromstring(str(svg))


def test_chart_is_an_accessible_image_with_patterns_and_labels() -> None:
    root = chart()
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "t-title t-desc"
    assert root.find(f"{SVG}title").text == "Bands <by> province"  # escaped, parsed back
    assert root.find(f"{SVG}desc").text == "Same as the table"
    patterns = {p.get("id") for p in root.iter(f"{SVG}pattern")}
    assert patterns == {"t-poor", f"t-{stats.WITHHELD}"}
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert texts[:2] == ["Punjab", "100%"]  # a single published band fills its bar
    assert "Sindh" in texts
    assert "Withheld" in texts
    fills = [r.get("fill") for r in root.iter(f"{SVG}rect") if r.get("fill", "").startswith("url")]
    assert "url(#t-poor)" in fills
    assert f"url(#t-{stats.WITHHELD})" in fills


def test_chart_escapes_labels_and_mirrors_for_right_to_left() -> None:
    root = chart(label='<script>"x"</script>')
    assert root.find(f"{SVG}script") is None
    assert next(root.iter(f"{SVG}text")).text == '<script>"x"</script>'
    ltr_bar = next(r for r in chart().iter(f"{SVG}rect") if r.get("fill") == "url(#t-poor)")
    rtl = chart(rtl=True)
    rtl_bar = next(r for r in rtl.iter(f"{SVG}rect") if r.get("fill") == "url(#t-poor)")
    assert float(ltr_bar.get("x")) > float(rtl_bar.get("x"))  # labels left vs right
    assert rtl.get("direction") == "rtl"
    label = next(rtl.iter(f"{SVG}text"))
    assert float(label.get("x")) > float(rtl_bar.get("x"))


def test_band_colours_have_enough_contrast_for_white_figures() -> None:
    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    for key, style in stats.STYLES.items():
        if key != stats.WITHHELD:
            assert 1.05 / (luminance(style.fill) + 0.05) >= 4.5, key
    assert len({s.pattern for s in stats.STYLES.values()}) == len(stats.STYLES)


# -- over HTTP ----------------------------------------------------------------------------------


def test_tables_match_the_public_api(site: Server) -> None:
    with visitor(site) as http:
        page = http.get("/statistics?lang=en")
        api = http.get("/v1/public/summaries?group_by=province,poverty_band").json()
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    assert '<caption id="people-caption">Households and people: Pakistan, by province' in text
    assert text.count('<th scope="row">') >= 2 * 7
    assert 'scope="colgroup"' in text
    assert 'class="suppressed">withheld</span>' in text  # the seeded registry has small cells
    total = next(m for m in api["margins"] if m["province"] is None and m["poverty_band"] is None)
    footer = text[text.index("<tfoot>") : text.index("</tfoot>")]
    assert f"{total['households']:,}" in footer
    assert f"{total['members']:,}" in footer
    assert 'role="img"' in text
    assert '<title id="band-chart-title">' in text


def test_a_province_shows_its_districts_with_urdu_names(site: Server) -> None:
    with visitor(site) as http:
        en = http.get("/statistics?province=PK6&lang=en")
        ur = http.get("/statistics?province=pk6&lang=ur")
    assert en.status_code == 200
    assert ur.status_code == 200
    assert "Punjab, by district" in en.text
    assert "Lahore" in en.text
    assert "پنجاب، ضلع وار" in ur.text
    assert "لاہور" in ur.text
    assert re.search(r'<option value="PK6" selected', ur.text)


def test_unknown_or_malformed_province_is_a_friendly_page(site: Server) -> None:
    with visitor(site) as http:
        unknown = http.get("/statistics?province=PK99&lang=en")
        district = http.get("/statistics?province=PK601&lang=ur")
        malformed = http.get("/statistics", params={"province": "<PK6>", "lang": "en"})
        extra = http.get("/statistics?district=PK601")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("text/html")
    assert "There is no province with the code PK99" in unknown.text
    assert district.status_code == 404
    assert "PK601 کوڈ کا کوئی صوبہ نہیں ہے" in district.text
    assert malformed.status_code == 422
    assert "&lt;PK6&gt;" not in malformed.text
    assert "<PK6>" not in malformed.text
    assert extra.status_code == 422
    assert "text/html" in extra.headers["content-type"]


# -- in a browser -------------------------------------------------------------------------------


def weigh(page: Page, url: str) -> int:
    """Bytes of everything the page loaded but fonts (HTML, CSS, JS, images)."""
    sizes: dict[str, int] = {}
    page.on("response", lambda r: sizes.__setitem__(r.url, len(r.body())))
    page.goto(url, wait_until="networkidle")
    return sum(size for url, size in sizes.items() if not url.endswith(".woff2"))


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "ur"])
def test_statistics_page_in_a_browser(new_page: Callable[..., Page], lang: str) -> None:
    page = new_page(bypass_csp=True)
    weight = weigh(page, f"/statistics?lang={lang}")
    assert 0 < weight < 200 * 1024
    tables = page.locator("table.data")
    assert tables.count() == 2
    assert page.locator("#people-table tbody tr").count() == 7
    assert page.locator("#bands-table .suppressed").count() > 0
    chart = page.locator("svg.chart")
    assert chart.get_attribute("role") == "img"
    assert chart.locator("title").text_content()
    assert chart.bounding_box()["height"] > 100  # type: ignore[index]
    screenshot(page, f"statistics-{lang}-desktop")
    assert axe_violations(page) == []
    # Drilling into a province is a plain link: no JavaScript needed.
    page.locator("#people-table tbody a").nth(5).click()
    assert "province=" in page.url
    assert page.locator("#people-table tbody tr").count() > 5


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "ur"])
def test_statistics_page_on_a_phone(phone_page: Page, lang: str) -> None:
    phone_page.goto(f"/statistics?lang={lang}")
    overflow = phone_page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0  # wide tables and the chart scroll inside their own boxes
    screenshot(phone_page, f"statistics-{lang}-phone")
