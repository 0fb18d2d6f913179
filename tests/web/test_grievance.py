"""/grievance: a household member's grievance about the score, as a page; its status page.

The form ↔ GrievanceForm mapping (pure), the pages over HTTP against the live site, and in
a browser (axe in both languages, screenshots). The site runs the default limits: filings
share the API's per-IP budget (NSER_GRIEVANCE_LIMITS unset: 10/minute) and need the
proof-of-work challenge after NSER_GRIEVANCE_FREE_FILINGS (3) an hour. Every test speaks
from an IP of its own.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import typing
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from browser import axe_violations, screenshot
from conftest import run_cli
from playwright.sync_api import Page
from server import Server
from solver import solve

from app.schemas.grievances import REASONS, GrievanceForm, PublicResolution
from app.services.grievances.machine import State
from app.web.public.grievance import page as grievance

FREE = 3  # NSER_GRIEVANCE_FREE_FILINGS, default
BUDGET = 10  # NSER_GRIEVANCE_LIMITS unset: NSER_PUBLIC_LOOKUP_LIMITS, "10/minute;100/day"
RECEIVED = {"en": "Received", "ur": "موصول ہو گئی"}
SEND = re.compile("^(Send the grievance|شکایت بھیجیں)$")
STATUS_LINK = re.compile(r"/grievance/status/(GRV-\d{4}-\d{6,9})\?token=([A-Za-z0-9_-]+)")
_ips = itertools.count(1)


def new_ip() -> str:
    n = next(_ips)
    return f"10.55.{n // 250}.{n % 250 + 1}"


def dashed(cnic: str) -> str:
    return f"{cnic[:5]}-{cnic[5:12]}-{cnic[12]}"


def good_fields(**changes: str | None) -> dict[str, str]:
    values: dict[str, str | None] = {
        "cnic": "35202-1234567-3",
        "reason": "wrong_assets",
        "details": "We sold the land last year.\r\nThe survey still lists it.",
        "contact_phone": "+92 300 1234567",
    }
    values.update(changes)
    return {name: value for name, value in values.items() if value is not None}


# -- the mapping (pure) ------------------------------------------------------------------------


def test_the_labels_cover_exactly_the_models_and_the_machines_values() -> None:
    assert set(grievance.FIELDS) == set(GrievanceForm.model_fields)
    assert list(grievance.REASONS) == list(REASONS)
    assert set(grievance.STATES) == {state.value for state in State}
    outcomes = typing.get_args(PublicResolution.model_fields["outcome"].annotation)
    assert set(grievance.OUTCOMES) == set(outcomes)
    assert grievance.max_length("details") == 2000
    assert grievance.max_length("contact_phone") == 20


def test_a_submission_is_what_the_api_takes() -> None:
    sub = grievance.read_fields([("csrf_token", "x"), *good_fields().items(), ("altcha", "s")])
    assert (sub.csrf, sub.solution) == ("x", "s")
    assert sub.value("details") == "We sold the land last year.\nThe survey still lists it."
    form, errors = grievance.validate(sub)
    assert errors == {}
    assert form == GrievanceForm.model_validate({**good_fields(), "details": sub.value("details")})
    assert form is not None
    assert form.cnic == "3520212345673"
    # An empty optional field is left out, as the API would be sent it.
    bare, _ = grievance.validate(grievance.read_fields(good_fields(contact_phone="  ").items()))
    assert bare is not None
    assert bare.contact_phone is None


def test_unknown_and_repeated_fields_fail_closed() -> None:
    with pytest.raises(grievance.UnknownField):
        grievance.read_fields([*good_fields().items(), ("household_id", "1")])
    with pytest.raises(grievance.UnknownField):
        grievance.read_fields([*good_fields().items(), ("reason", "other")])
    with pytest.raises(grievance.UnknownField):
        grievance.read_fields([("csrf_token", "a"), ("csrf_token", "b")])


def _errors(**changes: str | None) -> dict[str, grievance.FieldError]:
    form, errors = grievance.validate(grievance.read_fields(good_fields(**changes).items()))
    assert form is None
    return errors


def test_each_error_is_mapped_to_its_field_in_form_order() -> None:
    assert _errors(cnic=None, reason=None) == {
        "cnic": grievance.FieldError(grievance.REQUIRED["cnic"]),
        "reason": grievance.FieldError(grievance.REQUIRED["reason"]),
    }
    errors = _errors(cnic="12345-123", reason="angry", details="x" * 2001, contact_phone="call me")
    assert errors == {
        "cnic": grievance.FieldError(grievance.FORMAT["cnic"]),
        "reason": grievance.FieldError(grievance.FORMAT["reason"]),
        "details": grievance.FieldError(grievance.TOO_LONG_TEXT, {"max": 2000}),
        "contact_phone": grievance.FieldError(grievance.FORMAT["contact_phone"]),
    }
    assert _errors(reason="other", details=None) == {
        "details": grievance.FieldError(grievance.DETAILS_FOR_OTHER)
    }
    assert _errors(details="nul\x00byte") == {
        "details": grievance.FieldError(grievance.CONTROL_CHARACTERS)
    }
    assert grievance.anchor("reason") == "f-reason-wrong_members"
    assert grievance.anchor("cnic") == "f-cnic"


# -- over HTTP, against the live site -------------------------------------------------------------


class Filer:
    """A browser-less visitor from one IP, keeping its cookies."""

    def __init__(self, site: Server, ip: str | None = None) -> None:
        self.ip = ip or new_ip()
        self.http = httpx.Client(
            base_url=site.base_url, headers={"X-Forwarded-For": self.ip}, timeout=30
        )
        self.last: httpx.Response | None = None

    def form_page(self, lang: str = "en") -> httpx.Response:
        self.last = self.http.get(f"/grievance?lang={lang}")
        assert self.last.status_code == 200
        return self.last

    def csrf(self) -> str:
        page = self.last or self.form_page()
        found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
        assert found
        return found.group(1)

    def challenge(self) -> dict[str, Any] | None:
        page = self.last or self.form_page()
        found = re.search(r'data-challenge="([^"]+)"', page.text)
        return json.loads(html.unescape(found.group(1))) if found else None

    def post(self, fields: dict[str, str], lang: str = "en") -> httpx.Response:
        self.last = self.http.post(f"/grievance?lang={lang}", data=fields)
        return self.last

    def file(self, lang: str = "en", **changes: str | None) -> httpx.Response:
        """Send the form (solving the challenge if the page offers one); a filing redirects
        (303) to its confirmation, followed here."""
        self.form_page(lang)
        fields = {"csrf_token": self.csrf(), **good_fields(**changes)}
        offered = self.challenge()
        if offered:
            fields["altcha"] = solve(offered)
        sent = self.post(fields, lang)
        if sent.status_code != 303:
            return sent
        assert sent.headers["location"].startswith("/grievance/sent/GRV-")
        self.last = self.http.get(sent.headers["location"])
        return self.last

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def filer(site: Server) -> Iterator[Filer]:
    visitor = Filer(site)
    yield visitor
    visitor.close()


def stored(site: Server) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(site.database_url)  # type: ignore[attr-defined]
        try:
            return int(await conn.fetchval("SELECT count(*) FROM grievances"))
        finally:
            await conn.close()

    return asyncio.run(count())


def main_of(page: str) -> str:
    found = re.search(r"<main.*?</main>", page, re.S)
    assert found
    return found.group(0)


def status_link(page: str) -> tuple[str, str, str]:
    """The status link of a confirmation page: its path, reference and token."""
    found = STATUS_LINK.search(page)
    assert found, page
    return found.group(0), found.group(1), found.group(2)


USED_CNICS: set[str] = set()


def test_filing_gives_a_link_whose_page_shows_the_status(
    site: Server, filer: Filer, known_member: dict[str, Any]
) -> None:
    cnic = known_member["cnic"]
    USED_CNICS.add(cnic)
    before = stored(site)
    done = filer.file(cnic=dashed(cnic))
    assert done.status_code == 200, done.text
    assert stored(site) == before + 1
    assert "Keep this link" in done.text
    path, reference, token = status_link(done.text)
    # Reloading the confirmation files nothing again.
    assert filer.http.get(done.url).status_code == 200
    assert stored(site) == before + 1
    shown = filer.http.get(f"{path}&lang=en")
    assert shown.status_code == 200
    assert shown.headers["cache-control"] == "no-store"
    assert '<strong class="status-received">Received</strong>' in shown.text
    assert "The household's assets or living conditions are recorded wrongly" in shown.text
    assert f"{cnic[:5]}-*******-{cnic[12]}" in shown.text
    assert cnic not in shown.text
    assert dashed(cnic) not in shown.text
    assert "300 1234567" not in shown.text  # the phone stays with the staff
    assert "sold the land" not in shown.text  # so do the details
    # The API's status link of the same grievance takes the same token: one service.
    api = filer.http.get(f"/v1/public/grievances/{reference}", params={"token": token})
    assert api.status_code == 200
    assert api.json()["status"] == "received"


def test_a_bad_form_is_rendered_again_with_messages_and_nothing_is_stored(
    site: Server, filer: Filer
) -> None:
    before = stored(site)
    page = filer.file(cnic="12345-123", reason=None, contact_phone="call me")
    assert page.status_code == 422
    assert "Please correct the following" in page.text
    assert '<a href="#f-cnic">Enter the CNIC as 13 digits' in page.text
    assert '<a href="#f-reason-wrong_members">Choose what is wrong.</a>' in page.text
    assert 'aria-describedby="f-contact_phone-hint f-contact_phone-error"' in page.text
    assert 'value="12345-123"' in page.text  # what was typed is kept
    assert "We sold the land last year." in page.text
    other = filer.file(reason="other", details=None)
    assert other.status_code == 422
    assert "Describe the problem when you choose “Something else”." in other.text
    assert 'id="f-reason-other" name="reason" value="other" required checked' in other.text
    assert stored(site) == before


def test_csrf_unknown_fields_and_size_are_refused_as_pages(site: Server, filer: Filer) -> None:
    before = stored(site)
    no_csrf = filer.post(good_fields())
    assert no_csrf.status_code == 403
    assert no_csrf.headers["content-type"].startswith("text/html")
    assert "This form has expired" in no_csrf.text
    assert filer.post({"csrf_token": "0" * 64, **good_fields()}).status_code == 403
    filer.form_page()
    token = filer.csrf()
    unknown = filer.post({"csrf_token": token, **good_fields(), "household_id": "7"})
    assert unknown.status_code == 422
    assert "household_id" not in main_of(unknown.text)
    huge = filer.post({"csrf_token": token, **good_fields(details="x" * 20_000)})
    assert huge.status_code == 413
    as_json = filer.http.post("/grievance", json={"csrf_token": token, **good_fields()})
    assert as_json.status_code == 400
    # The CNIC is never taken from the address.
    assert filer.http.get("/grievance?cnic=3520212345673").status_code == 422
    assert stored(site) == before


def test_a_wrong_link_is_one_404_that_reveals_nothing(site: Server, filer: Filer) -> None:
    done = filer.file()
    path, reference, token = status_link(done.text)
    wrong = "A" * len(token)
    pages = [
        filer.http.get(f"/grievance/status/{reference}?token={wrong}&lang=en"),
        filer.http.get(f"/grievance/status/GRV-1999-000001?token={token}&lang=en"),
        filer.http.get(f"/grievance/status/{reference}?lang=en"),
        filer.http.get(f"/grievance/status/not-a-reference?token={token}&lang=en"),
        filer.http.get(f"/grievance/sent/{reference}?token={wrong}&lang=en"),
    ]
    assert [p.status_code for p in pages] == [404] * len(pages)
    assert len({main_of(p.text) for p in pages}) == 1
    assert "No grievance matches this link" in pages[0].text
    assert reference not in main_of(pages[0].text)
    assert "Page not found" in pages[0].text
    # The token never reaches the access log: only the path is logged.
    assert filer.http.get(path).status_code == 200
    assert all(token not in json.dumps(line) for line in site.access_lines())


def test_the_form_and_its_errors_in_urdu(site: Server, filer: Filer) -> None:
    form = filer.form_page("ur")
    assert '<html lang="ur" dir="rtl">' in form.text
    assert "<h1>شکایت درج کریں</h1>" in form.text
    assert "گھرانے کے اثاثے یا رہن سہن کے حالات غلط درج ہیں" in form.text
    refused = filer.file("ur", cnic="123", reason=None)
    assert refused.status_code == 422
    assert 'lang="ur"' in refused.text
    assert "چنیں کہ کیا غلط ہے۔" in refused.text
    assert "شناختی کارڈ نمبر 13 ہندسوں میں درج کریں" in refused.text
    done = filer.file("ur")
    assert done.status_code == 200
    assert "آپ کی شکایت بھیج دی گئی ہے" in done.text
    path, _, _ = status_link(done.text)
    shown = filer.http.get(f"{path}&lang=ur")
    assert f'<strong class="status-received">{RECEIVED["ur"]}</strong>' in shown.text


def _officer(site: Server) -> dict[str, str]:
    """An officer's bearer header, made as an operator would (nser staff create)."""
    made = json.loads(
        run_cli(
            ["staff", "create", "--name", "Grievance officer", "--role", "officer", "--json"],
            site.database_url,  # type: ignore[attr-defined]
        ).stdout
    )
    answer = httpx.post(
        f"{site.base_url}/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": made["client_id"],
            "client_secret": made["client_secret"],
        },
        headers={"X-Forwarded-For": new_ip()},
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_the_status_page_shows_the_outcome_and_its_reasons(
    site: Server, filer: Filer, new_page: Callable[..., Page]
) -> None:
    done = filer.file(cnic="99901-0000009-9")  # no such member: the same answer
    assert done.status_code == 200
    path, reference, _ = status_link(done.text)
    officer = _officer(site)
    reasons = "Not in the registry. Please apply for a survey at the tehsil office."
    rejected = httpx.post(
        f"{site.base_url}/v1/staff/grievances/{reference}/actions/reject",
        json={"reasons": reasons, "notes": "internal: no household matched"},
        headers={**officer, "X-Forwarded-For": new_ip()},
    )
    assert rejected.status_code == 200, rejected.text
    shown = filer.http.get(f"{path}&lang=en")
    assert '<strong class="status-rejected">Not accepted</strong>' in shown.text
    assert '<strong class="outcome-rejected">The grievance was not accepted.</strong>' in shown.text
    assert html.escape(reasons, quote=False) in shown.text
    assert "internal" not in shown.text  # the officer's notes stay internal
    assert "Grievance officer" not in shown.text  # and so does the officer
    assert shown.text.count("<time ") == 4  # sent; the outcome; two steps
    for lang in ("en", "ur"):
        page = new_page(bypass_csp=True)
        page.goto(f"{path}&lang={lang}")
        assert page.locator(".outcome .reasons").inner_text() == reasons
        screenshot(page, f"grievance-outcome-{lang}-desktop")
        assert axe_violations(page) == []


