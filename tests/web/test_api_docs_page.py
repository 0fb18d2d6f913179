"""The API docs (Swagger UI on /docs) in a real browser, under their Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from browser import screenshot
from playwright.sync_api import Page

pytestmark = pytest.mark.slow

# Init scripts run before the page's own and are not subject to its policy: they record
# every violation the page's CSP reports.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.lineNumber}`);
});
"""


def _strict_page(new_page: Callable[..., Page]) -> tuple[Page, list[str]]:
    page = new_page()  # the CSP is enforced (no bypass)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.add_init_script(RECORD_VIOLATIONS)
    return page, errors


def test_swagger_ui_renders_under_a_strict_policy(new_page: Callable[..., Page]) -> None:
    page, errors = _strict_page(new_page)
    answer = page.goto("/docs")
    assert answer is not None
    assert answer.status == 200
    csp = answer.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert answer.headers["x-frame-options"] == "DENY"
    title = page.locator(".swagger-ui .info .title")
    title.wait_for()
    assert "National Socio-Economic Registry" in title.inner_text()
    operations = page.locator(".opblock")
    operations.first.wait_for()
    assert operations.count() > 20
    # An operation opened: its parameters, responses and schemas render too.
    page.locator(".opblock-summary").first.click()
    page.locator(".opblock-body").first.wait_for()
    page.locator(".responses-wrapper").first.wait_for()
    # "Try it out" calls the API from the page (connect-src 'self').
    page.get_by_role("button", name="Try it out").first.click()
    page.get_by_role("button", name="Execute").first.click()
    page.locator(".live-responses-table tbody .response-col_status").first.wait_for()
    status = page.locator(".live-responses-table tbody .response-col_status").first
    assert status.inner_text().strip() == "200"
    # The Authorize dialog (the bearer token) opens.
    page.get_by_role("button", name="Authorize").first.click()
    page.locator(".modal-ux").wait_for()
    screenshot(page, "docs-desktop")
    assert page.evaluate("window.__violations") == []
    assert errors == []


def test_the_oauth2_redirect_page_runs_its_script_under_the_policy(
    new_page: Callable[..., Page],
) -> None:
    page, errors = _strict_page(new_page)
    answer = page.goto("/docs/oauth2-redirect")
    assert answer is not None
    assert answer.status == 200
    assert "'unsafe-inline'" not in answer.headers["content-security-policy"]
    page.wait_for_load_state("load")
    assert page.evaluate("window.__violations") == []
    # Opened by hand there is no Swagger UI window to report to: the script ran and said so.
    assert any("swaggerUIRedirectOauth2" in error for error in errors), errors
