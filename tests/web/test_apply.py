"""Apply for data (/apply): the form ↔ RequestForm mapping, the pages over HTTP, in a browser."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import asyncpg
import httpx
import pytest
from browser import axe_violations, screenshot
from playwright.sync_api import Page
from pydantic import BaseModel
from server import Server

from app.schemas.requests import OrganizationIn, RequestForm
from app.services.requests import machine, pricing
from app.services.sharing import rules as sharing
from app.web.public.apply import page as apply

SUBMITTED = {"en": "Submitted", "ur": "جمع کرائی گئی"}
_ips = itertools.count(1)


def new_ip() -> str:
    n = next(_ips)
    return f"10.66.{n // 250}.{n % 250 + 1}"


def good_fields(**changes: Any) -> list[tuple[str, str]]:
    """A complete, valid submission as (name, value) pairs, with ``changes`` applied."""
    values: dict[str, Any] = {
        "organization_name": "Institute of Development Studies",
        "organization_type": "academic",
        "contact_name": "Ayesha Khan",
        "email": "ayesha@ids.example.org",
        "phone": "+92 51 9246001",
        "address": "12 University Road\r\nIslamabad",
        "purpose": "Research on child nutrition in poor households.",
        "extent_of_use": "Two researchers; results published only as aggregates.",
        "period_start": "2027-01-01",
        "period_end": "2027-12-31",
        "storage": "soft_copy",
        "categories": ["iv", "v"],
        "dimensions": ["education", "gender"],
        "geography": ["PK6", "PK101"],
        "own_surveys": "",
        "methodology": "Cross-sectional analysis; a follow-up survey of 500 households.",
        "security_measures": "Encrypted laptops, no copies, access logged.",
        "gratis_criterion": "",
        "gratis_justification": "",
    }
    values.update(changes)
    pairs: list[tuple[str, str]] = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, list):
            pairs += [(name, v) for v in value]
        else:
            pairs.append((name, value))
    return pairs


# -- the mapping (pure) ------------------------------------------------------------------------


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out |= _leaves(kind, (*prefix, name))
        else:
            out.add((*prefix, name))
    return out


def test_every_field_of_the_request_form_is_on_the_page_once() -> None:
    paths = list(apply.FIELDS.values())
    assert len(paths) == len(set(paths))
    assert set(paths) == _leaves(RequestForm)


def test_the_labels_cover_exactly_the_models_choices() -> None:
    assert set(apply.ORGANIZATION_TYPES) == set(apply.choices("organization_type"))
    assert set(apply.STORAGE) == set(apply.choices("storage"))
    assert list(apply.CATEGORIES) == list(apply.choices("categories")) == list(sharing.CATEGORIES)
    assert list(apply.DIMENSIONS) == list(apply.choices("dimensions")) == list(sharing.DIMENSIONS)
    assert list(apply.GRATIS) == list(apply.choices("gratis_criterion"))
    assert list(apply.GRATIS) == list(pricing.GRATIS_CRITERIA)
    assert set(apply.STATES) == {state.value for state in machine.State}
    assert apply.WITHDRAWABLE == {state.value for state in machine.PRE_APPROVAL}


def test_html_attributes_are_read_from_the_model() -> None:
    name_limit = OrganizationIn.model_fields["name"].metadata[-1].max_length
    assert apply.attributes("organization_name") == {"required": True, "maxlength": name_limit}
    assert apply.attributes("own_surveys") == {"maxlength": 4000}  # optional
    assert apply.attributes("period_start") == {"required": True}
    assert apply.attributes("categories") == {}  # "at least one" is the server's
    phone = apply.attributes("phone")["pattern"]
    assert phone == r"\+?[0-9][0-9 \-]{5,19}"
    # The HTML pattern accepts and refuses what the model's pattern does.
    model_pattern = OrganizationIn.model_fields["phone"].metadata[0].pattern
    for sample in [
        "+92 51 9246001",
        "0300-1234567",
        "12345",
        "+92-",
        "phone",
        "+92 51 924600112345678901",
    ]:
        assert bool(re.fullmatch(phone, sample)) == bool(re.search(model_pattern, sample)), sample
    # csrf + scalars + each list at its model maximum
    assert apply.max_fields() == 1 + 16 + 8 + 17 + 200


def test_a_complete_submission_is_the_document_the_api_takes() -> None:
    sub = apply.read_fields([("csrf_token", "x"), *good_fields()])
    assert sub.csrf == "x"
    # A textarea's lines are kept (CR LF as LF): free text takes paragraphs.
    assert sub.value("address") == "12 University Road\nIslamabad"
    doc = apply.to_document(sub)
    assert doc["organization"]["type"] == "academic"
    assert doc["period"] == {"start": "2027-01-01", "end": "2027-12-31"}
    assert "gratis_criterion" not in doc
    assert "own_surveys" not in doc
    form, errors = apply.validate(sub)
    assert errors == {}
    assert form == RequestForm.model_validate_json(
        RequestForm.model_validate(doc).model_dump_json()
    )
    assert form is not None
    assert form.period.start == date(2027, 1, 1)
    assert form.geography == ["PK6", "PK101"]
    assert form.gratis_criterion is None
    assert form.organization.address == "12 University Road\nIslamabad"


def test_paragraphs_only_where_the_model_takes_them() -> None:
    # A line break in a one-line field (a name) is still a control character: refused.
    sub = apply.read_fields([("csrf_token", "x"), *good_fields(organization_name="Line\r\nbreak")])
    form, errors = apply.validate(sub)
    assert form is None
    assert "organization_name" in errors


def test_unknown_and_repeated_fields_fail_closed() -> None:
    with pytest.raises(apply.UnknownField):
        apply.read_fields([*good_fields(), ("is_admin", "1")])
    with pytest.raises(apply.UnknownField):
        apply.read_fields([*good_fields(), ("purpose", "a second purpose")])
    with pytest.raises(apply.UnknownField):
        apply.read_fields([("csrf_token", "a"), ("csrf_token", "b")])
    sub = apply.read_fields(good_fields(categories=["iv", "iv", "v"]))
    assert sub.chosen("categories") == ["iv", "v"]  # a repeated choice counts once


def _errors(**changes: Any) -> dict[str, apply.FieldError]:
    form, errors = apply.validate(apply.read_fields(good_fields(**changes)))
    assert form is None
    return errors


def test_each_pydantic_error_is_mapped_to_its_field_in_form_order() -> None:
    errors = _errors(
        organization_name="  ",
        email="not-an-email",
        phone="call me",
        categories=[],
        storage="cloud",
        purpose="x" * 4001,
        period_start="2027-02-30",
    )
    assert list(errors) == [
        "organization_name",
        "email",
        "phone",
        "purpose",
        "period_start",
        "storage",
        "categories",
    ]
    assert errors["organization_name"].message == apply.REQUIRED["organization_name"]
    assert errors["email"].message == apply.FORMAT["email"]
    assert errors["phone"].message == apply.FORMAT["phone"]
    assert errors["purpose"] == apply.FieldError(apply.TOO_LONG_TEXT, {"max": 4000})
    assert errors["period_start"].message == apply.BAD_DATE
    assert errors["storage"].message == apply.CHOOSE_LISTED
    assert errors["categories"].message == apply.REQUIRED["categories"]
    missing = _errors(methodology=None, organization_type=None)
    assert missing["methodology"].message == apply.REQUIRED["methodology"]
    assert missing["organization_type"].message == apply.REQUIRED["organization_type"]


def test_the_models_own_checks_are_mapped_too() -> None:
    assert _errors(period_end="2026-12-31") == {
        "period_end": apply.FieldError(apply.END_BEFORE_START)
    }
    assert _errors(period_end="2033-01-01") == {
        "period_end": apply.FieldError(apply.TOO_LONG_PERIOD)
    }
    assert _errors(gratis_criterion="a") == {
        "gratis_justification": apply.FieldError(apply.REQUIRED["gratis_justification"])
    }
    assert _errors(gratis_justification="we are poor") == {
        "gratis_criterion": apply.FieldError(apply.JUSTIFICATION_WITHOUT_CRITERION)
    }
    assert _errors(dimensions=["Education!"])["dimensions"].message == apply.FORMAT["dimensions"]
    assert _errors(purpose="nul\x00byte") == {"purpose": apply.FieldError(apply.CONTROL_CHARACTERS)}
    service = apply.service_errors([{"field": "geography", "message": "unknown code"}])
    assert service == {"geography": apply.FieldError(apply.FORMAT["geography"])}


def test_the_price_guide_uses_pricings_numbers() -> None:
    rates = apply.rates()
    assert [r.organization_type for r in rates] == list(pricing.RATE_PER_HOUSEHOLD)
    for rate in rates:
        assert rate.per_household == pricing.RATE_PER_HOUSEHOLD[rate.organization_type]
        assert rate.per_dimension == rate.per_household * pricing.DIMENSION_SHARE
    example = apply.example_quote()
    assert example.basis == "formula"
    assert example.G == example.C + example.F
    assert set(apply.formula_categories()) == pricing.FORMULA_CATEGORIES
    assert set(apply.case_by_case_categories()) == pricing.CASE_BY_CASE_CATEGORIES
    assert apply.decimals(pricing.RATE_PER_HOUSEHOLD["government"] * pricing.DIMENSION_SHARE) == 2


# -- over HTTP, against the live site -------------------------------------------------------------


class Applicant:
    """A browser-less visitor from one IP, keeping its cookies."""

    def __init__(self, site: Server) -> None:
        self.ip = new_ip()
        self.http = httpx.Client(
            base_url=site.base_url, headers={"X-Forwarded-For": self.ip}, timeout=30
        )

    def csrf(self, lang: str = "en") -> str:
        page = self.http.get(f"/apply?lang={lang}")
        assert page.status_code == 200
        found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
        assert found
        return found.group(1)

    def post(self, pairs: list[tuple[str, str]], lang: str = "en") -> httpx.Response:
        return self.http.post(
            f"/apply?lang={lang}",
            content=httpx.QueryParams(pairs).__str__(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    def submit(self, lang: str = "en", **changes: Any) -> httpx.Response:
        """Send the form; a sent form redirects (303) to its confirmation, followed here."""
        sent = self.post([("csrf_token", self.csrf(lang)), *good_fields(**changes)], lang)
        if sent.status_code != 303:
            return sent
        assert sent.headers["location"].startswith("/apply/sent/DSR-")
        return self.http.get(sent.headers["location"])


@pytest.fixture
def applicant(site: Server) -> Iterator[Applicant]:
    visitor = Applicant(site)
    yield visitor
    visitor.http.close()


def stored_requests(site: Server) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(site.database_url)  # type: ignore[attr-defined]
        try:
            return int(await conn.fetchval("SELECT count(*) FROM data_requests"))
        finally:
            await conn.close()

    return asyncio.run(count())


def main_of(html: str) -> str:
    found = re.search(r"<main.*?</main>", html, re.S)
    assert found
    return found.group(0)


def test_a_bad_form_is_rendered_again_with_messages_and_nothing_is_stored(
    site: Server, applicant: Applicant
) -> None:
    before = stored_requests(site)
    page = applicant.submit(email="nope", categories=[], period_end="2026-06-01")
    assert page.status_code == 422
    assert "Please correct the following" in page.text
    assert (
        '<a href="#f-email">Enter an email address in the form name@example.org.</a>' in page.text
    )
    assert '<a href="#f-categories-i">Choose at least one category of data.</a>' in page.text
    assert 'aria-describedby="f-email-error" aria-invalid="true"' in page.text
    assert 'value="Institute of Development Studies"' in page.text  # what was typed is kept
    urdu = applicant.submit("ur", email="nope")
    assert urdu.status_code == 422
    assert "ای میل پتہ name@example.org کی شکل میں لکھیں۔" in urdu.text
    assert stored_requests(site) == before


def test_csrf_unknown_fields_and_size_are_refused_as_pages(
    site: Server, applicant: Applicant
) -> None:
    before = stored_requests(site)
    no_csrf = applicant.post(good_fields())
    assert no_csrf.status_code == 403
    assert "text/html" in no_csrf.headers["content-type"]
    assert "This form has expired" in no_csrf.text
    forged = applicant.post([("csrf_token", "0" * 64), *good_fields()])
    assert forged.status_code == 403
    token = applicant.csrf()
    unknown = applicant.post([("csrf_token", token), *good_fields(), ("price", "0")])
    assert unknown.status_code == 422
    assert "price" not in main_of(unknown.text)
    huge = applicant.post([("csrf_token", token), *good_fields(purpose="x" * 70_000)])
    assert huge.status_code == 413
    assert "text/html" in huge.headers["content-type"]
    assert stored_requests(site) == before


def test_the_website_and_the_api_share_one_budget_per_ip(
    site: Server, applicant: Applicant
) -> None:
    """NSER_REQUEST_FORM_LIMITS defaults to 5/minute: 5 API forms, then the page's is refused."""
    form = apply.to_document(apply.read_fields(good_fields()))
    for _ in range(5):
        assert applicant.http.post("/v1/requests", json=form).status_code == 201
    refused = applicant.submit()
    assert refused.status_code == 429
    assert "Too many forms" in refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    # and the other way round: another IP spends its budget on the page, then the API refuses
    other = Applicant(site)
    try:
        for _ in range(5):
            assert other.submit().status_code == 200
        assert other.http.post("/v1/requests", json=form).status_code == 429
    finally:
        other.http.close()