def test_one_budget_with_the_api_and_the_challenge_after_the_free_filings(site: Server) -> None:
    api_side = Filer(site)
    web_side = Filer(site)
    try:
        # The API spends the IP's budget: the page is then refused, what was typed kept.
        for _ in range(BUDGET):
            answer = api_side.http.post(
                "/v1/public/grievances", json={"cnic": "3520212345673", "reason": "resurvey"}
            )
            assert answer.status_code == 201
        refused = api_side.file(details="Typed before the limit")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        assert re.search(r"Please try again in \d+ (seconds?|minutes?)", refused.text)
        assert "Typed before the limit" in refused.text
        # The page spends it too: free filings, then each with a solved challenge.
        for n in range(FREE):
            web_side.form_page()
            assert web_side.challenge() is None, n
            assert web_side.file().status_code == 200
        web_side.form_page()
        assert web_side.challenge(), "the free filings of the hour are used"
        asked = web_side.post({"csrf_token": web_side.csrf(), **good_fields()})
        assert asked.status_code == 403
        assert "needs JavaScript" in asked.text
        assert "/static/js/challenge.js" in asked.text
        offered = web_side.challenge()
        assert offered
        solution = solve(offered)
        fields = {"csrf_token": web_side.csrf(), **good_fields(), "altcha": solution}
        assert web_side.post(fields).status_code == 303
        replayed = web_side.post(fields)
        assert replayed.status_code == 403
        assert "already used" in replayed.text
        for _ in range(BUDGET - FREE - 1):
            assert web_side.file().status_code == 200
        assert (
            web_side.http.post(
                "/v1/public/grievances", json={"cnic": "3520212345673", "reason": "resurvey"}
            ).status_code
            == 429
        )
    finally:
        api_side.close()
        web_side.close()


