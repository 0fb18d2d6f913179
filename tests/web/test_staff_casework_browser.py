"""The console's grievance, programme and simulation pages in a real browser (Debian's
Chromium, a WebAuthn virtual authenticator; the fixtures of test_staff_browser over a
registry of their own).

A grievance filed on the public website is triaged, re-surveyed (the batch applied by
the ingest worker, run here as ``nser worker --exit-when-idle``) and resolved in the
console; a programme is created, a rule version previewed and saved; a simulation is
started, followed (the page polls itself) and its result shown. Every page is scanned
with axe-core in English and Urdu, saved to artifacts/screenshots/staff-<area>-*.png, and
weighed (< 200 KB without fonts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from conftest import run_cli
from playwright.sync_api import Page, expect
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

pytestmark = pytest.mark.slow
__all__ = ["chromium", "driver", "open_device"]  # the fixtures
SEND = re.compile("^Send the grievance$")


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The console over a seeded registry of its own; no in-process worker (the test runs
    the ingest worker itself)."""
    with console_on(tmp_path_factory.mktemp("casework"), households=300, seed=34) as running:
        yield running


def run_worker(console: Console) -> None:
    """The ingest worker until its queues (batches, simulations) are empty."""
    run_cli(["worker", "--exit-when-idle", "--poll-seconds", "0.1"], console.database_url)


def weigh(page: Page, url: str) -> int:
    """Bytes of everything ``url`` loads but fonts (in a tab of its own, same cookies)."""
    sizes: dict[str, int] = {}
    tab = page.context.new_page()
    tab.on("response", lambda r: sizes.__setitem__(r.url, len(r.body())))
    tab.goto(url, wait_until="networkidle")
    tab.close()
    return sum(size for url, size in sizes.items() if not url.endswith(".woff2"))


def both(page: Page, path: str, name: str) -> None:
    """Scan ``path`` in Urdu and English (ending on the English page)."""
    sep = "&" if "?" in path else "?"
    for lang in ("ur", "en"):
        page.goto(f"{path}{sep}lang={lang}")
        assert page.locator("html").get_attribute("dir") == ("rtl" if lang == "ur" else "ltr")
        scan(page, f"staff-{name}-{lang}")


def test_a_public_grievance_is_triaged_resurveyed_and_resolved(
    console: Console, open_device: Callable[[], Device]
) -> None:
    device = open_device()
    page = device.page
    officer = signed_in(console, device, "officer", name="Grievance Officer")
    row = console.sql(
        """SELECT m.cnic || ':' || h.id || ':' || coalesce(h.cows, 0)
             FROM members m JOIN households h ON h.id = m.household_id
            WHERE m.cnic IS NOT NULL AND m.deceased_on IS NULL AND h.pmt_score IS NOT NULL
            ORDER BY h.id, m.id LIMIT 1"""
    )
    cnic, household, cows = row.split(":")

    # Filed on the public website.
    page.goto("/grievance?lang=en")
    page.fill("#f-cnic", cnic)
    page.check("#f-reason-wrong_assets")
    page.fill("#f-details", "We sold our cows last year.")
    page.get_by_role("button", name=SEND).click()
    page.wait_for_selector("strong.reference")
    reference = page.locator("strong.reference").inner_text()

    both(page, "/staff/grievances", "grievances-list")
    expect(page.locator("main")).to_contain_text(reference)
    page.get_by_role("link", name=reference).first.click()
    page.wait_for_url(f"**/staff/grievances/{reference}*")
    both(page, f"/staff/grievances/{reference}", "grievances-case")
    assert 0 < weigh(page, f"/staff/grievances/{reference}?lang=ur") < 200 * 1024
    page.goto(f"/staff/grievances/{reference}?lang=en")

    page.fill("#triage-notes", "Assets disputed")
    page.locator("form[action*='/actions/triage'] button").click()
    expect(page.locator(".notice-success")).to_contain_text("triaged")
    page.locator("form[action*='/actions/order_resurvey'] button").click()
    expect(page.locator(".notice-success")).to_contain_text("re-survey was ordered")

    # A bad number first: the form says which field, and keeps what was typed.
    page.fill("#record_resurvey-cows", "-2")
    page.locator("form.resurvey button[type=submit]").click()
    expect(page.locator("#problem")).to_be_visible()
    assert page.locator("#record_resurvey-cows").get_attribute("aria-invalid") == "true"
    scan(page, "staff-grievances-resurvey-error-en")
    page.fill("#record_resurvey-cows", str(int(cows) + 5))
    page.fill("#record_resurvey-notes", "Visited again")
    page.locator("form.resurvey button[type=submit]").click()
    expect(page.locator(".notice-success")).to_contain_text("update batch")
    run_worker(console)
    page.reload()
    expect(page.locator("main")).to_contain_text("applied")
    assert console.sql("SELECT cows FROM households WHERE id = $1", int(household)) == int(cows) + 5

    page.fill("#resolve-reasons", "The household was surveyed again.")
    page.locator("form[action*='/actions/resolve'] button").click()
    expect(page.locator(".notice-success")).to_contain_text("resolved")
    scan(page, "staff-grievances-resolved-en")
    assert (
        console.sql(
            "SELECT count(*) FROM audit_log WHERE client_id = $1 "
            "AND endpoint LIKE '%score-explanation'",
            officer["staff_id"],
        )
        >= 1
    )


