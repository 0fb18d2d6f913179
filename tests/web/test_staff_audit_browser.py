"""The console's audit page in a real browser: an administrator searches the audit log for a
staff member's actions, pages through them and verifies the new rows; axe-core in English
and Urdu, screenshots artifacts/screenshots/staff-audit-*.png, under 200 KB without fonts.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import run_cli
from playwright.sync_api import expect
from test_staff_browser import Console, Device, chromium, console, driver, open_device, scan
from test_staff_browser import signed_in as signed_in_browser
from test_statistics import weigh

pytestmark = pytest.mark.slow
__all__ = ["chromium", "console", "driver", "open_device"]  # the fixtures


def test_audit_search_and_verification(console: Console, open_device: Callable[[], Device]) -> None:
    device = open_device()
    made = signed_in_browser(console, device, "admin", name="Audit Admin")
    run_cli(["audit", "verify"], console.database_url)
    page = device.page
    for lang in ("en", "ur"):
        weight = weigh(page, f"/staff/audit?lang={lang}")
        assert 0 < weight < 200 * 1024
        expect(page.locator("#checkpoint")).to_be_visible()
        scan(page, f"staff-audit-{lang}")
        page.fill("#staff", made["staff_id"])
        page.get_by_role(
            "button", name="Search the audit log" if lang == "en" else "آڈٹ لاگ میں تلاش کریں"
        ).click()
        page.wait_for_url("**/staff/audit?**staff=*")
        results = page.locator("#audit-results tbody tr")
        expect(results.first).to_contain_text("staff")
        assert results.count() >= 2  # the sign-in, the enrolment…
        scan(page, f"staff-audit-results-{lang}")
        page.locator("#checkpoint button[type=submit]").click()
        expect(page.locator("#verdict")).to_be_visible()
        scan(page, f"staff-audit-verified-{lang}")
    # The searches themselves are in the log.
    assert (
        console.sql(
            "SELECT count(*) FROM audit_log WHERE client_id = $1 AND endpoint = 'GET /staff/audit'",
            made["staff_id"],
        )
        == 2
    )
