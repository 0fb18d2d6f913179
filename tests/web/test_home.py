"""The website's frame in a real browser: home page, languages, font, headers, errors."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from browser import axe_violations, screenshot, uses_font
from playwright.sync_api import Page
from server import Server

pytestmark = pytest.mark.slow

NASTALIQ = "Noto Nastaliq Urdu"


@pytest.mark.parametrize("lang", ["en", "ur"])
def test_home_in_both_languages_is_accessible(new_page: Callable[..., Page], lang: str) -> None:
    page = new_page(bypass_csp=True)
    page.goto(f"/?lang={lang}")
    html = page.locator("html")
    assert html.get_attribute("lang") == lang
    assert html.get_attribute("dir") == ("rtl" if lang == "ur" else "ltr")
    heading = page.locator("h1").inner_text()
    assert heading == (
        "قومی سماجی و معاشی رجسٹری" if lang == "ur" else "National Socio-Economic Registry"
    )
    if lang == "ur":
        assert uses_font(page, "h1", NASTALIQ), "the Urdu page is not set in Nastaliq"
    screenshot(page, f"home-{lang}-desktop")
    assert axe_violations(page) == []


@pytest.mark.parametrize("lang", ["en", "ur"])
def test_home_on_a_phone(phone_page: Page, lang: str) -> None:
    phone_page.goto(f"/?lang={lang}")
    # Nothing wider than the screen: no sideways scrolling on a phone.
    overflow = phone_page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    screenshot(phone_page, f"home-{lang}-phone")


def test_language_is_remembered_and_negotiated(new_page: Callable[..., Page]) -> None:
    page = new_page(locale="ur-PK", extra_http_headers={"Accept-Language": "ur-PK,ur;q=0.9"})
    page.goto("/")
    assert page.locator("html").get_attribute("dir") == "rtl"  # Accept-Language
    page.get_by_role("link", name="English").click()
    assert page.locator("html").get_attribute("lang") == "en"
    page.goto("/")  # the cookie now wins over Accept-Language
    assert page.locator("html").get_attribute("lang") == "en"


def test_keyboard_reaches_the_skip_link_first(page: Page) -> None:
    page.goto("/")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.className")
    assert focused == "skip-link"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#main"


def test_page_weight_without_fonts_is_under_200_kb(page: Page) -> None:
    sizes: dict[str, int] = {}

    def record(response: object) -> None:
        body = response.body()  # type: ignore[attr-defined]
        sizes[response.url] = len(body)  # type: ignore[attr-defined]

    page.on("response", record)
    page.goto("/?lang=ur", wait_until="networkidle")
    total = sum(size for url, size in sizes.items() if not url.endswith(".woff2"))
    assert 0 < total < 200 * 1024, sizes


def test_pages_send_security_headers_and_a_strict_csp(site: Server) -> None:
    answer = httpx.get(f"{site.base_url}/")
    csp = answer.headers["content-security-policy"]
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in answer.headers  # plain HTTP: no HSTS
    csrf = answer.cookies.get("nser_csrf")
    assert csrf
    assert "httponly" in answer.headers["set-cookie"].lower()
    # Behind a trusted TLS-terminating proxy the same page carries HSTS.
    font = httpx.get(f"{site.base_url}/static/fonts/NotoNastaliqUrdu-Regular.woff2")
    assert font.status_code == 200
    assert font.headers["x-content-type-options"] == "nosniff"


def test_errors_are_pages_in_the_visitors_language(site: Server) -> None:
    bad_lang = httpx.get(f"{site.base_url}/?lang=fr", headers={"Accept-Language": "ur"})
    assert bad_lang.status_code == 422
    assert bad_lang.headers["content-type"].startswith("text/html")
    assert "بھیجی گئی معلومات میں کچھ درست نہیں" in bad_lang.text
    unknown = httpx.get(f"{site.base_url}/?utm_source=x")
    assert unknown.status_code == 422
    assert "Some of what was sent is not valid" in unknown.text


def test_a_browser_gets_a_page_for_an_unknown_address_and_the_api_stays_json(
    site: Server,
) -> None:
    page = httpx.get(f"{site.base_url}/no-such-page", headers={"Accept": "text/html"})
    assert page.status_code == 404
    assert "Page not found" in page.text
    api = httpx.get(f"{site.base_url}/v1/no-such", headers={"Accept": "text/html"})
    assert api.status_code == 404
    assert api.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("lang", ["en", "ur"])
def test_error_pages_are_accessible(new_page: Callable[..., Page], lang: str) -> None:
    page = new_page(bypass_csp=True)
    answer = page.goto(f"/no-such-page?lang={lang}")
    assert answer is not None
    assert answer.status == 404
    assert page.locator("html").get_attribute("dir") == ("rtl" if lang == "ur" else "ltr")
    screenshot(page, f"error-404-{lang}-desktop")
    assert axe_violations(page) == []
