"""The agreement page's Secretary forms over HTTP: the Secretary suspends and revokes an
agreement (with reasons, after a fresh passkey check), the partner is refused at once, each
member sees only the forms of their roles, another role is refused (403) and a wrong state
is 409, each as a page saying why, and a refused form changes nothing."""

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
    enrolled,
    post_form,
    session_hash,
    signed_in_member,
    staff_db,
    step_up,
)

__all__ = ["browser", "staff_db"]  # the fixtures

PARTNER_CALL = "/v1/partner/beneficiaries?limit=2"
SECRETARY_FORMS = {"secretary_suspend", "secretary_revoke"}


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A registry of its own: its agreements are suspended and revoked."""
    with fresh_database(households=60, seed=43) as url:
        yield url


def actions_on(page: httpx.Response) -> set[str]:
    return set(re.findall(r'data-action="([a-z_]+)"', page.text))


async def active_agreement(database_url: str, browser: Browser) -> tuple[str, dict[str, str]]:
    """An agreement signed through the staff API, and its partner's headers."""
    organization = {**form()["organization"], "name": f"Overseen {uuid.uuid4().hex[:8]}"}
    api = browser(ip=f"198.51.100.{uuid.uuid4().int % 200 + 1}")
    made = await api.post(
        "/v1/requests", json=form(categories=["iv"], dimensions=[], organization=organization)
    )
    assert made.status_code == 201, made.text
    reference = made.json()["reference"]
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
    assert (await api.get(PARTNER_CALL, headers=partner)).status_code == 200
    return answer["agreement_id"], partner


async def age_verification(staff_db: asyncpg.Connection, client: httpx.AsyncClient) -> None:
    await staff_db.execute(
        "UPDATE staff_sessions SET last_verified_at = now() - interval '1 hour' WHERE id_hash = $1",
        await session_hash(client),
    )


async def status_of(staff_db: asyncpg.Connection, agreement_id: str) -> str:
    status: str = await staff_db.fetchval(
        "SELECT status FROM agreements WHERE id = $1", uuid.UUID(agreement_id)
    )
    return status


async def test_the_secretary_suspends_and_revokes_from_the_page(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    agreement_id, partner = await active_agreement(database_url, browser)
    path = f"/staff/agreements/{agreement_id}"
    secretary_member, secretary = await signed_in_member(database_url, browser, "secretary")
    _, checker = await signed_in_member(database_url, browser, "me")
    _, officer = await signed_in_member(database_url, browser, "officer")
    _, both = await signed_in_member(database_url, browser, "secretary", "me")

    # Each member sees the forms of their roles, and no other.
    page = await secretary.get(path)
    assert page.status_code == 200
    assert actions_on(page) == SECRETARY_FORMS
    assert f'action="/staff/agreements/{agreement_id}/secretary-suspend?lang=en"' in page.text
    assert 'name="reasons"' in page.text
    assert 'name="findings"' not in page.text
    assert "Suspend the agreement (the Secretary's decision)" in page.text
    assert actions_on(await checker.get(path)) == {"spot_check", "suspend", "revoke"}
    assert actions_on(await officer.get(path)) == set()
    assert actions_on(await both.get(path)) == {"spot_check", "suspend", "revoke"} | SECRETARY_FORMS
    urdu = await both.get(f"{path}?lang=ur")
    assert "معاہدہ معطل کریں (سیکرٹری کا فیصلہ)" in urdu.text

    # Other roles posting the Secretary's form: 403 saying why, nothing changed.
    refused = await post_form(officer, f"{path}/secretary-suspend", reasons="no")
    assert refused.status_code == 403
    assert "Your roles do not allow this action" in refused.text
    refused = await post_form(checker, f"{path}/secretary-revoke", reasons="no")
    assert refused.status_code == 403
    assert "only the Secretary revokes an agreement here" in refused.text
    assert await status_of(staff_db, agreement_id) == "active"

    # A stale verification: the passkey is asked for first, and nothing is done meanwhile.
    await age_verification(staff_db, secretary)
    asked = await post_form(secretary, f"{path}/secretary-suspend", reasons="Complaint")
    assert asked.status_code == 303
    assert asked.headers["location"].startswith("/staff/step-up")
    assert await status_of(staff_db, agreement_id) == "active"
    assert (await step_up(secretary, secretary_member.device, path)).status_code == 200

    # Bad forms: the reasons are required; a field the form does not have is refused.
    empty = await post_form(secretary, f"{path}/secretary-suspend", reasons="  ")
    assert empty.status_code == 422
    assert "Please check the form" in empty.text
    odd = await post_form(secretary, f"{path}/secretary-suspend", reasons="x", findings="y")
    assert odd.status_code == 422
    assert await status_of(staff_db, agreement_id) == "active"

    done = await post_form(secretary, f"{path}/secretary-suspend", reasons="Complaint under review")
    assert done.status_code == 303
    assert done.headers["location"] == f"{path}?done=secretary_suspend&lang=en"
    page = await secretary.get(done.headers["location"])
    assert "The agreement was suspended" in page.text
    assert 'data-state="suspended"' in page.text
    assert "Complaint under review" in page.text  # the reason beside the state
    assert actions_on(page) == {"resume", "secretary_revoke"}
    assert (await browser().get(PARTNER_CALL, headers=partner)).status_code == 403
    assert await staff_db.fetchval(
        "SELECT status FROM data_requests WHERE agreement_id = $1", uuid.UUID(agreement_id)
    ) == ("suspended")

    # A wrong state: 409 naming it.
    again = await post_form(secretary, f"{path}/secretary-suspend", reasons="again")
    assert again.status_code == 409
    assert "not possible while the agreement is Suspended" in again.text

    revoked = await post_form(secretary, f"{path}/secretary-revoke", reasons="Breach confirmed")
    assert revoked.status_code == 303
    page = await secretary.get(revoked.headers["location"])
    assert "The agreement was revoked. This is final." in page.text
    assert 'data-state="revoked"' in page.text
    assert actions_on(page) == set()
    assert (await browser().get(PARTNER_CALL, headers=partner)).status_code == 403

    endpoints = [
        r["endpoint"]
        for r in await staff_db.fetch(
            "SELECT endpoint FROM audit_log WHERE client_id = $1 AND filters->>'agreement' = $2"
            " ORDER BY id",
            secretary_member.staff_id,
            agreement_id,
        )
    ]
    assert endpoints == [
        "POST /v1/staff/agreements/{id}/suspend",
        "POST /v1/staff/agreements/{id}/revoke",
    ]
