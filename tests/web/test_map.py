"""/map: the public hex-bin map's PNG in a figure with a legend, an alt text and a table, in a
browser and over HTTP; and the pure parts (app.web.public.map.page)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from xml.etree import ElementTree

import httpx
import pytest
from browser import axe_violations, screenshot
from playwright.sync_api import Page
from server import Server

from app.web.i18n import Formatter
from app.web.public.map import page as web_map

SVG = "{http://www.w3.org/2000/svg}"
_ips = itertools.count(1)


def visitor(site: Server) -> httpx.Client:
    n = next(_ips)
    return httpx.Client(
        base_url=site.base_url,
        headers={"X-Forwarded-For": f"10.92.{n // 250}.{n % 250 + 1}"},
        timeout=60,
    )


# -- pure ----------------------------------------------------------------------------------------


def test_summary_and_values_in_each_language() -> None:
    summary = web_map.summarize([("a", 0.25, 20), ("b", None, None), ("c", 0.5, 40)])
    assert summary == web_map.Summary(hexagons=3, withheld=1, low=0.25, high=0.5)
    assert web_map.summarize([]) == web_map.Summary(0, 0, None, None)
    en, ur = Formatter("en"), Formatter("ur")
    assert web_map.format_value("poverty_rate", 0.253, en) == "25%"
    assert web_map.format_value("households", 12345, en) == "12,345"
    assert web_map.format_value("mean_pmt_score", 31.26, ur) == "31.3"
    assert web_map.format_value("households", None, en) == ""


def test_legend_uses_the_pictures_ramp_and_escapes() -> None:
    svg = web_map.legend_svg("<1>", "9", withheld_label="Withheld & hidden", rtl=True)
    root = ElementTree.fromstring(str(svg))
    assert root.get("aria-hidden") == "true"
    stops = [s.get("stop-color") for s in root.iter(f"{SVG}stop")]
    assert stops == [web_map.hex_colour(c) for c in web_map.RAMP]
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert texts == ["<1>", "9", "Withheld & hidden"]
    gradient = next(root.iter(f"{SVG}linearGradient"))
    assert (gradient.get("x1"), gradient.get("x2")) == ("1", "0")  # runs right to left


# -- over HTTP ----------------------------------------------------------------------------------


def test_map_page_points_at_the_public_png_and_tabulates_it(site: Server) -> None:
    with visitor(site) as http:
        page = http.get("/map?lang=en&measure=households&resolution=4")
        assert page.status_code == 200
        text = page.text
        src = '/v1/public/maps/households?format=png&amp;resolution=4"'
        assert f'src="{src}' in text
        image = http.get("/v1/public/maps/households?format=png&resolution=4")
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert 'alt="Map of households by hexagon for Pakistan.' in text
        assert '<figure class="map-figure"' in text
        assert 'href="#map-data"' in text
        assert text.count('<th scope="row">') == 7  # one row per province
        province = http.get("/map?lang=ur&measure=poverty_rate&province=PK6")
        assert province.status_code == 200
        assert "&amp;province=PK6" in province.text
        assert "لاہور" in province.text  # districts by their Urdu names
        assert "شرحِ غربت ضلع وار: پنجاب" in province.text


def test_bad_choices_are_friendly_pages(site: Server) -> None:
    with visitor(site) as http:
        unknown = http.get("/map?province=PK99&lang=en")
        measure = http.get("/map?measure=income")
        resolution = http.get("/map?resolution=7")
    assert unknown.status_code == 404
    assert "There is no province with the code PK99" in unknown.text
    for answer in (measure, resolution):
        assert answer.status_code == 422
        assert answer.headers["content-type"].startswith("text/html")


# -- in a browser -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "ur"])
def test_map_page_in_a_browser(new_page: Callable[..., Page], lang: str) -> None:
    page = new_page(bypass_csp=True)
    sizes: dict[str, int] = {}
    page.on("response", lambda r: sizes.__setitem__(r.url, len(r.body())))
    page.goto(f"/map?lang={lang}&resolution=4", wait_until="networkidle")
    weight = sum(size for url, size in sizes.items() if not url.endswith(".woff2"))
    assert 0 < weight < 200 * 1024, sizes
    image = page.locator("figure.map-figure img")
    assert image.evaluate("img => img.complete && img.naturalWidth") > 0
    assert len(image.get_attribute("alt") or "") > 40
    assert page.locator("svg.map-legend").is_visible()
    assert page.locator("#map-legend-text").inner_text()
    assert page.locator("#map-table tbody tr").count() == 7
    screenshot(page, f"map-{lang}-desktop")
    assert axe_violations(page) == []
    # Another measure, by the form alone (GET, no JavaScript).
    page.select_option("#measure", "mean_pmt_score")
    page.locator("form.map-form button").click()
    page.wait_for_url("**measure=mean_pmt_score**")
    page.wait_for_function("() => document.querySelector('figure.map-figure img').complete")
    assert page.locator("figure.map-figure img").evaluate("img => img.naturalWidth") > 0


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "ur"])
def test_map_page_on_a_phone(phone_page: Page, lang: str) -> None:
    phone_page.goto(f"/map?lang={lang}", wait_until="networkidle")
    overflow = phone_page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    assert phone_page.locator("figure.map-figure img").evaluate("img => img.naturalWidth") > 0
    screenshot(phone_page, f"map-{lang}-phone")