def test_status_page_and_withdrawal(site: Server, applicant: Applicant) -> None:
    done = applicant.submit()
    assert done.status_code == 200
    # Reloading the confirmation sends nothing again.
    before = stored_requests(site)
    assert applicant.http.get(done.url).status_code == 200
    assert stored_requests(site) == before
    link = re.search(r'<a class="button" href="([^"]+)"', done.text)
    assert link
    status_path = link.group(1).replace("&amp;", "&")
    assert re.fullmatch(r"/apply/status/DSR-\d{4}-\d{6}\?token=[A-Za-z0-9_-]+", status_path)
    assert "Keep this link" in done.text
    shown = applicant.http.get(status_path + "&lang=en")
    assert shown.status_code == 200
    assert '<strong class="status-submitted">Submitted</strong>' in shown.text
    # Unknown reference and wrong token: the same page, revealing nothing.
    reference = status_path.split("/")[3].split("?")[0]
    wrong_token = applicant.http.get(f"/apply/status/{reference}?token={'A' * 43}&lang=en")
    unknown = applicant.http.get(f"/apply/status/DSR-1999-000001?token={'A' * 43}&lang=en")
    no_token = applicant.http.get(f"/apply/status/{reference}?lang=en")
    assert wrong_token.status_code == unknown.status_code == no_token.status_code == 404
    assert main_of(wrong_token.text) == main_of(unknown.text) == main_of(no_token.text)
    assert "No request matches this link" in wrong_token.text
    # Withdraw: CSRF required, then the status says so and the button is gone.
    token = status_path.split("token=")[1]
    withdraw = f"/apply/status/{reference}/withdraw"
    refused = applicant.http.post(withdraw, data={"token": token})
    assert refused.status_code == 403
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', shown.text)
    assert csrf
    moved = applicant.http.post(withdraw, data={"csrf_token": csrf.group(1), "token": token})
    assert moved.status_code == 303
    after = applicant.http.get(moved.headers["location"])
    assert "status-withdrawn" in after.text
    assert "/withdraw" not in after.text
    # The token never reaches the access log: only the path is logged.
    assert all(token not in str(line) for line in site.access_lines())


