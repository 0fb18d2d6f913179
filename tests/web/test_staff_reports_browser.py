"""The console's reports in a real browser (Chromium, a WebAuthn virtual authenticator): a
member signs in with a passkey, opens the reports, sees a report's chart and tables in
English and Urdu; every page is scanned with axe-core (WCAG 2.2 AA), saved to
artifacts/screenshots/staff-reports-*.png and weighs less than 200 KB without fonts.
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


def test_reports_with_a_chart_in_both_languages(
    console: Console, open_device: Callable[[], Device]
) -> None:
    device = open_device()
    signed_in_browser(console, device, "me", name="Report Reader")
    page = device.page
    for lang in ("en", "ur"):
        weight = weigh(page, f"/staff/reports?lang={lang}")
        assert 0 < weight < 200 * 1024
        scan(page, f"staff-reports-index-{lang}")
        page.locator("ul.report-list a").nth(5).click()  # grievances
        page.wait_for_url("**/staff/reports/grievances?lang=*")
        chart = page.locator("svg.chart")
        expect(chart).to_be_visible()
        assert chart.get_attribute("role") == "img"
        assert chart.locator("rect.chart-bar").count() == 5
        assert page.locator("table.report-table").count() == 2
        scan(page, f"staff-reports-grievances-{lang}")
        weight = weigh(page, f"/staff/reports/requests?lang={lang}&from=2026-01-01&to=2026-12-31")
        assert 0 < weight < 200 * 1024
        scan(page, f"staff-reports-requests-{lang}")
        # Keyboard: the range form submits with Enter.
        page.fill("#from", "2026-02-01")
        page.locator("#to").press("Enter")
        page.wait_for_url("**/staff/reports/requests?lang=*from=2026-02-01*")
        with page.expect_download() as download:
            page.locator("a[href*='/csv?table=rows']").click()
        assert download.value.suggested_filename.startswith("nser-requests-rows-2026-02-01")
    # A member without the scope sees the refusal page, which is accessible too.
    other = open_device()
    signed_in_browser(console, other, "committee", name="Committee Reader")
    other.page.goto("/staff/reports?lang=ur")
    expect(other.page.locator(".notice-error")).to_be_visible()
    scan(other.page, "staff-reports-refused-ur")
