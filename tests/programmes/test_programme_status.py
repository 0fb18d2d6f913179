"""Closing and reopening a programme over HTTP: partners keep reading it, with its status,
but its eligibility and its plain list are refused (409) while it is closed; a list as of
an instant before the close still answers.

A module database of its own (150 households).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import orjson
import pytest
from conftest import fresh_database, make_settings, open_client, run_cli
from partner_helpers import bearer, create_partner, get_token

from app.services.programmes.demo import ensure_demo_programmes

BASE = "/v1/partner/programmes/cash-transfer"
STAFF = "/v1/staff/programmes/cash-transfer"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=150, seed=13) as u:
        yield u


@pytest.fixture(scope="module")
async def db(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    await ensure_demo_programmes(conn)
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
async def c(url: str, db: asyncpg.Connection) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        url, token_limits="10000/minute", partner_default_limits="100000/minute"
    )
    async for client in open_client(settings):
        yield client


@pytest.fixture(scope="module")
async def partner(c: httpx.AsyncClient, url: str) -> dict[str, str]:
    made = create_partner(url, categories="iii,iv,v", programmes="cash-transfer")
    return bearer(await get_token(c, made["client_id"], made["client_secret"]))


async def _staff(c: httpx.AsyncClient, url: str, role: str) -> dict[str, str]:
    args = ["staff", "create", "--name", f"Status {role}", "--role", role, "--json"]
    made = json.loads(run_cli(args, url).stdout)
    return bearer(await get_token(c, made["client_id"], made["client_secret"]))


async def test_close_refuses_eligibility_and_the_list_but_not_the_past(
    c: httpx.AsyncClient, url: str, db: asyncpg.Connection, partner: dict[str, str]
) -> None:
    officer = await _staff(c, url, "officer")
    committee = await _staff(c, url, "committee")
    cnic = await db.fetchval(
        "SELECT cnic FROM members WHERE cnic IS NOT NULL AND deceased_on IS NULL LIMIT 1"
    )
    eligibility = f"{BASE}/eligibility/{cnic}"
    assert (await c.get(eligibility, headers=partner)).status_code == 200
    # One household a page, so that there is a cursor to try once the programme is closed.
    first = await c.get(f"{BASE}/beneficiaries", params={"limit": 1}, headers=partner)
    assert first.status_code == 200, first.text
    assert first.json()["next_cursor"]
    before = (await db.fetchval("SELECT clock_timestamp()")).isoformat()
    listed_before = await c.get(f"{BASE}/beneficiaries", params={"as_of": before}, headers=partner)
    assert listed_before.status_code == 200, listed_before.text

    # Without programmes:manage, or with a bad body: refused, nothing changes.
    reason = {"reason": "budget year ended"}
    r = await c.post(f"{STAFF}/close", json=reason, headers=committee)
    assert r.status_code == 403
    for body in ({}, {"reason": ""}, {"reason": "x" * 2001}, {**reason, "extra": 1}):
        r = await c.post(f"{STAFF}/close", json=body, headers=officer)
        assert r.status_code == 422, (body, r.text)
    r = await c.post("/v1/staff/programmes/no-such/close", json=reason, headers=officer)
    assert r.status_code == 404
    assert await db.fetchval("SELECT status FROM programmes WHERE code = 'cash-transfer'") == (
        "active"
    )

    r = await c.post(f"{STAFF}/close", json=reason, headers=officer)
    assert r.status_code == 200, r.text
    closed = r.json()
    assert (closed["status"], closed["closed_reason"]) == ("closed", "budget year ended")
    assert closed["closed_at"] is not None
    assert closed["versions"]

    r = await c.post(f"{STAFF}/close", json=reason, headers=officer)
    assert r.status_code == 409
    assert r.headers["content-type"].startswith(PROBLEM)
    assert "is closed" in r.json()["detail"]

    # Partners still read it, with its status (not the staff's reason).
    items = (await c.get("/v1/partner/programmes", headers=partner)).json()["items"]
    assert [(p["code"], p["status"]) for p in items] == [("cash-transfer", "closed")]
    one = (await c.get(BASE, headers=partner)).json()
    assert (one["status"], one["closed_at"]) == ("closed", closed["closed_at"])
    assert "closed_reason" not in one

    # Eligibility and the plain list (every Accept): 409, naming the state and since when.
    for path, accept in (
        (eligibility, "application/json"),
        (f"{BASE}/beneficiaries", "application/json"),
        (f"{BASE}/beneficiaries", "application/x-ndjson"),
        (f"{BASE}/beneficiaries", "text/csv"),
    ):
        r = await c.get(path, headers={**partner, "Accept": accept})
        assert r.status_code == 409, (path, accept, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.json()["detail"].startswith("programme cash-transfer is closed (since ")
    # A cursor of today's list cannot continue it either.
    params = {"cursor": first.json()["next_cursor"]}
    r = await c.get(f"{BASE}/beneficiaries", params=params, headers=partner)
    assert r.status_code == 409, r.text

    # As of an instant before the close: the same list as then. At or after it: refused.
    again = await c.get(f"{BASE}/beneficiaries", params={"as_of": before}, headers=partner)
    assert again.status_code == 200, again.text
    assert again.json() == listed_before.json()
    after = (await db.fetchval("SELECT clock_timestamp()")).isoformat()
    r = await c.get(f"{BASE}/beneficiaries", params={"as_of": after}, headers=partner)
    assert r.status_code == 409, r.text

    # Reopened: answers again; reopening an active programme is a 409.
    r = await c.post(f"{STAFF}/reopen", json={"reason": "budget renewed"}, headers=committee)
    assert r.status_code == 403
    r = await c.post(f"{STAFF}/reopen", json={"reason": "budget renewed"}, headers=officer)
    assert r.status_code == 200, r.text
    reopened = r.json()
    assert (reopened["status"], reopened["closed_at"], reopened["closed_reason"]) == (
        "active",
        None,
        None,
    )
    assert (await c.get(eligibility, headers=partner)).status_code == 200
    assert (await c.get(f"{BASE}/beneficiaries", headers=partner)).status_code == 200
    r = await c.get(f"{BASE}/beneficiaries", params={"as_of": after}, headers=partner)
    assert r.status_code == 200, r.text
    r = await c.post(f"{STAFF}/reopen", json={"reason": "again"}, headers=officer)
    assert r.status_code == 409
    assert "is active" in r.json()["detail"]

    # Both changes are audited, with the reason; the refused ones are not.
    rows = await db.fetch(
        """SELECT endpoint, filters, households FROM audit_log
            WHERE endpoint LIKE 'POST /v1/staff/programmes/{programme_id}/%' ORDER BY id"""
    )
    assert [r["endpoint"].rsplit("/", 1)[1] for r in rows] == ["close", "reopen"]
    filters = [orjson.loads(r["filters"]) for r in rows]
    assert [(f["status"], f["reason"]) for f in filters] == [
        ("closed", "budget year ended"),
        ("active", "budget renewed"),
    ]
    assert all(f["code"] == "cash-transfer" for f in filters)
    assert {r["households"] for r in rows} == {0}


async def test_closing_is_refused_for_a_partner_token(
    c: httpx.AsyncClient, partner: dict[str, str]
) -> None:
    r = await c.post(f"{STAFF}/close", json={"reason": "x"}, headers=partner)
    assert r.status_code == 403
