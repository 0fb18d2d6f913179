"""/check, "Check a poverty level": the public look-up as a page, in a browser and over HTTP.

The page shares the API's per-IP fair-usage budget (the site runs the default
NSER_PUBLIC_LOOKUP_LIMITS, 10/minute) and asks for a proof-of-work challenge after
NSER_CHECK_FREE_LOOKUPS (3) checks an hour. Every test speaks from an IP of its own.
"""

from __future__ import annotations

import asyncio
import base64
import html
import itertools
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from browser import axe_violations, screenshot
from conftest import REDIS_URL, make_settings
from playwright.sync_api import Page
from server import Server
from solver import solve

from app.main import create_app
from app.rate_limit import build_backend
from app.web.public import challenge

pytestmark = pytest.mark.slow

FREE = 3  # NSER_CHECK_FREE_LOOKUPS, default
BUDGET = 10  # NSER_PUBLIC_LOOKUP_LIMITS, default "10/minute;100/day"
BAND_WORDS = {"en": "Poor", "ur": "غریب"}
_ips = itertools.count(1)


def dashed(cnic: str) -> str:
    return f"{cnic[:5]}-{cnic[5:12]}-{cnic[12]}"


def new_ip() -> str:
    n = next(_ips)
    return f"10.88.{n // 250}.{n % 250 + 1}"


# -- helpers over plain HTTP ------------------------------------------------------------------


class Visitor:
    """A browser-less visitor: keeps cookies, speaks from one IP, solves challenges in Python."""

    def __init__(self, site: Server, ip: str | None = None) -> None:
        self.ip = ip or new_ip()
        self.http = httpx.Client(
            base_url=site.base_url, headers={"X-Forwarded-For": self.ip}, timeout=30
        )
        self.last: httpx.Response | None = None

    def form_page(self) -> httpx.Response:
        self.last = self.http.get("/check?lang=en")
        assert self.last.status_code == 200
        return self.last

    def token(self) -> str:
        page = self.last or self.form_page()
        found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
        assert found, page.text
        return found.group(1)

    def challenge(self) -> dict[str, Any] | None:
        page = self.last or self.form_page()
        found = re.search(r'data-challenge="([^"]+)"', page.text)
        return json.loads(html.unescape(found.group(1))) if found else None

    def solution(self) -> str:
        challenge = self.challenge()
        assert challenge, "the page offers no challenge"
        return solve(challenge)

    def check(self, cnic: str, *, solve_if_asked: bool = True, **extra: str) -> httpx.Response:
        fields = {"csrf_token": self.token(), "cnic": cnic, **extra}
        if solve_if_asked and "altcha" not in extra and self.challenge():
            fields["altcha"] = self.solution()
        self.last = self.http.post("/check", data=fields)
        return self.last

    def api(self, cnic: str) -> httpx.Response:
        return self.http.get(f"/v1/public/scores/{cnic}")

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def visitor(site: Server) -> Iterator[Visitor]:
    v = Visitor(site)
    yield v
    v.close()


USED_CNICS: set[str] = set()


@pytest.fixture
def cnic(known_member: dict[str, Any]) -> str:
    value: str = known_member["cnic"]
    USED_CNICS.add(value)
    return value


# -- unit tests of app.web.public.challenge ------------------------------------------------------

KEY = b"k" * 32


def test_a_solved_challenge_verifies_once_and_only_with_its_key() -> None:
    now = time.time()
    issued = challenge.new_challenge(KEY, now=now, max_number=2000)
    assert set(issued) == {"algorithm", "challenge", "maxNumber", "salt", "signature"}
    assert issued["algorithm"] == "SHA-256"
    solution = solve(issued)
    verdict, signature = challenge.verify(solution, KEY, now=now)
    assert verdict is challenge.Verdict.OK
    assert signature == issued["signature"]
    assert challenge.verify(solution, b"x" * 32, now=now) == (challenge.Verdict.INVALID, None)
    later = now + challenge.CHALLENGE_TTL + 1
    assert challenge.verify(solution, KEY, now=later) == (challenge.Verdict.EXPIRED, None)
    for storage in ("memory://", f"{REDIS_URL}?key_prefix=test-{uuid.uuid4().hex}"):
        backend = build_backend(storage)
        assert challenge.claim(backend, signature)
        assert not challenge.claim(backend, signature)  # a replay
        assert challenge.claim(backend, "f" * 64)


def _payload(**fields: Any) -> str:
    return base64.b64encode(json.dumps(fields).encode()).decode()


