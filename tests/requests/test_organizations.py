"""A known organization's record stays the registry's (issue 16, item 9).

A form names its organization and how to reach it. When that name and type match an
organization the registry already has, the officer must choose explicitly (at review or at
signature) between that organization and a new one; signing without the choice is refused.
Whatever is chosen, a form's contact details never overwrite an existing organization's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import make_settings, open_client
from request_helpers import act, form, staff_by_role

NAME = "Sindh Livelihoods Fund"
FIRST_CONTACT = {
    "contact_name": "Nadia Soomro",
    "email": "nadia@slf.example.pk",
    "phone": "+92 21 5550101",
    "address": "12 Shahrah-e-Faisal, Karachi",
}
OTHER_CONTACT = {
    "contact_name": "Someone Else",
    "email": "grants@slf-payments.example.com",
    "phone": "+92 300 0000000",
    "address": "PO Box 1, Dubai",
}
REVIEW = {"category": "iv", "clearance_level": "restricted", "valid_days": 30}
TO_APPROVAL = [
    ("officer", "start_review", {}),
    ("officer", "review", REVIEW),
    ("officer", "record_interview", {"outcome": "passed", "notes": "ok"}),
    ("committee", "recommend", {"recommendation": "approve", "notes": "ok"}),
    ("secretary", "approve", {"reasons": "ok"}),
]


@pytest.fixture(scope="module")
async def oclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url,
        token_limits="10000/minute",
        partner_default_limits="100000/minute",
        request_form_limits="10000/minute",
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def staff(oclient: httpx.AsyncClient, seeded_url: str) -> dict[str, dict[str, str]]:
    return await staff_by_role(oclient, seeded_url, "Organizations")


def _form(name: str, org_type: str, contact: dict[str, str]) -> dict[str, Any]:
    return form(organization={"name": name, "type": org_type, **contact}, categories=["iv"])


async def _approved(
    c: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    body: dict[str, Any],
    review: dict[str, Any] | None = None,
) -> str:
    sent = await c.post("/v1/requests", json=body)
    assert sent.status_code == 201, sent.text
    rid: str = sent.json()["request_id"]
    for role, action, payload in TO_APPROVAL:
        if action == "review" and review is not None:
            payload = {**payload, **review}
        r = await act(c, staff[role], rid, action, payload)
        assert r.status_code == 200, (action, r.text)
    return rid


async def _organization(db: asyncpg.Connection, organization_id: str) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT name, type, contact FROM organizations WHERE id = $1",
        uuid.UUID(organization_id),
    )
    assert row is not None
    return {"name": row["name"], "type": row["type"], "contact": json.loads(row["contact"])}


async def _sign_event(db: asyncpg.Connection, rid: str) -> dict[str, Any]:
    payload = await db.fetchval(
        "SELECT payload FROM request_events WHERE request_id = $1 AND action = 'sign'",
        uuid.UUID(rid),
    )
    assert payload is not None
    found: dict[str, Any] = json.loads(payload)
    return found


async def _audited(db: asyncpg.Connection, rid: str, action: str) -> dict[str, Any]:
    reference = await db.fetchval(
        "SELECT reference FROM data_requests WHERE id = $1", uuid.UUID(rid)
    )
    filters = await db.fetchval(
        "SELECT filters FROM audit_log WHERE endpoint = $1 AND filters->>'request' = $2",
        f"POST /v1/staff/requests/{{id}}/actions/{action}",
        reference,
    )
    assert filters is not None
    found: dict[str, Any] = json.loads(filters)
    return found


async def test_a_known_organization_is_used_only_by_the_officers_choice_and_keeps_its_contact(
    oclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection
) -> None:
    c = oclient
    # The first request of an organization the registry does not know: signed as before,
    # with no choice to make; the new organization takes the form's contact details.
    first = await _approved(c, staff, _form(NAME, "local_ngo", FIRST_CONTACT))
    signed = await act(c, staff["officer"], first, "sign", {})
    assert signed.status_code == 200, signed.text
    known = signed.json()["organization_id"]
    assert (await _organization(db, known))["contact"] == FIRST_CONTACT

    # A second form under the same name (case and spaces aside), with other contact details.
    second = await _approved(
        c, staff, _form("  sindh  LIVELIHOODS fund ", "local_ngo", OTHER_CONTACT)
    )

    # Without the officer's choice it cannot be signed, and nothing changes.
    agreements = await db.fetchval("SELECT count(*) FROM agreements")
    refused = await act(c, staff["officer"], second, "sign", {})
    assert (await _organization(db, known))["contact"] == FIRST_CONTACT, refused.text
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert "organization_id" in problem["detail"]
    assert problem["state"] == "approved"
    assert problem["matching_organizations"] == [known]
    assert await db.fetchval("SELECT count(*) FROM agreements") == agreements
    still = (await c.get(f"/v1/staff/requests/{second}", headers=staff["officer"])).json()
    assert still["status"] == "approved"

    # The officer names the existing organization: the agreement is under it, and the
    # registry's contact details are untouched by the form's.
    chosen = await act(c, staff["officer"], second, "sign", {"organization_id": known})
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["organization_id"] == known
    assert await _organization(db, known) == {
        "name": NAME,
        "type": "local_ngo",
        "contact": FIRST_CONTACT,
    }
    # The choice is on the request's timeline and in the audit log.
    assert (await _sign_event(db, second))["organization"] == {
        "choice": "existing",
        "organization_id": known,
        "matched": [known],
    }
    audited = await _audited(db, second, "sign")
    assert audited["organization"] == "existing"
    assert audited["organization_id"] == known
    assert (await _sign_event(db, first))["organization"] == {
        "choice": "new",
        "organization_id": known,
        "matched": [],
    }
    # The officer sees the candidates in the request's staff view.
    view = (await c.get(f"/v1/staff/requests/{second}", headers=staff["officer"])).json()
    assert [o["organization_id"] for o in view["matching_organizations"]] == [known]
    assert view["organization_id"] == known  # linked at signature


async def test_the_choice_can_be_made_at_review_and_new_keeps_the_known_one_apart(
    oclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection
) -> None:
    c = oclient
    name = "Thar Water Trust"
    first = await _approved(c, staff, _form(name, "donor", FIRST_CONTACT))
    known = (await act(c, staff["officer"], first, "sign", {})).json()["organization_id"]

    # At review the officer says this is another organization of the same name.
    rid = await _approved(
        c, staff, _form(name, "donor", OTHER_CONTACT), review={"organization_id": "new"}
    )
    review_event = await db.fetchval(
        "SELECT payload FROM request_events WHERE request_id = $1 AND action = 'review'",
        uuid.UUID(rid),
    )
    assert json.loads(review_event)["organization_id"] == "new"
    assert (await _audited(db, rid, "review"))["organization"] == "new"
    signed = await act(c, staff["officer"], rid, "sign", {})
    assert signed.status_code == 200, signed.text
    made = signed.json()["organization_id"]
    assert made != known
    assert (await _organization(db, made))["contact"] == OTHER_CONTACT
    assert (await _organization(db, known))["contact"] == FIRST_CONTACT
    assert (await _sign_event(db, rid))["organization"] == {
        "choice": "new",
        "organization_id": made,
        "matched": [known],
    }
    audited = await _audited(db, rid, "sign")
    assert audited["organization"] == "new"
    assert audited["organization_id"] == made

    # Named at review, the existing organization is used at signature without a new choice.
    again = await _approved(
        c, staff, _form(name, "donor", OTHER_CONTACT), review={"organization_id": known}
    )
    signed = await act(c, staff["officer"], again, "sign", {})
    assert signed.status_code == 200, signed.text
    assert signed.json()["organization_id"] == known
    assert (await _organization(db, known))["contact"] == FIRST_CONTACT


async def test_a_choice_must_name_a_known_organization_of_the_forms_type(
    oclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection
) -> None:
    c = oclient
    name = "Gilgit Schools Network"
    first = await _approved(c, staff, _form(name, "academic", FIRST_CONTACT))
    known = (await act(c, staff["officer"], first, "sign", {})).json()["organization_id"]
    other_type = await _approved(c, staff, _form("Another Body", "private", FIRST_CONTACT))
    stranger = (await act(c, staff["officer"], other_type, "sign", {})).json()["organization_id"]

    rid = await _approved(c, staff, _form(name, "academic", OTHER_CONTACT))
    for bad, status in (
        (str(uuid.uuid4()), 422),  # no such organization
        (stranger, 422),  # another type: priced and granted as a different body
        ("maybe", 422),
        ("", 422),
    ):
        r = await act(c, staff["officer"], rid, "sign", {"organization_id": bad})
        assert r.status_code == status, (bad, r.text)
        assert r.json()["errors"][0]["field"] == "organization_id", r.text
    # Review refuses them too.
    sent = await c.post("/v1/requests", json=_form(name, "academic", OTHER_CONTACT))
    fresh = sent.json()["request_id"]
    assert (await act(c, staff["officer"], fresh, "start_review", {})).status_code == 200
    r = await act(c, staff["officer"], fresh, "review", {**REVIEW, "organization_id": stranger})
    assert r.status_code == 422, r.text
    assert (await c.get(f"/v1/staff/requests/{fresh}", headers=staff["officer"])).json()[
        "status"
    ] == "under_review"
    # The refused attempts changed nothing; a valid choice still signs.
    assert (await _organization(db, known))["contact"] == FIRST_CONTACT
    ok = await act(c, staff["officer"], rid, "sign", {"organization_id": known})
    assert ok.status_code == 200, ok.text


async def test_a_new_organization_chosen_at_review_needs_a_fresh_choice_if_one_appeared_since(
    oclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection
) -> None:
    c = oclient
    name = "Makran Coast Cooperative"
    # Chosen "new" at review, when the registry knew no organization of this name...
    early = await _approved(
        c, staff, _form(name, "local_ngo", OTHER_CONTACT), review={"organization_id": "new"}
    )
    # ...which another request of the same name then creates.
    other = await _approved(c, staff, _form(name, "local_ngo", FIRST_CONTACT))
    known = (await act(c, staff["officer"], other, "sign", {})).json()["organization_id"]
    # The review's choice did not see it: the officer chooses again at signature.
    refused = await act(c, staff["officer"], early, "sign", {})
    assert refused.status_code == 409, refused.text
    assert refused.json()["matching_organizations"] == [known]
    signed = await act(c, staff["officer"], early, "sign", {"organization_id": known})
    assert signed.status_code == 200, signed.text
    assert signed.json()["organization_id"] == known
    assert (await _organization(db, known))["contact"] == FIRST_CONTACT
