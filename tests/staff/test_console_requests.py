"""The console's "My work", request and agreement pages over HTTP: each member sees the
queues and actions of their roles, a request goes from the form to a signed agreement
through the pages (step-up before approve, reject and sign), a wrong role gets 403 and a
wrong state 409 as a page saying why, and an agreement is suspended, resumed and revoked.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
from conftest import fresh_database
from partner_helpers import bearer, get_token
from request_helpers import form
from staff_helpers import (
    Browser,
    browser,
    browsers,
    enrolled,
    post_form,
    session_hash,
    signed_in_member,
    staff_db,
    step_up,
)

__all__ = ["browser", "staff_db"]  # the fixtures


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A registry of its own: the journey's counts and states are this module's alone."""
    with fresh_database(households=200, seed=35) as url:
        yield url


_ips = iter(range(1, 250))


async def submit(browser: Browser, **overrides: object) -> str:
    """A request filed through the public API (each from an address of its own)."""
    made = await browser(ip=f"198.51.100.{next(_ips)}").post("/v1/requests", json=form(**overrides))
    assert made.status_code == 201, made.text
    reference: str = made.json()["reference"]
    return reference


def actions_on(page: httpx.Response) -> set[str]:
    return set(re.findall(r'data-action="([a-z_]+)"', page.text))


async def age_verification(staff_db: asyncpg.Connection, client: httpx.AsyncClient) -> None:
    await staff_db.execute(
        "UPDATE staff_sessions SET last_verified_at = now() - interval '1 hour' WHERE id_hash = $1",
        await session_hash(client),
    )


async def test_my_work_shows_the_sections_of_the_members_roles(
    database_url: str, browser: Browser
) -> None:
    reference = await submit(browser)
    _, officer = await signed_in_member(database_url, browser, "officer")
    page = await officer.get("/staff/")
    assert page.status_code == 200
    assert 'id="requests"' in page.text
    assert 'id="grievances"' in page.text
    assert 'id="obligations"' in page.text
    assert 'id="spot-checks"' not in page.text
    assert f"/staff/requests/{reference}?" in page.text
    _, committee = await signed_in_member(database_url, browser, "committee")
    page = await committee.get("/staff/")
    assert 'id="requests"' in page.text
    assert 'id="grievances"' not in page.text
    assert f"/staff/requests/{reference}?" not in page.text  # submitted waits on an officer
    _, checker = await signed_in_member(database_url, browser, "me")
    page = await checker.get("/staff/?lang=ur")
    assert 'id="spot-checks"' in page.text
    assert 'id="requests"' not in page.text
    assert 'dir="rtl"' in page.text
    _, admin = await signed_in_member(database_url, browser, "admin")
    page = await admin.get("/staff/")
    assert 'id="requests"' not in page.text
    assert "/staff/admin/staff" in page.text