def test_forged_or_malformed_solutions_are_invalid() -> None:
    now = time.time()
    issued = challenge.new_challenge(KEY, now=now, max_number=2000)
    good = json.loads(base64.b64decode(solve(issued)))
    wrong_number = _payload(**{**good, "number": good["number"] + 1})
    # A salt rewritten to expire later no longer matches the signed challenge.
    later_salt = re.sub(r"expires=\d+", f"expires={int(now) + 10**6}", good["salt"])
    forged = [
        wrong_number,
        _payload(**{**good, "salt": later_salt}),
        _payload(**{**good, "algorithm": "SHA-1"}),
        _payload(**{**good, "number": str(good["number"])}),
        _payload(**{**good, "number": True}),
        _payload(**{k: v for k, v in good.items() if k != "signature"}),
        _payload(**{**good, "salt": good["salt"].split("?")[0]}),  # no expiry
        "not base64!",
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(b"\xff\xfe").decode(),
        "",
        "A" * (challenge.MAX_PAYLOAD + 4),
    ]
    for payload in forged:
        assert challenge.verify(payload, KEY, now=now) == (challenge.Verdict.INVALID, None), payload


def test_free_sends_are_counted_per_ip_and_per_form() -> None:
    backend = build_backend("memory://")
    assert challenge.free_left(backend, 2, "a", form="check")
    assert challenge.spend_free(backend, 2, "a", form="check")
    assert challenge.spend_free(backend, 2, "a", form="check")
    assert not challenge.free_left(backend, 2, "a", form="check")
    assert not challenge.spend_free(backend, 2, "a", form="check")
    assert challenge.free_left(backend, 2, "b", form="check")
    assert challenge.free_left(backend, 2, "a", form="grievance")  # each form its own count
    assert not challenge.free_left(backend, 0, "c", form="check")  # 0: a challenge every time
    assert not challenge.spend_free(backend, 0, "c", form="check")


def test_admit_spends_a_free_send_or_claims_a_solution_once() -> None:
    backend = build_backend("memory://")
    now = time.time()

    def admit(solution: str, key: bytes = KEY) -> challenge.Verdict:
        return challenge.admit(backend, key, solution, free=1, client="a", form="check", now=now)

    assert admit("") is challenge.Verdict.OK  # the free send
    assert admit("") is challenge.Verdict.NEEDED
    solution = solve(json.loads(challenge.offer(KEY, now=now)))
    assert admit(solution, b"another form's key" * 2) is challenge.Verdict.INVALID
    assert admit(solution) is challenge.Verdict.OK
    assert admit(solution) is challenge.Verdict.REPLAYED


def test_waits_are_words_rounded_up() -> None:
    assert challenge.wait_words(1, "en_PK") == "1 second"
    assert challenge.wait_words(45, "en_PK") == "45 seconds"
    assert challenge.wait_words(61, "en_PK") == "2 minutes"
    assert challenge.wait_words(3599, "en_PK") == "1 hour"
    assert challenge.wait_words(3601, "en_PK") == "2 hours"
    assert challenge.wait_words(45, "ur_PK") == "45 سیکنڈ"
    assert challenge.wait_words(600, "ur_PK") == "10 منٹ"


# -- over HTTP --------------------------------------------------------------------------------


def test_found_answers_the_band_masked_and_uncached(visitor: Visitor, cnic: str) -> None:
    answer = visitor.check(dashed(cnic))
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert f"{cnic[:5]}-*******-{cnic[12]}" in answer.text
    assert cnic not in answer.text
    assert dashed(cnic) not in answer.text
    assert 'data-band="poor"' in answer.text


def test_form_hints_the_format_and_takes_digits(visitor: Visitor) -> None:
    form = visitor.form_page().text
    assert 'inputmode="numeric"' in form
    assert 'autocomplete="off"' in form
    assert "12345-1234567-1" in form
    assert 'method="post"' in form
    assert "data-challenge" not in form  # the first checks of the hour are free


def test_missing_csrf_is_a_403_page(visitor: Visitor, cnic: str) -> None:
    visitor.form_page()
    answer = visitor.http.post("/check", data={"cnic": cnic})
    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("text/html")
    assert "This form has expired" in answer.text
    forged = visitor.http.post("/check", data={"cnic": cnic, "csrf_token": "0" * 64})
    assert forged.status_code == 403