def test_the_price_guide_renders_pricings_numbers(site: Server, applicant: Applicant) -> None:
    page = applicant.http.get("/apply?lang=en").text
    example = apply.example_quote()
    assert f"Rs {int(example.G):,}" in page  # type: ignore[arg-type]
    assert '<td class="num">0.45</td>' in page  # E of government: 15% of 3
    assert "15% × A" in page
    urdu = applicant.http.get("/apply?lang=ur").text
    assert "قیمت کیسے طے ہوتی ہے" in urdu
    assert "پنجاب" in urdu


# -- in a real browser ----------------------------------------------------------------------------


def _fill_and_send(page: Page) -> None:
    page.fill("#f-organization_name", "Institute of Development Studies")
    page.select_option("#f-organization_type", "academic")
    page.fill("#f-contact_name", "Ayesha Khan")
    page.fill("#f-email", "ayesha@ids.example.org")
    page.fill("#f-phone", "+92 51 9246001")
    page.fill("#f-address", "12 University Road, Islamabad")
    page.fill("#f-purpose", "Research on child nutrition in poor households.")
    page.fill("#f-extent_of_use", "Two researchers; aggregates only.")
    page.fill("#f-period_start", "2027-01-01")
    page.fill("#f-period_end", "2027-12-31")
    page.check("#f-storage-soft_copy")
    page.check("#f-categories-v")
    page.check("#f-dimensions-education")
    page.select_option("#f-geography", ["PK6", "PK101"])
    page.fill("#f-methodology", "Cross-sectional analysis.")
    page.fill("#f-security_measures", "Encrypted laptops, access logged.")
    assert page.is_hidden("#f-gratis_justification")  # apply.js: shown once a criterion is
    page.check("#f-gratis_criterion-a")
    assert page.is_visible("#f-gratis_justification")
    page.fill("#f-gratis_justification", "A university; findings shared with BISP.")
    page.get_by_role("button", name=re.compile("Send the request|درخواست بھیجیں")).click()


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "ur"])
def test_apply_end_to_end_in_a_browser(new_page: Callable[..., Page], lang: str) -> None:
    page = new_page()  # the real CSP: apply.js must run under it
    problems: list[str] = []  # CSP refusals show as console errors; failed loads as responses
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and "Failed to load resource" not in m.text
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.goto(f"/apply?lang={lang}")
    # Every pattern the page sends is valid for the browser ('v' flag, as HTML compiles it).
    bad_patterns = page.evaluate(
        """[...document.querySelectorAll('[pattern]')].filter(e => {
             try { new RegExp('^(?:' + e.pattern + ')$', 'v'); return false; }
             catch (err) { return true; } }).map(e => e.id)"""
    )
    assert bad_patterns == []
    # The browser refuses an empty form by itself (required fields).
    page.get_by_role("button", name=re.compile("Send the request|درخواست بھیجیں")).click()
    assert page.url.endswith(f"/apply?lang={lang}")
    assert page.evaluate("document.querySelector('#f-organization_name').validity.valueMissing")
    _fill_and_send(page)
    page.wait_for_selector(".reference")
    reference = page.locator("strong.reference").inner_text()
    sent_url = page.url  # the form redirected here: reloading it sends nothing
    assert "/apply/sent/" in sent_url
    assert re.fullmatch(r"DSR-\d{4}-\d{6}", reference)
    link = page.locator(".status-link a").get_attribute("href")
    assert link
    assert "token=" in link
    page.locator("a.button").click()
    page.wait_for_selector(".status-submitted")
    assert page.locator(".status-submitted").inner_text() == SUBMITTED[lang]
    assert page.locator(".timeline li").count() == 1
    assert problems == [], problems
    # The confirmation and the status page, scanned and photographed (axe needs the CSP
    # bypassed).
    scan = new_page(bypass_csp=True)
    scan.goto(sent_url)
    assert scan.locator("strong.reference").inner_text() == reference
    screenshot(scan, f"apply-sent-{lang}-desktop")
    assert axe_violations(scan) == []
    scan.goto(f"{link}&lang={lang}")
    assert scan.locator(".status-submitted").inner_text() == SUBMITTED[lang]
    screenshot(scan, f"apply-status-{lang}-desktop")
    assert axe_violations(scan) == []


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "ur"])
def test_apply_form_is_accessible_on_desktop_and_phone(
    new_page: Callable[..., Page], phone_page: Page, lang: str
) -> None:
    page = new_page(bypass_csp=True)
    page.goto(f"/apply?lang={lang}")
    assert page.locator("html").get_attribute("dir") == ("rtl" if lang == "ur" else "ltr")
    screenshot(page, f"apply-{lang}-desktop")
    assert axe_violations(page) == []
    # A refused form (client checks bypassed): the summary is focused, the page still passes.
    page.evaluate("document.querySelector('form.apply-form').noValidate = true")
    page.get_by_role("button", name=re.compile("Send the request|درخواست بھیجیں")).click()
    page.wait_for_selector("#error-summary")
    assert page.evaluate("document.activeElement.id") == "error-summary"
    assert axe_violations(page) == []
    phone_page.goto(f"/apply?lang={lang}")
    overflow = phone_page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    screenshot(phone_page, f"apply-{lang}-phone")
