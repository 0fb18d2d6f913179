"""The machine's rules over HTTP: every role denied what it does not own (403), every action
refused in every state that does not allow it (409 naming the state), and the form's guards."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import make_settings, open_client
from request_helpers import ROLES, act, form, staff_by_role

from app.services.requests.machine import OWNERS, TRANSITIONS, Action, Role, State

PAYLOADS: dict[str, dict[str, Any]] = {
    "start_review": {},
    "review": {"category": "iv", "clearance_level": "restricted", "valid_days": 30},
    "record_interview": {"outcome": "passed", "notes": "ok"},
    "recommend": {"recommendation": "approve", "notes": "ok"},
    "approve": {"reasons": "ok"},
    "reject": {"reasons": "no"},
    "sign": {},
    "withdraw": {},
}
# The path to each state from ``submitted``: (role, action, payload override).
PATHS: dict[str, list[tuple[str, str, dict[str, Any] | None]]] = {
    "submitted": [],
    "under_review": [("officer", "start_review", None)],
    "reviewed": [("officer", "start_review", None), ("officer", "review", None)],
}
PATHS["interviewed"] = [*PATHS["reviewed"], ("officer", "record_interview", None)]
PATHS["recommended"] = [*PATHS["interviewed"], ("committee", "recommend", None)]
PATHS["not_recommended"] = [
    *PATHS["interviewed"],
    ("committee", "recommend", {"recommendation": "reject", "notes": "no"}),
]
PATHS["approved"] = [*PATHS["recommended"], ("secretary", "approve", None)]
PATHS["rejected"] = [*PATHS["recommended"], ("secretary", "reject", None)]
PATHS["active"] = [*PATHS["approved"], ("officer", "sign", None)]
PATHS["withdrawn"] = [("officer", "withdraw", None)]


@pytest.fixture(scope="module")
async def rclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url,
        token_limits="10000/minute",
        partner_default_limits="100000/minute",
        request_form_limits="3/minute",
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def staff(rclient: httpx.AsyncClient, seeded_url: str) -> dict[str, dict[str, str]]:
    """One staff member per role: their headers."""
    return await staff_by_role(rclient, seeded_url, "Rules")


@pytest.fixture(scope="module")
async def in_state(
    rclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], seeded_url: str
) -> dict[str, str]:
    """One request in each reachable state: request id by state. Submitted straight into the
    database's service path (the form's per-IP limit here is 3 a minute, for its own test)."""
    from app.schemas.requests import RequestForm
    from app.services.requests import store

    pool = await asyncpg.create_pool(seeded_url, min_size=1, max_size=2)
    out: dict[str, str] = {}
    try:
        # An organization of its own: signing under a name another module signed first
        # would need the officer's choice of organization (tests/requests/test_organizations).
        org = {**form()["organization"], "name": "Workflow Rules Authority"}
        for state, path in PATHS.items():
            made = await store.submit(pool, RequestForm.model_validate(form(organization=org)))
            rid = str(made.request_id)
            for role, action, override in path:
                r = await act(rclient, staff[role], rid, action, override or PAYLOADS[action])
                assert r.status_code == 200, (state, action, r.text)
            out[state] = rid
    finally:
        await pool.close()
    return out


async def test_every_role_is_denied_every_action_it_does_not_own(
    rclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], in_state: dict[str, str]
) -> None:
    checked = 0
    for action, payload in PAYLOADS.items():
        owners = OWNERS[Action(action)]
        for role in ROLES:
            if Role(role) in owners:
                continue
            for rid in (in_state["submitted"], in_state["approved"]):
                r = await act(rclient, staff[role], rid, action, payload)
                assert r.status_code == 403, (role, action, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                checked += 1
    assert checked > 40


async def test_every_action_not_allowed_in_a_state_is_409_naming_the_state(
    rclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], in_state: dict[str, str]
) -> None:
    checked = 0
    for state, rid in in_state.items():
        for action, payload in PAYLOADS.items():
            if State(state) in TRANSITIONS[Action(action)]:
                continue
            owner = sorted(r.value for r in OWNERS[Action(action)] if r.value in ROLES)[0]
            r = await act(rclient, staff[owner], rid, action, payload)
            assert r.status_code == 409, (state, action, r.text)
            body = r.json()
            assert body["state"] == state
            assert state in body["detail"]
            checked += 1
    assert checked > 50
    # Nothing moved: each request is still in its state.
    for state, rid in in_state.items():
        view = await rclient.get(f"/v1/staff/requests/{rid}", headers=staff["officer"])
        assert view.json()["status"] == state


async def test_the_requester_withdraws_by_its_link_until_approval(
    rclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], seeded_url: str
) -> None:
    from app.schemas.requests import RequestForm
    from app.services.requests import store

    pool = await asyncpg.create_pool(seeded_url, min_size=1, max_size=2)
    try:
        early = await store.submit(pool, RequestForm.model_validate(form()))
        late = await store.submit(pool, RequestForm.model_validate(form()))
    finally:
        await pool.close()
    url = f"/v1/requests/{early.reference}/withdraw?token={early.token}"
    assert (await rclient.post(url)).json()["status"] == "withdrawn"
    for role, action, _ in PATHS["approved"]:
        r = await act(rclient, staff[role], str(late.request_id), action, PAYLOADS[action])
        assert r.status_code == 200, r.text
    refused = await rclient.post(f"/v1/requests/{late.reference}/withdraw?token={late.token}")
    assert refused.status_code == 409
    assert refused.json()["state"] == "approved"
    wrong = await rclient.post(f"/v1/requests/{late.reference}/withdraw?token={'a' * 43}")
    assert wrong.status_code == 404


async def test_the_form_is_strict_capped_limited_and_remembers_the_organization(
    rclient: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    org = {**form()["organization"], "name": "  Karachi   Urban  Lab "}
    unknown = await rclient.post("/v1/requests", json={**form(organization=org), "urgent": True})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "urgent"
    big = await rclient.post("/v1/requests", json=form(purpose="x" * 70_000))
    assert big.status_code == 413
    # Counted against the per-IP limit (3/minute here) from the first form the handler sees.
    bad_geo = await rclient.post("/v1/requests", json=form(geography=["PK999999"]))
    assert bad_geo.status_code == 422
    assert bad_geo.json()["errors"][0]["field"] == "geography"
    first = await rclient.post("/v1/requests", json=form(organization=org))
    assert first.status_code == 201, first.text
    again = await rclient.post(
        "/v1/requests", json=form(organization={**org, "name": "karachi urban lab"})
    )
    assert again.status_code == 201, again.text
    previous = await db.fetchval(
        "SELECT previous_requests FROM data_requests WHERE reference = $1",
        again.json()["reference"],
    )
    assert [p["reference"] for p in json.loads(previous)] == [first.json()["reference"]]
    limited = await rclient.post("/v1/requests", json=form(organization=org))
    assert limited.status_code == 429
    assert "Retry-After" in limited.headers


async def test_the_quote_is_frozen_at_approval(
    rclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    seeded_url: str,
    db: asyncpg.Connection,
) -> None:
    from datetime import date

    from updates_helpers import send, updates_partner

    from app.schemas.requests import RequestForm
    from app.services.requests import store

    geo = await db.fetchrow(
        """SELECT district_code, tehsil_code, union_council_code FROM households
            GROUP BY 1, 2, 3 ORDER BY count(*) DESC LIMIT 1"""
    )
    pool = await asyncpg.create_pool(seeded_url, min_size=1, max_size=2)
    try:
        made = await store.submit(
            pool, RequestForm.model_validate(form(geography=[geo["district_code"]]))
        )
    finally:
        await pool.close()
    rid = str(made.request_id)
    review = {**PAYLOADS["review"], "geography": [geo["district_code"]]}
    for role, action, _ in PATHS["approved"]:
        body = review if action == "review" else PAYLOADS[action]
        assert (await act(rclient, staff[role], rid, action, body)).status_code == 200
    url = f"/v1/staff/requests/{rid}/quote"
    approved = (await rclient.get(url, headers=staff["officer"])).json()

    # The registry grows in that district after approval (a partner's new household)...
    partner = await updates_partner(seeded_url, rclient, "Frozen Quote Updater")
    household = {
        "address": "House 1, Street 2",
        "district": geo["district_code"],
        "tehsil": geo["tehsil_code"],
        "union_council": geo["union_council_code"],
        "surveyed_on": date.today().isoformat(),
        "phone": "+923001112223",
        "rooms": 2,
        "toilet_type": "none",
        "members": [
            {
                "name": "Imran",
                "gender": "male",
                "date_of_birth": "1980-01-01",
                "relationship": "head",
                "marital_status": "married",
            }
        ],
    }
    done = await send(
        rclient, partner, [{"ref": "n", "kind": "new_household", "household": household}]
    )
    assert done["counts"]["applied"] == 1, done
    now = await db.fetchval(
        "SELECT count(*) FROM households WHERE district_code = $1", geo["district_code"]
    )
    assert now == approved["B"] + 1
    # ...and what was approved does not move.
    after = (await rclient.get(url, headers=staff["officer"])).json()
    assert after == approved
    assert after["frozen"] is True