async def test_a_request_from_the_form_to_a_signed_agreement(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    reference = await submit(browser, categories=["iv"], dimensions=[])
    path = f"/staff/requests/{reference}"
    officer_member, officer = await signed_in_member(database_url, browser, "officer")
    _, committee = await signed_in_member(database_url, browser, "committee")
    secretary_member, secretary = await signed_in_member(database_url, browser, "secretary")

    page = await officer.get(path)
    assert page.status_code == 200
    assert "ayesha.khan@pspa.example.pk" in page.text  # the form as submitted
    assert actions_on(page) == {"start_review", "withdraw"}
    assert actions_on(await committee.get(path)) == set()
    # The page read is the staff API's, audited as the member.
    audited = await staff_db.fetchval(
        "SELECT count(*) FROM audit_log WHERE client_id = $1 AND endpoint = $2",
        officer_member.staff_id,
        "GET /v1/staff/requests/{id}",
    )
    assert audited >= 1

    # A committee member who posts the officer's action anyway: 403, saying why.
    refused = await post_form(committee, f"{path}/actions/start_review", notes="")
    assert refused.status_code == 403
    assert "Your roles do not allow this action" in refused.text
    # The officer's review before the review has started: 409, naming the state.
    early = await post_form(
        officer, f"{path}/actions/review", category="iv", clearance_level="restricted"
    )
    assert early.status_code == 409
    assert "not possible while the request is Submitted" in early.text

    for action, fields in (
        ("start_review", {"notes": "Complete"}),
        ("review", {"category": "iv", "clearance_level": "restricted", "valid_days": "365"}),
        ("record_interview", {"outcome": "passed", "notes": "Methodology sound"}),
    ):
        done = await post_form(officer, f"{path}/actions/{action}", **fields)
        assert done.status_code == 303, (action, done.text[:2000])
    page = await officer.get(path)
    assert 'data-state="interviewed"' in page.text
    assert 'data-letter="G"' in page.text
    assert "Base data cost" in page.text
    done = await post_form(
        committee, f"{path}/actions/recommend", recommendation="approve", notes="Sound purpose"
    )
    assert done.status_code == 303, done.text[:2000]
    assert actions_on(await secretary.get(path)) == {"approve", "reject"}

    # Approval needs a fresh passkey check: the first post goes to the step-up page.
    await age_verification(staff_db, secretary)
    asked = await post_form(secretary, f"{path}/actions/approve", reasons="Recommended")
    assert asked.status_code == 303
    assert asked.headers["location"].startswith("/staff/step-up?next=")
    assert 'data-state="recommended"' in (await secretary.get(path)).text
    verified = await step_up(secretary, secretary_member.device, path)
    assert verified.status_code == 200, verified.text
    done = await post_form(secretary, f"{path}/actions/approve", reasons="Recommended")
    assert done.status_code == 303, done.text[:2000]
    page = await secretary.get(f"{path}?done=approve")
    assert "Fixed at approval" in page.text

    signed = await post_form(officer, f"{path}/actions/sign", notes="")
    assert signed.status_code == 200, signed.text[:2000]
    client_id = re.search(r'id="client-id">([^<]+)<', signed.text)
    secret = re.search(r'id="client-secret">([^<]+)<', signed.text)
    assert client_id
    assert secret
    assert 'data-state="active"' in signed.text
    token = await get_token(browser(), client_id.group(1), secret.group(1))
    listed = await browser().get("/v1/partner/beneficiaries?limit=3", headers=bearer(token))
    assert listed.status_code == 200, listed.text

    agreement = re.search(r"/staff/agreements/([0-9a-f-]{36})\?", signed.text)
    assert agreement
    # Signed again: the state no longer allows it.
    again = await post_form(officer, f"{path}/actions/sign", notes="")
    assert again.status_code == 409


async def test_the_list_filters_by_state_and_pages(database_url: str, browser: Browser) -> None:
    first = await submit(browser)
    _, officer = await signed_in_member(database_url, browser, "officer")
    listed = await officer.get("/staff/requests?state=submitted")
    assert listed.status_code == 200
    assert first in listed.text
    none = await officer.get("/staff/requests?state=revoked")
    assert first not in none.text
    older = await officer.get("/staff/requests?before=2000-01-01T00:00:00Z")
    assert "No request matches" in older.text
    assert (await officer.get("/staff/requests?state=nonsense")).status_code == 422
    assert (await officer.get("/staff/requests?surprise=1")).status_code in (200, 422)
    _, _admin = await signed_in_member(database_url, browser, "admin")
    assert (await _admin.get("/staff/requests")).status_code == 200  # admins read requests


async def test_unknown_fields_and_actions_are_refused(database_url: str, browser: Browser) -> None:
    reference = await submit(browser)
    _, officer = await signed_in_member(database_url, browser, "officer")
    path = f"/staff/requests/{reference}"
    extra = await post_form(officer, f"{path}/actions/start_review", notes="", surprise="x")
    assert extra.status_code == 422
    odd = await post_form(officer, f"{path}/actions/suspend", notes="")
    assert odd.status_code == 404
    assert (await officer.get("/staff/requests/DSR-2026-999999")).status_code == 404


async def _active_agreement(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> str:
    """An agreement signed through the staff API (the pages' journey is tested above)."""
    organization = {**form()["organization"], "name": f"Overseen {uuid.uuid4().hex[:8]}"}
    reference = await submit(browser, categories=["iv"], dimensions=[], organization=organization)
    api = browser()
    who = {}
    for role in ("officer", "committee", "secretary"):
        member = await enrolled(database_url, browser, role)
        who[role] = bearer(await get_token(api, member.staff_id, member.client_secret))
    steps = (
        ("officer", "start_review", {}),
        ("officer", "review", {"category": "iv", "clearance_level": "restricted"}),
        ("officer", "record_interview", {"outcome": "passed", "notes": "ok"}),
        ("committee", "recommend", {"recommendation": "approve", "notes": "ok"}),
        ("secretary", "approve", {"reasons": "ok"}),
        ("officer", "sign", {}),
    )
    answer: dict[str, str] = {}
    for role, action, body in steps:
        done = await api.post(
            f"/v1/staff/requests/{reference}/actions/{action}", json=body, headers=who[role]
        )
        assert done.status_code == 200, done.text
        answer = done.json()
    partner = bearer(await get_token(api, answer["client_id"], answer["client_secret"]))
    for _ in range(3):
        used = await api.get("/v1/partner/beneficiaries?limit=2", headers=partner)
        assert used.status_code == 200, used.text
    return answer["agreement_id"]


async def test_an_agreement_is_suspended_resumed_and_revoked(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    agreement_id = await _active_agreement(database_url, browser, staff_db)
    path = f"/staff/agreements/{agreement_id}"
    checker_member, checker = await signed_in_member(database_url, browser, "me")
    _, secretary = await signed_in_member(database_url, browser, "secretary")
    _, officer = await signed_in_member(database_url, browser, "officer")

    page = await checker.get(path)
    assert page.status_code == 200
    usage = page.text[page.text.index('id="usage"') :][:3000]
    assert "/v1/partner/beneficiaries (page)" in usage, usage  # by endpoint and day
    assert "<svg" in page.text
    assert 'data-state="active"' in page.text
    assert actions_on(page) == {"spot_check", "suspend", "revoke"}
    assert actions_on(await officer.get(path)) == set()
    assert actions_on(await secretary.get(path)) == {"secretary_suspend", "secretary_revoke"}
    refused = await post_form(officer, f"{path}/suspend", findings="no")
    assert refused.status_code == 403
    assert "Your roles do not allow this action" in refused.text

    checked = await post_form(checker, f"{path}/spot-check", outcome="passed", findings="Fine")
    assert checked.status_code == 303
    await age_verification(staff_db, checker)
    asked = await post_form(checker, f"{path}/suspend", findings="Copies outside the VPN")
    assert asked.status_code == 303
    assert asked.headers["location"].startswith("/staff/step-up")
    assert (await step_up(checker, checker_member.device, path)).status_code == 200
    done = await post_form(checker, f"{path}/suspend", findings="Copies outside the VPN")
    assert done.status_code == 303
    page = await secretary.get(path)
    assert 'data-state="suspended"' in page.text
    assert actions_on(page) == {"resume", "secretary_revoke"}
    assert (await post_form(secretary, f"{path}/resume", reasons="Fixed")).status_code == 303
    again = await post_form(secretary, f"{path}/resume", reasons="Fixed")
    assert again.status_code == 409
    assert "not possible while the agreement is Active" in again.text
    assert (await post_form(checker, f"{path}/revoke", findings="Repeated")).status_code == 303
    page = await checker.get(path)
    assert 'data-state="revoked"' in page.text
    assert actions_on(page) == set()
    assert "Copies outside the VPN" in page.text  # the spot-check history
    assert (await checker.get(f"/staff/agreements/{uuid.uuid4()}")).status_code == 404


async def test_console_reads_share_the_members_api_budget(database_url: str) -> None:
    """A request's page counts against NSER_STAFF_READ_LIMITS with the member's API reads
    (one budget per staff client), and past it the console answers a 429 page."""
    async with browsers(database_url, staff_read_limits="2/minute") as open_browser:
        reference = await submit(open_browser)
        member, client = await signed_in_member(database_url, open_browser, "officer")
        token = await get_token(client, member.staff_id, member.client_secret)
        api = await client.get(f"/v1/staff/requests/{reference}", headers=bearer(token))
        assert api.status_code == 200, api.text
        first = await client.get(f"/staff/requests/{reference}")
        assert first.status_code == 200, first.text
        refused = await client.get(f"/staff/requests/{reference}")
        assert refused.status_code == 429
        assert "text/html" in refused.headers["content-type"]
        assert int(refused.headers["retry-after"]) > 0
        assert "Too many requests" in refused.text
        assert "Ayesha Khan" not in refused.text  # the request's contact: not shown