def test_the_home_page_and_the_navigation_lead_to_the_form(site: Server, filer: Filer) -> None:
    home = filer.http.get("/?lang=en").text
    assert '<a href="/grievance">File a grievance</a>' in home
    assert '<a href="/grievance">Grievances</a>' in home
    form = filer.form_page()
    assert '<a href="/grievance" aria-current="page">Grievances</a>' in form.text
    assert form.headers["content-security-policy"].startswith("default-src 'none'")


# -- in a browser ---------------------------------------------------------------------------------


def _send(page: Page) -> int:
    with page.expect_response(lambda r: r.request.method == "POST") as info:
        page.get_by_role("button", name=SEND).click()
    page.wait_for_load_state()
    return info.value.status


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "ur"])
def test_grievance_in_a_browser_in_both_languages(
    new_page: Callable[..., Page], known_member: dict[str, Any], lang: str
) -> None:
    page = new_page(bypass_csp=True)
    page.goto(f"/grievance?lang={lang}")
    assert page.locator("html").get_attribute("dir") == ("rtl" if lang == "ur" else "ltr")
    screenshot(page, f"grievance-{lang}-desktop")
    assert axe_violations(page) == []
    # A refused form (the browser's own checks bypassed): the summary, still accessible.
    page.evaluate("document.querySelector('#grievance-form').noValidate = true")
    page.fill("#f-cnic", "12345")
    assert _send(page) == 422
    assert page.locator("#f-cnic").get_attribute("aria-invalid") == "true"
    page.locator("#error-summary a").first.click()
    assert page.evaluate("document.activeElement.id") == "f-cnic"
    screenshot(page, f"grievance-error-{lang}-desktop")
    assert axe_violations(page) == []
    page.fill("#f-cnic", known_member["cnic"])
    page.check("#f-reason-wrong_members")
    page.fill("#f-details", "My brother's family lives with us now.")
    assert _send(page) == 303
    page.wait_for_selector("strong.reference")
    assert re.fullmatch(r"GRV-\d{4}-\d{6,9}", page.locator("strong.reference").inner_text())
    screenshot(page, f"grievance-sent-{lang}-desktop")
    assert axe_violations(page) == []
    page.locator("a.button").click()
    page.wait_for_selector(".status-received")
    assert page.locator(".status-received").inner_text() == RECEIVED[lang]
    assert page.locator(".timeline li").count() == 1
    screenshot(page, f"grievance-status-{lang}-desktop")
    assert axe_violations(page) == []


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "ur"])
def test_grievance_on_a_phone(phone_page: Page, lang: str) -> None:
    phone_page.goto(f"/grievance?lang={lang}")
    overflow = phone_page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    screenshot(phone_page, f"grievance-{lang}-phone")


@pytest.mark.slow
def test_after_the_free_filings_challenge_js_solves_the_challenge(
    new_page: Callable[..., Page], site: Server
) -> None:
    ip = new_ip()
    spender = Filer(site, ip)
    for _ in range(FREE):
        assert spender.file().status_code == 200
    spender.close()
    page = new_page(extra_http_headers={"X-Forwarded-For": ip})  # the real CSP
    page.goto("/grievance?lang=en")
    assert page.locator("#grievance-form").get_attribute("data-challenge")
    page.fill("#f-cnic", "35202-1234567-3")
    page.check("#f-reason-resurvey")
    assert _send(page) == 303
    page.wait_for_selector("strong.reference")


def test_no_cnic_reaches_the_access_log(site: Server) -> None:
    assert USED_CNICS, "run with the other tests of this module"
    lines = site.access_lines()
    assert any(line["method"] == "POST" and line["path"] == "/grievance" for line in lines)
    text = json.dumps(lines)
    for cnic in [*USED_CNICS, "3520212345673"]:
        assert cnic not in text
        assert dashed(cnic) not in text
