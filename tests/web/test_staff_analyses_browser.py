"""The console's analyses in a real browser: an M&E member asks an analysis on the form and
sees the published table with its withheld cells marked; axe-core in English and Urdu,
screenshots artifacts/screenshots/staff-analyses-*.png, under 200 KB without fonts.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect
from test_staff_browser import Console, Device, chromium, console, driver, open_device, scan
from test_staff_browser import signed_in as signed_in_browser
from test_statistics import weigh

pytestmark = pytest.mark.slow
__all__ = ["chromium", "console", "driver", "open_device"]  # the fixtures


def test_an_analysis_asked_and_shown(console: Console, open_device: Callable[[], Device]) -> None:
    device = open_device()
    signed_in_browser(console, device, "me", name="Analyst")
    page = device.page
    for lang in ("en", "ur"):
        weight = weigh(page, f"/staff/analyses?lang={lang}")
        assert 0 < weight < 200 * 1024
        scan(page, f"staff-analyses-form-{lang}")
        page.check("#rows-province")
        page.check("#columns-gender")
        page.check("#band-ultra_poor" if lang == "en" else "#band-poor")
        page.locator("form.analysis-form button[type=submit]").click()
        page.wait_for_url("**/staff/analyses/*")
        table = page.locator("#analysis-table")
        expect(table).to_be_visible()
        # An empty registry: every count is below the threshold, so withheld and marked.
        assert page.locator("td[data-withheld=true]").count() > 0
        expect(page.locator("#suppressed-cells")).not_to_be_empty()
        scan(page, f"staff-analyses-result-{lang}")
        assert 0 < weigh(page, page.url) < 200 * 1024
