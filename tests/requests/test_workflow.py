"""A data-sharing request from the form to data in hand, through the API alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import make_settings, open_client
from partner_helpers import bearer, get_token
from request_helpers import act, form, staff_by_role


@pytest.fixture(scope="module")
async def wclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url,
        token_limits="10000/minute",
        partner_default_limits="100000/minute",
        request_form_limits="10000/minute",
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def staff(wclient: httpx.AsyncClient, seeded_url: str) -> dict[str, dict[str, str]]:
    """One staff member per role: their headers."""
    return await staff_by_role(wclient, seeded_url, "Staff")


@pytest.fixture(scope="module")
async def district(db: asyncpg.Connection) -> str:
    code: str = await db.fetchval(
        "SELECT district_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    return code


async def test_from_the_form_to_a_beneficiary_list_of_exactly_what_was_approved(
    wclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    district: str,
    db: asyncpg.Connection,
) -> None:
    c = wclient
    sent = await c.post("/v1/requests", json=form())
    assert sent.status_code == 201, sent.text
    made = sent.json()
    assert made["status"] == "submitted"
    assert made["reference"].startswith("DSR-")
    rid = made["request_id"]

    # The requester follows it by the link; a wrong token learns nothing.
    mine = await c.get(made["status_url"])
    assert mine.status_code == 200, mine.text
    assert mine.json()["status"] == "submitted"
    wrong = await c.get(f"/v1/requests/{made['reference']}?token={'x' * 40}")
    assert wrong.status_code == 404

    steps: list[tuple[str, str, dict[str, Any], str]] = [
        ("officer", "start_review", {}, "under_review"),
        (
            "officer",
            "review",
            {
                "category": "v",
                "clearance_level": "restricted",
                "conditions": "No onward sharing",
                "dimensions": ["education"],
                "geography": [district],
                "valid_days": 365,
            },
            "reviewed",
        ),
        ("officer", "record_interview", {"outcome": "passed", "notes": "Met the MIS team"}, ""),
        ("committee", "recommend", {"recommendation": "approve", "notes": "In order"}, ""),
        ("secretary", "approve", {"reasons": "Recommended by the committee"}, "approved"),
    ]
    for role, action, body, expected in steps:
        r = await act(c, staff[role], rid, action, body)
        assert r.status_code == 200, (action, r.text)
        if expected:
            assert r.json()["status"] == expected

    households = await db.fetchval(
        "SELECT count(*) FROM households WHERE district_code = $1", district
    )
    quote = (await c.get(f"/v1/staff/requests/{rid}/quote", headers=staff["officer"])).json()
    assert quote["basis"] == "formula"
    assert quote["B"] == households
    assert quote["D"] == 1  # education is priced; nothing else was granted
    # C = A·B at 3 a household; F = B·D·E with E = 15% of A, in whole rupees (half up).
    f = (households * 1 * Decimal("0.45")).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    assert Decimal(quote["G"]) == 3 * households + f
    assert quote["frozen"] is True

    signed = await act(c, staff["officer"], rid, "sign", {})
    assert signed.status_code == 200, signed.text
    creds = signed.json()
    assert creds["status"] == "active"
    token = await get_token(c, creds["client_id"], creds["client_secret"])

    got = await c.get(
        "/v1/partner/beneficiaries",
        params={"limit": 1000, "dimensions": "education"},
        headers=bearer(token),
    )
    assert got.status_code == 200, got.text
    items = got.json()["items"]
    assert items
    assert {item["district"] for item in items} == {district}
    other = await c.get(
        "/v1/partner/beneficiaries", params={"dimensions": "room_count"}, headers=bearer(token)
    )
    assert other.status_code == 403  # asked for, not granted

    view = (await c.get(f"/v1/staff/requests/{rid}", headers=staff["me"])).json()
    actions = [(e["action"], e["roles"]) for e in view["timeline"]]
    assert actions[0] == ("submit", [])
    assert ("approve", ["secretary"]) in actions
    assert all(e["actor"] for e in view["timeline"][1:])
    assert view["agreement_id"] == creds["agreement_id"]

    # The requester sees dates and statuses only.
    public = (await c.get(made["status_url"])).json()
    assert public["status"] == "active"
    assert set(public["timeline"][0]) == {"status", "at"}

    # A failed spot check that suspends cuts the partner's next call; resume restores it.
    check = await c.post(
        f"/v1/staff/agreements/{creds['agreement_id']}/spot-checks",
        json={"outcome": "failed", "findings": "Data found on a laptop", "action": "suspend"},
        headers=staff["me"],
    )
    assert check.status_code == 201, check.text
    assert check.json()["agreement_status"] == "suspended"
    cut = await c.get("/v1/partner/beneficiaries", headers=bearer(token))
    assert cut.status_code == 403
    back = await c.post(
        f"/v1/staff/agreements/{creds['agreement_id']}/resume",
        json={"reasons": "Laptop wiped, training done"},
        headers=staff["secretary"],
    )
    assert back.status_code == 200, back.text
    assert (await c.get("/v1/partner/beneficiaries", headers=bearer(token))).status_code == 200
    audited = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE endpoint LIKE 'POST /v1/staff/%'"
        " AND filters->>'request' = $1",
        made["reference"],
    )
    assert audited == 6  # every action of the workflow


async def test_a_gratis_request_is_priced_zero_and_owes_its_findings(
    wclient: httpx.AsyncClient, staff: dict[str, dict[str, str]]
) -> None:
    c = wclient
    body = form(
        organization={**form()["organization"], "name": "Lahore School of Economics"},
        categories=["vi"],
        dimensions=[],
        gratis_criterion="a",
        gratis_justification="Doctoral research; findings shared with full rights",
    )
    rid = (await c.post("/v1/requests", json=body)).json()["request_id"]
    review = {"category": "vi", "clearance_level": "restricted", "valid_days": 30}
    for role, action, payload in (
        ("officer", "start_review", {}),
        ("officer", "review", review),
        ("officer", "record_interview", {"outcome": "passed", "notes": "ok"}),
        ("committee", "recommend", {"recommendation": "approve", "gratis": True, "notes": "a"}),
        ("secretary", "approve", {"reasons": "Research under criterion a"}),
    ):
        r = await act(c, staff[role], rid, action, payload)
        assert r.status_code == 200, (action, r.text)
    approved = r.json()
    assert approved["quote"]["basis"] == "gratis"
    assert approved["quote"]["G"] == "0"
    assert "criterion (a)" in approved["quote"]["reason"]
    owed = (await c.get("/v1/staff/obligations?status=open", headers=staff["officer"])).json()
    mine = [o for o in owed["items"] if o["obligation_id"] == approved["obligation_id"]]
    assert mine
    assert mine[0]["kind"] == "findings"
    met = await c.post(
        f"/v1/staff/obligations/{approved['obligation_id']}/met",
        json={"deliverable": "Dissertation chapter 3, shared 2027-02-01"},
        headers=staff["officer"],
    )
    assert met.status_code == 200, met.text
    assert met.json()["status"] == "met"