def test_unknown_or_repeated_fields_are_a_422_page(visitor: Visitor, cnic: str) -> None:
    token = visitor.token()
    unknown = visitor.http.post("/check", data={"csrf_token": token, "cnic": cnic, "name": "x"})
    assert unknown.status_code == 422
    assert "Some of what was sent is not valid" in unknown.text
    assert cnic not in unknown.text
    repeated = visitor.http.post(
        "/check",
        content=f"csrf_token={token}&cnic={cnic}&cnic={cnic}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert repeated.status_code == 422
    huge = visitor.http.post("/check", data={"csrf_token": token, "cnic": "1" * 5000})
    assert huge.status_code == 413
    # A CNIC in the address is refused, never looked up.
    assert visitor.http.get(f"/check?cnic={cnic}").status_code == 422


def test_errors_re_render_the_form_with_their_status(visitor: Visitor) -> None:
    empty = visitor.check("")
    assert empty.status_code == 422
    assert 'aria-invalid="true"' in empty.text
    malformed = visitor.check("12345-123")
    assert malformed.status_code == 422
    assert 'href="#cnic"' in malformed.text
    assert "Enter the CNIC as 13 digits" in malformed.text
    unknown = visitor.check("9990100000099")
    assert unknown.status_code == 404
    assert "No living member of the registry has this CNIC." in unknown.text
    assert 'id="check-form"' in unknown.text


def test_urdu_errors(visitor: Visitor) -> None:
    visitor.last = visitor.http.get("/check?lang=ur")
    unknown = visitor.check("99901-0000009-9")
    assert unknown.status_code == 404
    assert 'lang="ur"' in unknown.text
    assert "رجسٹری کے کسی زندہ فرد کا یہ شناختی کارڈ نمبر نہیں ہے۔" in unknown.text


def test_challenge_after_the_free_checks_and_never_twice(visitor: Visitor, cnic: str) -> None:
    for _ in range(FREE):
        assert visitor.check(cnic, solve_if_asked=False).status_code == 200
    assert visitor.challenge(), "the page should offer a challenge once the free checks are used"
    asked = visitor.check(cnic, solve_if_asked=False)
    assert asked.status_code == 403
    assert "needs JavaScript" in asked.text
    assert "/static/js/challenge.js" in asked.text
    solution = visitor.solution()
    solved = visitor.check(cnic, altcha=solution)
    assert solved.status_code == 200, solved.text
    assert 'data-band="poor"' in solved.text
    replayed = visitor.check(cnic, altcha=solution)
    assert replayed.status_code == 403
    assert "already used" in replayed.text
    forged = visitor.check(cnic, altcha=solution[:-8] + "AAAAAAA=")
    assert forged.status_code == 403


def test_free_checks_are_counted_per_ipv6_prefix(site: Server, cnic: str) -> None:
    # A client rotating through the addresses of its /64 is one client.
    first = Visitor(site, ip="2001:db8:c4ec:1::1")
    for _ in range(FREE):
        assert first.check(cnic, solve_if_asked=False).status_code == 200
    same_prefix = Visitor(site, ip="2001:db8:c4ec:1:ffff:eeee:dddd:2")
    other_prefix = Visitor(site, ip="2001:db8:c4ec:2::1")
    try:
        same_prefix.form_page()
        assert same_prefix.challenge(), "the /64 has used its free checks"
        other_prefix.form_page()
        assert other_prefix.challenge() is None
    finally:
        for visitor in (first, same_prefix, other_prefix):
            visitor.close()


def test_one_budget_with_the_api_exhausted_by_the_page(visitor: Visitor, cnic: str) -> None:
    for n in range(BUDGET):
        answer = visitor.check(cnic)
        assert answer.status_code == 200, (n, answer.text)
    limited = visitor.check(cnic)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert "Please try again in" in limited.text
    assert visitor.api(cnic).status_code == 429


def test_one_budget_with_the_api_exhausted_by_the_api(visitor: Visitor, cnic: str) -> None:
    for _ in range(BUDGET):
        assert visitor.api(cnic).status_code == 200
    limited = visitor.check(cnic)
    assert limited.status_code == 429
    assert re.search(r"try again in \d+ (seconds?|minutes?)", limited.text)


class _RegistryDown:
    """A pool whose every query fails as a lost database connection does."""

    async def fetchrow(self, *args: Any) -> None:
        raise ConnectionRefusedError("the registry is down")


def test_registry_down_is_a_503_form(site: Server, cnic: str) -> None:
    async def scenario() -> httpx.Response:
        app = create_app(make_settings(site.database_url))  # type: ignore[attr-defined]
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("203.0.113.77", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://nser.test") as c:
                form = await c.get("/check")
                token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', form.text)
                assert token
                # The look-up reads through app.state.reads (its primary: no replica here).
                reads = app.state.reads
                pool, reads.primary = reads.primary, _RegistryDown()
                try:
                    return await c.post("/check", data={"csrf_token": token.group(1), "cnic": cnic})
                finally:
                    reads.primary = pool

    with ThreadPoolExecutor(1) as worker:  # Playwright may hold this thread's event loop
        answer = worker.submit(asyncio.run, scenario()).result()
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert "temporarily unavailable" in answer.text
    assert 'id="check-form"' in answer.text


# -- in a browser -----------------------------------------------------------------------------


def _submit(page: Page, cnic: str) -> int:
    page.fill("#cnic", cnic)
    with page.expect_response(lambda r: r.request.method == "POST") as info:
        page.get_by_role("button", name=re.compile("^(Check|چیک کریں)$")).click()
    page.wait_for_load_state()
    return info.value.status


@pytest.mark.parametrize("lang", ["en", "ur"])
def test_check_in_a_browser_in_both_languages(
    new_page: Callable[..., Page], cnic: str, lang: str
) -> None:
    page = new_page(bypass_csp=True)
    page.goto(f"/check?lang={lang}")
    assert page.locator("html").get_attribute("lang") == lang
    screenshot(page, f"check-{lang}-desktop")
    assert axe_violations(page) == []
    written = dashed(cnic) if lang == "en" else cnic
    assert _submit(page, written) == 200
    band = page.locator("#result .band")
    assert band.inner_text() == BAND_WORDS[lang]
    assert page.locator("#result .cnic").inner_text() == f"{cnic[:5]}-*******-{cnic[12]}"
    assert cnic not in page.content()
    screenshot(page, f"check-result-{lang}-desktop")
    assert axe_violations(page) == []


@pytest.mark.parametrize("lang", ["en", "ur"])
def test_check_on_a_phone(phone_page: Page, cnic: str, lang: str) -> None:
    phone_page.goto(f"/check?lang={lang}")
    assert _submit(phone_page, cnic) == 200
    overflow = phone_page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    screenshot(phone_page, f"check-{lang}-phone")


def test_malformed_cnic_shows_the_error(new_page: Callable[..., Page]) -> None:
    page = new_page(bypass_csp=True)
    page.goto("/check?lang=en")
    assert _submit(page, "12345-12345") == 422
    field = page.locator("#cnic")
    assert field.get_attribute("aria-invalid") == "true"
    assert "cnic-error" in (field.get_attribute("aria-describedby") or "")
    assert "Enter the CNIC as 13 digits" in page.locator("#error-summary").inner_text()
    page.locator("#error-summary a").click()
    assert page.evaluate("document.activeElement.id") == "cnic"
    assert axe_violations(page) == []


def test_the_limit_shows_the_wait(new_page: Callable[..., Page], site: Server, cnic: str) -> None:
    ip = new_ip()
    page = new_page(extra_http_headers={"X-Forwarded-For": ip}, locale="ur-PK")
    page.goto("/check?lang=ur")
    api = Visitor(site, ip)
    for _ in range(BUDGET):
        assert api.api(cnic).status_code == 200
    api.close()
    assert _submit(page, cnic) == 429
    notice = page.locator("#error-summary").inner_text()
    assert re.search(r"\d+ (سیکنڈ|منٹ)", notice), notice


def test_after_the_free_checks_check_js_solves_the_challenge(
    new_page: Callable[..., Page], site: Server, cnic: str
) -> None:
    ip = new_ip()
    spender = Visitor(site, ip)
    for _ in range(FREE):
        assert spender.check(cnic).status_code == 200
    spender.close()
    page = new_page(extra_http_headers={"X-Forwarded-For": ip})
    page.goto("/check?lang=en")
    assert page.locator("#check-form").get_attribute("data-challenge")
    assert _submit(page, dashed(cnic)) == 200
    assert page.locator("#result .band").inner_text() == "Poor"
    screenshot(page, "check-challenge-en-desktop")

    # Without JavaScript, the page says the check needs it.
    still = new_page(extra_http_headers={"X-Forwarded-For": ip}, java_script_enabled=False)
    still.goto("/check?lang=en")
    assert "needs JavaScript" in still.locator("#challenge").inner_text()
    assert _submit(still, cnic) == 403


def test_no_cnic_reaches_the_access_log(site: Server) -> None:
    assert USED_CNICS, "run with the other tests of this module"
    lines = site.access_lines()
    assert any(line["method"] == "POST" and line["path"] == "/check" for line in lines)
    text = json.dumps(lines)
    for cnic in USED_CNICS:
        assert cnic not in text
        assert dashed(cnic) not in text
