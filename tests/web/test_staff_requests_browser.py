"""My work, a request and its agreement in a real browser (Chromium, WebAuthn virtual
authenticators), in four windows: an officer, the Data Sharing Committee and the
Secretary take two requests from the form to signed agreements through the workflow's
states, the Secretary confirms with the passkey before approving (one request in English,
one in Urdu), and the partner's new credentials list exactly the approved scope. A
committee member sees no officer's button. The M&E team checks and suspends the
agreement; the Secretary, who alone may, resumes it after a fresh passkey check.
Every page is scanned with axe in English and Urdu (the step-up and "signed" pages too),
saved as artifacts/screenshots/staff-{work,requests,agreements}-*.png, and weighed
(< 200 KB without fonts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

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


def advance(officer: Page, committee: Page, path: str) -> None:
    """The officer's review and interview, then the committee's recommendation."""
    officer.goto(path)
    act(officer, "start_review")
    expect(officer.locator(".notice-success")).to_be_visible()
    act(officer, "review")
    expect(officer.locator("#request-state")).to_have_attribute("data-state", "reviewed")
    act(officer, "record_interview", notes="Methodology and safeguards sound")
    expect(officer.locator("#request-state")).to_have_attribute("data-state", "interviewed")
    committee.goto("/staff/")
    committee.locator(f"#requests a[href^='{path}']").click()
    act(committee, "recommend", notes="A sound purpose within the protocol")
    expect(committee.locator("#request-state")).to_have_attribute("data-state", "recommended")


def verified_long_ago(console: Console, member: dict[str, str]) -> None:
    """The member's last passkey check was six minutes ago: the next guarded action asks."""
    console.sql(
        "UPDATE staff_sessions SET last_verified_at = now() - interval '6 minutes' "
        "WHERE staff_id = $1",
        member["staff_id"],
    )


def test_a_request_journey_in_three_windows(
    console: Console, open_device: Callable[[], Device]
) -> None:
    district = console.sql(
        "SELECT district_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    references = []
    # The second, of another organization, is approved and signed in Urdu.
    for name in ("Punjab Social Protection Authority", "Sindh Social Protection Authority"):
        organization = {**form()["organization"], "name": name}
        filed = httpx.post(
            f"{console.origin}/v1/requests",
            json=form(
                organization=organization, categories=["iv"], dimensions=[], geography=[district]
            ),
        )
        assert filed.status_code == 201, filed.text
        references.append(filed.json()["reference"])
    path, urdu_path = (f"/staff/requests/{r}" for r in references)

    officer, committee, secretary = open_device(), open_device(), open_device()
    signed_in(console, officer, "officer", name="Officer Window")
    signed_in(console, committee, "committee", name="Committee Window")
    made = signed_in(console, secretary, "secretary", name="Secretary Window")

    # The officer's work: the request waits on them; its page, the list.
    page = officer.page
    look(page, "/staff/", "staff-work-officer")
    page.locator(f"#requests a[href^='{path}']").first.click()
    page.wait_for_url(f"**{path}*")
    look(page, path, "staff-requests-submitted")
    look(page, "/staff/requests?state=submitted", "staff-requests-list")

    # A committee member sees the request but no button of the officer's.
    committee.page.goto(path)
    expect(committee.page.locator("#request-state")).to_have_attribute("data-state", "submitted")
    expect(committee.page.locator("button[data-action]")).to_have_count(0)

    advance(page, committee.page, path)
    advance(page, committee.page, urdu_path)

    # The Secretary's last passkey check was long ago: approving asks for it first, in the
    # page's language (English for the first request, Urdu for the second).
    sp = secretary.page
    sp.goto(path)
    look(sp, path, "staff-requests-recommended")
    for lang, here in (("en", path), ("ur", urdu_path)):
        verified_long_ago(console, made)
        sp.goto(f"{here}?lang={lang}")
        act(sp, "approve", reasons="Recommended by the committee")
        sp.wait_for_url("**/staff/step-up?next=*")
        assert sp.locator("html").get_attribute("lang") == lang
        scan(sp, f"staff-requests-step-up-{lang}")
        status = console.sql(
            "SELECT status FROM data_requests WHERE reference = $1", here.rsplit("/", 1)[1]
        )
        assert status == "recommended"  # nothing before the check
        sp.click("button[data-start]")
        sp.wait_for_url(f"**{here}*")
        act(sp, "approve", reasons="Recommended by the committee")
        expect(sp.locator("#request-state")).to_have_attribute("data-state", "approved")

    # Signing shows the partner's credentials once: in Urdu for the second request.
    page.goto(f"{urdu_path}?lang=ur")
    act(page, "sign")
    expect(page.locator("#request-state")).to_have_attribute("data-state", "active")
    expect(page.locator("#client-secret")).to_be_visible()
    assert page.locator("html").get_attribute("dir") == "rtl"
    scan(page, "staff-requests-signed-ur")

    page.goto(f"{path}?lang=en")
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
    agreement = urlsplit(page.url).path
    look(page, agreement, "staff-agreements-agreement")

    # The M&E team's actions on an active agreement: a spot check (passed or failed),
    # suspend, revoke.
    me = open_device()
    signed_in(console, me, "me", name="Checker Window")
    mp = me.page
    mp.goto(agreement)
    expect(mp.locator("button[data-action]")).to_have_count(3)
    look(mp, agreement, "staff-agreements-me")
    act(mp, "spot_check", text="Records kept as agreed")
    expect(mp.locator(".notice-success")).to_be_visible()
    expect(mp.locator("#spot-checks")).to_contain_text("Records kept as agreed")
    mp.check("#act-spot_check-failed")
    act(mp, "spot_check", text="Two reports late")
    expect(mp.locator("#spot-checks tr", has_text="Two reports late")).to_contain_text("Failed")
    expect(mp.locator("#agreement-state")).to_have_attribute("data-state", "active")
    act(mp, "suspend", text="Lists shared beyond the approved purpose")
    expect(mp.locator("#agreement-state")).to_have_attribute("data-state", "suspended")

    # The Secretary sees the suspended agreement with the actions of theirs: resume (done
    # here, after a fresh passkey check) and revoke.
    sp.goto(agreement)
    expect(sp.locator("button[data-action]")).to_have_count(2)
    expect(sp.locator("button[data-action='resume']")).to_have_count(1)
    expect(sp.locator("button[data-action='secretary_revoke']")).to_have_count(1)
    look(sp, agreement, "staff-agreements-suspended")
    verified_long_ago(console, made)
    act(sp, "resume", text="The partner deleted the extra copies")
    sp.wait_for_url("**/staff/step-up?next=*")
    sp.click("button[data-start]")
    sp.wait_for_url(f"**{agreement}*")
    act(sp, "resume", text="The partner deleted the extra copies")
    expect(sp.locator("#agreement-state")).to_have_attribute("data-state", "active")