def test_a_programme_its_previewed_version_and_a_simulation(
    console: Console, open_device: Callable[[], Device]
) -> None:
    device = open_device()
    page = device.page
    signed_in(console, device, "admin", name="Programme Admin")
    console.sql(
        "INSERT INTO organizations (name, type) VALUES ('Browser office', 'government') "
        "RETURNING id"
    )
    both(page, "/staff/programmes/new", "programmes-new")
    page.fill("#code", "browser-pilot")
    page.fill("#name", "Browser pilot")
    page.select_option("#organization_id", label="Browser office")
    page.fill("#cut_off", "30")
    page.get_by_role("button", name="Create the programme").click()
    expect(page.locator(".notice-success")).to_contain_text("created")
    both(page, "/staff/programmes", "programmes-list")
    both(page, "/staff/programmes/browser-pilot", "programmes-programme")

    for lang in ("ur", "en"):
        page.goto(f"/staff/programmes/browser-pilot/versions/new?lang={lang}")
        page.fill("#cut_off", "45")
        page.locator("button[value=preview]").click()
        expect(page.locator(".preview")).to_be_visible()
        scan(page, f"staff-programmes-preview-{lang}")
    assert console.sql("SELECT count(*) FROM programme_rules") == 1  # a preview saves nothing
    page.locator("button[value=save]").click()
    expect(page.locator(".notice-success")).to_contain_text("in force")
    assert console.sql("SELECT max(version) FROM programme_rules") == 2

    both(page, "/staff/simulations", "simulations-start")
    page.select_option("#programme_id", "browser-pilot")
    page.fill("#cut_off", "50")
    page.fill("#label", "Wider net")
    page.get_by_role("button", name="Start the simulation").click()
    page.wait_for_url(re.compile(r".*/staff/simulations/[0-9a-f-]{36}\?lang=en$"))
    expect(page.get_by_role("link", name="Refresh")).to_be_visible()
    scan(page, "staff-simulations-running-en")
    run_worker(console)
    # The page's script notices the new status and reloads: no click.
    expect(page.locator("[data-status=done]")).to_be_visible(timeout=20_000)
    expect(page.locator("svg[role=img]").first).to_be_visible()
    here = page.url.split("?")[0]
    both(page, here, "simulations-result")
    assert 0 < weigh(page, f"{here}?lang=ur") < 200 * 1024
