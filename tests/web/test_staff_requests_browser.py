"""My work, a request and its agreement in a real browser (Chromium, WebAuthn virtual
authenticators), in three windows: an officer, the Data Sharing Committee and the
Secretary take a request from the form to a signed agreement through the workflow's
states, the Secretary confirms with the passkey before approving, and the partner's new
credentials list exactly the approved scope. A committee member sees no officer's button.
Every page is scanned with axe in English and Urdu, saved as
artifacts/screenshots/staff-{work,requests,agreements}-*.png, and weighed (< 200 KB
without fonts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from request_helpers import form
from web.test_staff_browser import (
    Console,
    Device,
    chromium,
    console_on,
    driver,
    open_device,
    scan,
    signed_in,
)

__all__ = ["chromium", "driver", "open_device"]  # the fixtures
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The console on a registry of its own with households (the partner's list)."""
    with console_on(tmp_path_factory.mktemp("conreq"), households=150, seed=19) as running:
        yield running


def weigh(page: Page, url: str) -> int:
    """Bytes of everything the page loaded but fonts."""
    sizes: dict[str, int] = {}

    def record(response: Any) -> None:
        sizes[response.url] = len(response.body())

    page.on("response", record)
    page.goto(url, wait_until="networkidle")
    page.remove_listener("response", record)
    return sum(size for u, size in sizes.items() if not u.endswith(".woff2"))


def look(page: Page, url: str, name: str) -> None:
    """The page in both languages: axe, a screenshot, its weight."""
    for lang in ("en", "ur"):
        sep = "&" if "?" in url else "?"
        weight = weigh(page, f"{url}{sep}lang={lang}")
        assert 0 < weight < 200 * 1024, (name, weight)
        assert page.locator("html").get_attribute("lang") == lang
        scan(page, f"{name}-{lang}")
    page.goto(f"{url}{'&' if '?' in url else '?'}lang=en")


def act(page: Page, action: str, **fields: str) -> None:
    for selector, value in fields.items():
        page.fill(f"#act-{action}-{selector}", value)
    page.locator(f"button[data-action={action}]").click()


def test_a_request_journey_in_three_windows(
    console: Console, open_device: Callable[[], Device]
) -> None:
    district = console.sql(
        "SELECT district_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    filed = httpx.post(
        f"{console.origin}/v1/requests",
        json=form(categories=["iv"], dimensions=[], geography=[district]),
    )
    assert filed.status_code == 201, filed.text
    reference = filed.json()["reference"]
    path = f"/staff/requests/{reference}"

    officer, committee, secretary = open_device(), open_device(), open_device()
    signed_in(console, officer, "officer", name="Officer Window")
    signed_in(console, committee, "committee", name="Committee Window")
    made = signed_in(console, secretary, "secretary", name="Secretary Window")

    # The officer's work: the request waits on them; its page, the list.
    page = officer.page
    look(page, "/staff/", "staff-work-officer")
    page.locator(f"#requests a[href^='{path}']").click()
    page.wait_for_url(f"**{path}*")
    look(page, path, "staff-requests-submitted")
    look(page, "/staff/requests?state=submitted", "staff-requests-list")

    # A committee member sees the request but no button of the officer's.
    committee.page.goto(path)
    expect(committee.page.locator("#request-state")).to_have_attribute("data-state", "submitted")
    expect(committee.page.locator("button[data-action]")).to_have_count(0)

    page.goto(path)
    act(page, "start_review")
    expect(page.locator(".notice-success")).to_be_visible()
    act(page, "review")
    expect(page.locator("#request-state")).to_have_attribute("data-state", "reviewed")
    act(page, "record_interview", notes="Methodology and safeguards sound")
    expect(page.locator("#request-state")).to_have_attribute("data-state", "interviewed")

    committee.page.goto("/staff/")
    committee.page.locator(f"#requests a[href^='{path}']").click()
    act(committee.page, "recommend", notes="A sound purpose within the protocol")
    expect(committee.page.locator("#request-state")).to_have_attribute("data-state", "recommended")

    # The Secretary's last passkey check was long ago: approving asks for it first.
    console.sql(
        "UPDATE staff_sessions SET last_verified_at = now() - interval '6 minutes' "
        "WHERE staff_id = $1",
        made["staff_id"],
    )
    sp = secretary.page
    sp.goto(path)
    look(sp, path, "staff-requests-recommended")
    act(sp, "approve", reasons="Recommended by the committee")
    sp.wait_for_url("**/staff/step-up?next=*")
    scan(sp, "staff-requests-step-up-en")
    assert console.sql("SELECT status FROM data_requests WHERE reference = $1", reference) == (
        "recommended"
    )  # nothing before the check
    sp.click("button[data-start]")
    sp.wait_for_url(f"**{path}")
    act(sp, "approve", reasons="Recommended by the committee")
    expect(sp.locator("#request-state")).to_have_attribute("data-state", "approved")

    page.goto(path)
    act(page, "sign")
    expect(page.locator("#request-state")).to_have_attribute("data-state", "active")
    client_id = page.locator("#client-id").inner_text()
    secret = page.locator("#client-secret").inner_text()
    scan(page, "staff-requests-signed-en")

    # The partner's credentials list the approved scope: households of the district only.
    token = httpx.post(
        f"{console.origin}/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
        },
    )
    assert token.status_code == 200, token.text
    auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
    listed = httpx.get(f"{console.origin}/v1/partner/beneficiaries?limit=500", headers=auth)
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    in_district = console.sql("SELECT count(*) FROM households WHERE district_code = $1", district)
    assert items
    assert len(items) == in_district
    assert {item["district"] for item in items} == {district}

    # The agreement's page: scope, the partner's call, no action for the officer.
    page.locator("a[href^='/staff/agreements/']").first.click()
    page.wait_for_url("**/staff/agreements/*")
    expect(page.locator("#usage")).to_contain_text("/v1/partner/beneficiaries")
    expect(page.locator("button[data-action]")).to_have_count(0)
    look(page, page.url.split("?")[0].replace(console.origin, ""), "staff-agreements-agreement")
