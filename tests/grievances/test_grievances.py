"""Grievances through the API: filing, following, the staff workflow, the re-survey that
changes the score (history and resolution), and the service level in the M&E report."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import fresh_database, make_settings, open_client
from request_helpers import staff_by_role

URL = "/v1/public/grievances"
STAFF = "/v1/staff/grievances"


@pytest.fixture(scope="module")
def gurl() -> Iterator[str]:
    """A registry of its own: re-surveys change households other modules may count."""
    with fresh_database(households=300, seed=12) as url:
        yield url


@pytest.fixture(scope="module")
async def gclient(gurl: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(gurl, token_limits="10000/minute", grievance_limits="1000/minute")
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def db(gurl: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(gurl)
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
async def staff(gclient: httpx.AsyncClient, gurl: str) -> dict[str, dict[str, str]]:
    return await staff_by_role(gclient, gurl, "Grievance staff")


@pytest.fixture(scope="module")
async def member(db: asyncpg.Connection) -> asyncpg.Record:
    """A living member with a CNIC whose household has a score, and that household."""
    row = await db.fetchrow(
        """SELECT m.cnic, h.id AS household_id, h.pmt_score, h.rooms, h.land_acre, h.cows
             FROM members m JOIN households h ON h.id = m.household_id
            WHERE m.cnic IS NOT NULL AND m.deceased_on IS NULL AND h.pmt_score IS NOT NULL
            ORDER BY h.pmt_score, m.id LIMIT 1"""
    )
    assert row is not None
    return row


async def _file(c: httpx.AsyncClient, cnic: str, reason: str = "wrong_assets") -> dict[str, Any]:
    r = await c.post(
        URL,
        json={
            "cnic": cnic,
            "reason": reason,
            "details": "We sold the land last year",
            "contact_phone": "+92 300 1234567",
        },
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"reference", "status_url"}
    assert r.headers["location"] == body["status_url"]
    return body


async def _act(
    c: httpx.AsyncClient, who: dict[str, str], ref: str, action: str, body: dict[str, Any]
) -> httpx.Response:
    return await c.post(f"{STAFF}/{ref}/actions/{action}", json=body, headers=who)


async def _wait_resurvey(
    c: httpx.AsyncClient, who: dict[str, str], ref: str, timeout: float = 60
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await c.get(f"{STAFF}/{ref}", headers=who)
        assert r.status_code == 200, r.text
        view: dict[str, Any] = r.json()
        if view["resurvey"] and view["resurvey"]["status"] == "done":
            return view
        assert asyncio.get_running_loop().time() < deadline, view["resurvey"]
        await asyncio.sleep(0.1)


async def test_a_resurvey_changes_the_score_in_the_history_and_in_the_resolution(
    gclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    member: asyncpg.Record,
    db: asyncpg.Connection,
) -> None:
    c, officer = gclient, staff["officer"]
    filed = await _file(c, member["cnic"])
    ref = filed["reference"]
    assert ref.startswith("GRV-")

    mine = (await c.get(filed["status_url"])).json()
    assert mine["status"] == "received"
    assert mine["cnic"] == f"{member['cnic'][:5]}-*******-{member['cnic'][12]}"
    assert [step["status"] for step in mine["timeline"]] == ["received"]
    assert mine["resolution"] is None

    view = (await c.get(f"{STAFF}/{ref}", headers=officer)).json()
    assert view["cnic"] == member["cnic"]
    assert view["household"]["household_id"] == member["household_id"]
    assert view["allowed_actions"] == ["triage", "reject"]

    assert (await _act(c, officer, ref, "triage", {"notes": "assets disputed"})).status_code == 200
    again = await _act(c, officer, ref, "triage", {})
    assert again.status_code == 409
    assert again.json()["state"] == "triaged"
    ordered = await _act(c, officer, ref, "order_resurvey", {})
    assert ordered.json()["status"] == "resurvey_ordered"
    # Nothing measured yet: nothing to resolve on.
    early = await _act(c, officer, ref, "resolve", {"reasons": "done"})
    assert early.status_code == 409
    assert "none was recorded" in early.json()["detail"]

    # The field team found a far better-off household than the registry says.
    indicators = {
        "rooms": 12 if member["rooms"] != 12 else 11,
        "land_acre": float(member["land_acre"]) + 60,
        "cows": 30,
        "buffaloes": 20,
        "electrical": ["refrigerator", "air_conditioner", "freezer"],
    }
    sent = await c.post(f"{STAFF}/{ref}/resurvey", json={"indicators": indicators}, headers=officer)
    assert sent.status_code == 202, sent.text
    batch_id = sent.json()["batch_id"]
    view = await _wait_resurvey(c, officer, ref)
    assert view["resurvey"]["outcome"] == "applied", view["resurvey"]

    # The change is in the household's history, from registry staff, under the reference.
    history = (
        await c.get(f"/v1/households/{member['household_id']}/history", headers=officer)
    ).json()
    last = history["items"][-1]
    assert (last["change"], last["source"], last["ref"]) == ("household_survey", "staff", ref)
    assert last["batch_id"] == batch_id
    assert last["after"]["rooms"] == indicators["rooms"]
    assert last["before"]["pmt_score"] == pytest.approx(float(member["pmt_score"]))
    new_score = await db.fetchval(
        "SELECT pmt_score FROM households WHERE id = $1", member["household_id"]
    )
    assert last["after"]["pmt_score"] == pytest.approx(float(new_score))
    assert new_score != member["pmt_score"]

    resolved = await _act(c, officer, ref, "resolve", {"reasons": "Re-surveyed on site"})
    assert resolved.status_code == 200, resolved.text
    resolution = resolved.json()["resolution"]
    assert resolution["outcome"] == "score_changed"
    assert resolution["score_before"] == pytest.approx(float(member["pmt_score"]))
    assert resolution["score_after"] == pytest.approx(float(new_score))
    assert [(h["source"], h["ref"], h["batch_id"]) for h in resolution["history"]] == [
        ("staff", ref, batch_id)
    ]
    assert resolution["resurvey"]["batch_id"] == batch_id
    assert (await _act(c, officer, ref, "reject", {"reasons": "x"})).json()["state"] == "resolved"

    # The filer sees the outcome and the steps, never the score or who acted.
    mine = (await c.get(filed["status_url"])).json()
    assert mine["status"] == "resolved"
    assert [step["status"] for step in mine["timeline"]] == [
        "received",
        "triaged",
        "resurvey_ordered",
        "resolved",
    ]
    assert mine["resolution"]["outcome"] == "score_changed"
    assert mine["resolution"]["reasons"] == "Re-surveyed on site"
    assert "score" not in str(sorted(mine["resolution"]))
    assert "officer" not in str(mine)
    assert "Grievance staff" not in str(mine)

    # Every staff step is in the audit log.
    endpoints = await db.fetch(
        "SELECT endpoint FROM audit_log WHERE filters->>'grievance' = $1 ORDER BY id", ref
    )
    assert [e["endpoint"] for e in endpoints] == [
        "POST /v1/public/grievances",
        "GET /v1/staff/grievances/{grievance_id}",
        f"POST {STAFF}/{{grievance_id}}/actions/triage",
        f"POST {STAFF}/{{grievance_id}}/actions/order_resurvey",
        f"POST {STAFF}/{{grievance_id}}/resurvey",
        *["GET /v1/staff/grievances/{grievance_id}"] * (len(endpoints) - 6),
        f"POST {STAFF}/{{grievance_id}}/actions/resolve",
    ]


async def test_a_resurvey_that_changes_nothing_resolves_unchanged(
    gclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection
) -> None:
    c, officer = gclient, staff["officer"]
    row = await db.fetchrow(
        """SELECT m.cnic, h.rooms FROM members m JOIN households h ON h.id = m.household_id
            WHERE m.cnic IS NOT NULL AND m.deceased_on IS NULL AND h.rooms IS NOT NULL
            ORDER BY h.id DESC LIMIT 1"""
    )
    ref = (await _file(c, row["cnic"], "resurvey"))["reference"]
    for action in ("triage", "order_resurvey"):
        assert (await _act(c, officer, ref, action, {})).status_code == 200
    sent = await c.post(
        f"{STAFF}/{ref}/resurvey", json={"indicators": {"rooms": row["rooms"]}}, headers=officer
    )
    assert sent.status_code == 202, sent.text
    assert (await _wait_resurvey(c, officer, ref))["resurvey"]["outcome"] == "unchanged"
    resolved = (await _act(c, officer, ref, "resolve", {"reasons": "As registered"})).json()
    assert resolved["resolution"]["outcome"] == "score_unchanged"
    assert resolved["resolution"]["history"] == []


async def test_filing_refuses_what_is_not_a_grievance_and_stores_nothing(
    gclient: httpx.AsyncClient, member: asyncpg.Record, db: asyncpg.Connection
) -> None:
    before = await db.fetchval("SELECT count(*) FROM grievances")
    good = {"cnic": member["cnic"], "reason": "wrong_members", "details": "", "contact_phone": None}
    for bad, field in [
        ({"cnic": "35202-123456-3"}, "cnic"),
        ({"cnic": "352021234567X"}, "cnic"),
        ({"cnic": "٣٥٢٠٢١٢٣٤٥٦٧٣"}, "cnic"),
        ({"reason": "too_poor"}, "reason"),
        ({"reason": "other"}, "details"),
        ({"contact_phone": "call me"}, "contact_phone"),
        # Longer than the column (found by schemathesis as a 500 once).
        ({"contact_phone": "+2-7750-6-28--007 6-1"}, "contact_phone"),
        ({"name": "Ayesha"}, "name"),
    ]:
        r = await gclient.post(URL, json={**good, **bad})
        assert r.status_code == 422, (bad, r.text)
        assert field in r.text, (bad, r.text)
    assert (await gclient.post(URL, content=b"[]")).status_code == 422
    assert (await gclient.post(URL, content=b"{")).status_code == 422
    assert (await gclient.post(URL, json=good, params={"x": "1"})).status_code == 422
    assert (await gclient.post(URL, content=b"{" + b" " * 20000 + b"}")).status_code == 413
    assert await db.fetchval("SELECT count(*) FROM grievances") == before


async def test_a_cnic_not_in_the_registry_is_answered_alike_and_can_only_be_rejected(
    gclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection
) -> None:
    c, officer = gclient, staff["officer"]
    cnic = "9" * 13
    assert await db.fetchval("SELECT count(*) FROM members WHERE cnic = $1", cnic) == 0
    filed = await _file(c, cnic, "deceased_listed")
    ref = filed["reference"]
    assert (await c.get(filed["status_url"])).json()["status"] == "received"
    view = (await c.get(f"{STAFF}/{ref}", headers=officer)).json()
    assert view["household"] is None
    assert (await _act(c, officer, ref, "triage", {})).status_code == 200
    nothing = await _act(c, officer, ref, "order_resurvey", {})
    assert nothing.status_code == 409
    assert "matched no household" in nothing.json()["detail"]
    assert (await _act(c, officer, ref, "resolve", {"reasons": "x"})).status_code == 409
    rejected = await _act(c, officer, ref, "reject", {"reasons": "Not in the registry"})
    assert rejected.json()["status"] == "rejected"
    mine = (await c.get(filed["status_url"])).json()
    assert mine["resolution"]["outcome"] == "rejected"
    assert mine["resolution"]["reasons"] == "Not in the registry"


async def test_the_status_link_is_the_only_key(
    gclient: httpx.AsyncClient, member: asyncpg.Record
) -> None:
    filed = await _file(gclient, member["cnic"])
    ref = filed["reference"]
    wrong = await gclient.get(f"{URL}/{ref}", params={"token": "x" * 43})
    assert wrong.status_code == 404
    unknown = await gclient.get(
        f"{URL}/GRV-2026-999999", params={"token": filed["status_url"].split("token=")[1]}
    )
    assert unknown.status_code == 404
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert (await gclient.get(f"{URL}/{ref}")).status_code == 422  # no token at all


async def test_filing_is_limited_per_client_ip(gurl: str, member: asyncpg.Record) -> None:
    settings = make_settings(gurl, grievance_limits="2/minute", in_process_workers=0)
    async for c in open_client(settings):
        body = {"cnic": member["cnic"], "reason": "other", "details": "please check"}
        assert (await c.post(URL, json=body)).status_code == 201
        # A malformed filing counts too, as a malformed look-up does.
        assert (await c.post(URL, json={**body, "cnic": "1"})).status_code == 422
        limited = await c.post(URL, json=body)
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["content-type"].startswith("application/problem+json")


async def test_roles_and_states(
    gclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], member: asyncpg.Record
) -> None:
    c = gclient
    ref = (await _file(c, member["cnic"]))["reference"]
    # M&E reads but does not act; the committee, the Secretary and admins do neither.
    assert (await c.get(f"{STAFF}/{ref}", headers=staff["me"])).status_code == 200
    assert (await _act(c, staff["me"], ref, "triage", {})).status_code == 403
    for role in ("committee", "secretary", "admin"):
        assert (await c.get(f"{STAFF}/{ref}", headers=staff[role])).status_code == 403
        assert (await c.get(STAFF, headers=staff[role])).status_code == 403
    # Nor re-surveys. (A client with the grievance scopes but not the officer's role cannot
    # be made any more: a staff client's scopes are its roles', tests/requests/
    # test_staff_access.py; the machine's own refusal is tested in test_grievance_machine.)
    survey = {"indicators": {"rooms": 2}}
    me_survey = await c.post(f"{STAFF}/{ref}/resurvey", json=survey, headers=staff["me"])
    assert me_survey.status_code == 403

    officer = staff["officer"]
    wrong = await c.post(f"{STAFF}/{ref}/resurvey", json=survey, headers=officer)
    assert wrong.status_code == 409
    assert wrong.json()["state"] == "received"
    assert (await _act(c, officer, ref, "record_resurvey", {})).status_code == 422
    assert (await _act(c, officer, ref, "resolve", {})).status_code == 422  # reasons needed
    early = await _act(c, officer, ref, "resolve", {"reasons": "fine"})
    assert early.status_code == 409
    assert early.json()["state"] == "received"
    assert (await _act(c, officer, ref, "triage", {"note": "typo"})).status_code == 422
    assert (await _act(c, officer, ref, "triage", {})).status_code == 200
    assert (await _act(c, officer, ref, "reject", {})).status_code == 422  # reasons needed
    assert (await _act(c, officer, ref, "order_resurvey", {})).status_code == 200
    bad = {"indicators": {"rooms": 2, "pool": True}}
    assert (await c.post(f"{STAFF}/{ref}/resurvey", json=bad, headers=officer)).status_code == 422
    missing = await c.get(f"{STAFF}/GRV-2026-999999", headers=officer)
    assert missing.status_code == 404
    listed = (await c.get(STAFF, params={"status": "resurvey_ordered"}, headers=officer)).json()
    assert ref in [item["reference"] for item in listed["items"]]
    assert all(item["status"] == "resurvey_ordered" for item in listed["items"])
    assert "cnic" not in listed["items"][0]


async def test_overdue_cases_show_in_the_list_and_the_report(
    gclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    member: asyncpg.Record,
    db: asyncpg.Connection,
) -> None:
    c, officer = gclient, staff["officer"]
    untriaged = (await _file(c, member["cnic"], "wrong_members"))["reference"]
    unresolved = (await _file(c, member["cnic"], "wrong_members"))["reference"]
    on_time = (await _file(c, member["cnic"], "wrong_members"))["reference"]
    assert (await _act(c, officer, unresolved, "triage", {})).status_code == 200
    # Time passes: filed 10 and 40 days ago (targets: 7 days to triage, 30 to resolve).
    await db.execute(
        "UPDATE grievances SET created_at = now() - interval '10 days' WHERE reference = $1",
        untriaged,
    )
    await db.execute(
        "UPDATE grievances SET created_at = now() - interval '40 days' WHERE reference = $1",
        unresolved,
    )

    listed = (await c.get(STAFF, params={"overdue": "true"}, headers=officer)).json()["items"]
    breaches = {item["reference"]: item["overdue"] for item in listed}
    assert breaches[untriaged] == "triage"
    assert breaches[unresolved] == "resolve"
    assert on_time not in breaches
    fine = (await c.get(STAFF, params={"overdue": "false"}, headers=officer)).json()["items"]
    assert on_time in [item["reference"] for item in fine]

    r = await c.get("/v1/staff/reports/grievances", headers=staff["me"])
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["report"] == "grievances"
    late = {o["reference"]: o for o in report["overdue"]}
    assert late[untriaged]["breach"] == "triage"
    assert late[untriaged]["days_overdue"] == 3
    assert late[unresolved]["breach"] == "resolve"
    assert late[unresolved]["days_overdue"] == 10
    assert on_time not in late
    rows = {row["reason"]: row for row in report["rows"]}
    assert list(rows) == ["wrong_members", "wrong_assets", "resurvey", "deceased_listed", "other"]
    assert rows["wrong_members"]["triage_overdue"] >= 1
    assert rows["wrong_members"]["resolve_overdue"] >= 1
    assert report["totals"]["filed"] == sum(row["filed"] for row in report["rows"])
    assert (report["totals"]["triage_days"], report["totals"]["resolve_days"]) == (7, 30)

    # Filed in a range that holds only the backdated case; CSV of the overdue table.
    day = await db.fetchval("SELECT ((now() - interval '40 days') AT TIME ZONE 'UTC')::date::text")
    text = await c.get(
        "/v1/staff/reports/grievances",
        params={"from": day, "to": day, "table": "overdue"},
        headers={**staff["me"], "Accept": "text/csv"},
    )
    assert text.status_code == 200, text.text
    lines = list(csv.DictReader(io.StringIO(text.text)))
    assert [(x["reference"], x["breach"]) for x in lines] == [(unresolved, "resolve")]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM audit_log WHERE endpoint = 'GET /v1/staff/reports/{name}'"
            " AND filters->>'report' = 'grievances'"
        )
        >= 2
    )
