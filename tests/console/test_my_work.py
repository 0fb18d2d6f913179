"""GET /v1/staff/my-work: what waits on each staff member, by role, over HTTP.

A registry of its own: the queues count every open case, so no other module's requests or
grievances may be in it. Time passes by moving the recorded instants back (the way the
grievance tests make a case overdue).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import fresh_database, make_settings, open_client, run_cli
from partner_helpers import bearer, create_partner, get_token
from request_helpers import act, form, staff_by_role

URL = "/v1/staff/my-work"
SECTIONS = ("requests", "grievances", "obligations", "spot_checks")


@pytest.fixture(scope="module")
def wurl() -> Iterator[str]:
    with fresh_database(households=120, seed=23) as url:
        yield url


@pytest.fixture(scope="module")
async def wclient(wurl: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        wurl,
        token_limits="10000/minute",
        request_form_limits="10000/minute",
        grievance_limits="1000/minute",
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def db(wurl: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(wurl)
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
async def staff(wclient: httpx.AsyncClient, wurl: str) -> dict[str, dict[str, str]]:
    out = await staff_by_role(wclient, wurl, "Work staff")
    # One person holding two offices: the queues add up.
    args = ["staff", "create", "--name", "Officer and Secretary", "--role", "officer,secretary"]
    made = json.loads(run_cli([*args, "--json"], wurl).stdout)
    out["officer+secretary"] = bearer(
        await get_token(wclient, made["client_id"], made["client_secret"])
    )
    return out


async def _work(c: httpx.AsyncClient, who: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await c.get(URL, headers=who, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body: dict[str, Any] = r.json()
    return body


def _refs(queue: dict[str, Any]) -> list[str]:
    return [item["reference"] for item in queue["items"]]


async def test_before_anything_is_filed_each_role_sees_its_sections_empty(
    wclient: httpx.AsyncClient, staff: dict[str, dict[str, str]]
) -> None:
    empty = {"count": 0, "items": []}
    officer = await _work(wclient, staff["officer"])
    assert officer["roles"] == ["officer"]
    assert officer["limit"] == 50
    assert officer["requests"] == {
        **empty,
        "counts": {"submitted": 0, "under_review": 0, "reviewed": 0, "approved": 0},
    }
    assert officer["grievances"] == {**empty, "counts": {"new": 0, "overdue": 0}}
    assert officer["obligations"] == {**empty, "counts": {"overdue": 0, "due_soon": 0}}
    assert officer["spot_checks"] is None

    committee = await _work(wclient, staff["committee"])
    assert committee["requests"] == {**empty, "counts": {"interviewed": 0}}
    assert [committee[s] for s in SECTIONS[1:]] == [None, None, None]

    me = await _work(wclient, staff["me"])
    assert me["spot_checks"] == {**empty, "counts": {"never_checked": 0}}
    assert [me[s] for s in SECTIONS[:3]] == [None, None, None]

    # The administrator acts on none of them: every section is null.
    admin = await _work(wclient, staff["admin"])
    assert [admin[s] for s in SECTIONS] == [None, None, None, None]


@dataclass
class World:
    refs: dict[str, str] = field(default_factory=dict)  # name -> DSR reference
    ids: dict[str, str] = field(default_factory=dict)  # name -> request id
    agreements: dict[str, str] = field(default_factory=dict)
    grievances: dict[str, str] = field(default_factory=dict)  # name -> GRV reference
    cnic: str = ""
    partner_auth: dict[str, str] = field(default_factory=dict)


REVIEW = {"category": "iv", "clearance_level": "restricted", "valid_days": 365}
UPDATES = {"update_kinds": ["member_death"]}


async def _request(c: httpx.AsyncClient, w: World, name: str) -> str:
    sent = await c.post(
        "/v1/requests", json=form(organization={**form()["organization"], "name": f"Org {name}"})
    )
    assert sent.status_code == 201, sent.text
    w.refs[name] = sent.json()["reference"]
    w.ids[name] = sent.json()["request_id"]
    return w.ids[name]


async def _steps(
    c: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    rid: str,
    steps: list[tuple[str, str, dict[str, Any]]],
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for role, action, payload in steps:
        r = await act(c, staff[role], rid, action, payload)
        assert r.status_code == 200, (action, r.text)
        body = r.json()
    return body


def _path(
    review: dict[str, Any], recommendation: str = "approve"
) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("officer", "start_review", {}),
        ("officer", "review", review),
        ("officer", "record_interview", {"outcome": "passed", "notes": "Met them"}),
        ("committee", "recommend", {"recommendation": recommendation, "notes": "Considered"}),
    ]


async def _file(c: httpx.AsyncClient, cnic: str) -> str:
    r = await c.post(
        "/v1/public/grievances",
        json={
            "cnic": cnic,
            "reason": "wrong_assets",
            "details": "Sold the land",
            "contact_phone": "+92 300 7654321",
        },
    )
    assert r.status_code == 201, r.text
    reference: str = r.json()["reference"]
    return reference


@pytest.fixture(scope="module")
async def world(
    wclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection, wurl: str
) -> World:
    c, w = wclient, World()
    decide = {"reasons": "As recommended"}
    # Requests in every state, one each (or two: closed ones must not count).
    await _request(c, w, "submitted")
    await _steps(c, staff, await _request(c, w, "under_review"), [("officer", "start_review", {})])
    await _steps(
        c,
        staff,
        await _request(c, w, "reviewed"),
        [("officer", "start_review", {}), ("officer", "review", REVIEW)],
    )
    await _steps(c, staff, await _request(c, w, "interviewed"), _path(REVIEW)[:3])
    await _steps(c, staff, await _request(c, w, "recommended"), _path(REVIEW))
    await _steps(c, staff, await _request(c, w, "not_recommended"), _path(REVIEW, "reject"))
    await _steps(
        c,
        staff,
        await _request(c, w, "approved"),
        [*_path(REVIEW), ("secretary", "approve", decide)],
    )
    await _steps(
        c,
        staff,
        await _request(c, w, "rejected"),
        [*_path(REVIEW), ("secretary", "reject", decide)],
    )
    await _steps(c, staff, await _request(c, w, "withdrawn"), [("officer", "withdraw", {})])
    # Two signed, each owing updates: weekly (due within the notice) and monthly (not yet).
    for name, frequency in (("active", "weekly"), ("suspended", "monthly")):
        review = {**REVIEW, **UPDATES, "update_frequency": frequency}
        signed = await _steps(
            c,
            staff,
            await _request(c, w, name),
            [*_path(review), ("secretary", "approve", decide), ("officer", "sign", {})],
        )
        w.agreements[name] = signed["agreement_id"]
        if name == "active":
            w.partner_auth = bearer(
                await get_token(c, signed["client_id"], signed["client_secret"])
            )
    check = await c.post(
        f"/v1/staff/agreements/{w.agreements['suspended']}/spot-checks",
        json={"outcome": "failed", "findings": "Copies on a laptop", "action": "suspend"},
        headers=staff["me"],
    )
    assert check.status_code == 201, check.text
    # Agreements made by the operator: one active, one expired (never due).
    for name in ("operator", "expired"):
        made = create_partner(wurl, name=f"Operator {name}", categories="i")
        w.agreements[name] = made["agreement_id"]
    await db.execute(
        "UPDATE agreements SET status = 'expired' WHERE id = $1::uuid", w.agreements["expired"]
    )

    # Grievances: new, new and late for triage, triaged and late for resolution, triaged in
    # time, and closed long ago.
    w.cnic = await db.fetchval(
        "SELECT cnic FROM members WHERE cnic IS NOT NULL AND deceased_on IS NULL"
        " ORDER BY id LIMIT 1"
    )
    for name in ("new", "late_triage", "late_resolve", "in_time", "closed"):
        w.grievances[name] = await _file(c, w.cnic)
    for name in ("late_resolve", "in_time", "closed"):
        r = await c.post(
            f"/v1/staff/grievances/{w.grievances[name]}/actions/triage",
            json={"notes": "Looked at"},
            headers=staff["officer"],
        )
        assert r.status_code == 200, r.text
    r = await c.post(
        f"/v1/staff/grievances/{w.grievances['closed']}/actions/reject",
        json={"reasons": "Not a grievance"},
        headers=staff["officer"],
    )
    assert r.status_code == 200, r.text
    for name, days in (("late_triage", 10), ("late_resolve", 40), ("closed", 60)):
        await db.execute(
            "UPDATE grievances SET created_at = now() - make_interval(days => $2)"
            " WHERE reference = $1",
            w.grievances[name],
            days,
        )
    return w


async def test_each_role_sees_the_requests_waiting_on_it(
    wclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], world: World
) -> None:
    c, refs = wclient, world.refs
    officer = (await _work(c, staff["officer"]))["requests"]
    assert officer["count"] == 4
    assert officer["counts"] == {"submitted": 1, "under_review": 1, "reviewed": 1, "approved": 1}
    assert sorted(_refs(officer)) == sorted(
        refs[n] for n in ("submitted", "under_review", "reviewed", "approved")
    )
    by_ref = {item["reference"]: item for item in officer["items"]}
    assert by_ref[refs["submitted"]]["actions"] == ["start_review", "withdraw"]
    assert by_ref[refs["approved"]]["actions"] == ["sign"]
    assert by_ref[refs["approved"]]["organization"] == "Org approved"
    # No contact details of the applicant.
    assert set(by_ref[refs["submitted"]]) == {
        "request_id",
        "reference",
        "status",
        "organization",
        "organization_type",
        "submitted_at",
        "waiting_since",
        "waited_days",
        "actions",
    }

    committee = (await _work(c, staff["committee"]))["requests"]
    assert committee["count"] == 1
    assert _refs(committee) == [refs["interviewed"]]
    assert committee["items"][0]["actions"] == ["recommend"]

    secretary = (await _work(c, staff["secretary"]))["requests"]
    assert secretary["counts"] == {"recommended": 1, "not_recommended": 1, "suspended": 1}
    assert sorted(_refs(secretary)) == sorted(
        refs[n] for n in ("recommended", "not_recommended", "suspended")
    )
    by_ref = {item["reference"]: item for item in secretary["items"]}
    assert by_ref[refs["recommended"]]["actions"] == ["approve", "reject"]
    assert by_ref[refs["suspended"]]["actions"] == ["resume", "revoke"]

    # Roles add up: one person who is both officer and Secretary.
    both = (await _work(c, staff["officer+secretary"]))["requests"]
    assert both["count"] == 7
    assert set(_refs(both)) == set(_refs(officer)) | set(_refs(secretary))

    # Nothing active, final or closed is anyone's work.
    for who in staff.values():
        body = await _work(c, who)
        listed = set(_refs(body["requests"])) if body["requests"] else set()
        assert not listed & {refs[n] for n in ("active", "rejected", "withdrawn")}


async def test_waiting_runs_from_entering_the_state_longest_first(
    wclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    world: World,
    db: asyncpg.Connection,
) -> None:
    c, refs = wclient, world.refs
    # Since it entered its state: the instant of the timeline's last step.
    secretary = (await _work(c, staff["secretary"]))["requests"]
    item = next(i for i in secretary["items"] if i["reference"] == refs["recommended"])
    view = (await c.get(f"/v1/staff/requests/{refs['recommended']}", headers=staff["me"])).json()
    assert view["timeline"][-1]["status"] == "recommended"
    since = datetime.fromisoformat(item["waiting_since"])
    assert since == datetime.fromisoformat(view["timeline"][-1]["at"])
    assert datetime.fromisoformat(item["submitted_at"]) == datetime.fromisoformat(
        view["submitted_at"]
    )
    assert since > datetime.fromisoformat(item["submitted_at"])

    # Entered their states 10, 5, 3 and 1 days ago.
    ages = {"approved": 10, "submitted": 5, "under_review": 3, "reviewed": 1}
    for name, days in ages.items():
        await db.execute(
            "UPDATE data_requests SET updated_at = now() - make_interval(days => $2)"
            " WHERE reference = $1",
            refs[name],
            days,
        )
    officer = (await _work(c, staff["officer"]))["requests"]
    assert _refs(officer) == [refs[n] for n in ages]
    assert [round(i["waited_days"]) for i in officer["items"]] == list(ages.values())
    # A first page: the count is the queue's, the items the oldest.
    first = (await _work(c, staff["officer"], limit=2))["requests"]
    assert first["count"] == 4
    assert _refs(first) == [refs["approved"], refs["submitted"]]


async def test_grievances_new_or_overdue_oldest_first(
    wclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], world: World
) -> None:
    g = world.grievances
    work = await _work(wclient, staff["officer"])
    queue = work["grievances"]
    assert queue["counts"] == {"new": 2, "overdue": 2}
    assert queue["count"] == 3  # the triaged one in time and the closed one are not work
    assert _refs(queue) == [g["late_resolve"], g["late_triage"], g["new"]]
    overdue = {item["reference"]: item["overdue"] for item in queue["items"]}
    assert overdue == {g["late_resolve"]: "resolve", g["late_triage"]: "triage", g["new"]: None}
    late = queue["items"][0]
    assert late["status"] == "triaged"
    assert round(late["days_open"]) == 40
    as_of = datetime.fromisoformat(work["as_of"])
    assert datetime.fromisoformat(late["due_at"]) < as_of  # filed 40 days ago, due after 30
    new = queue["items"][2]
    assert datetime.fromisoformat(new["due_at"]) > as_of  # triage due 7 days after filing
    # Nothing that names the filer or the household.
    assert set(new) == {
        "grievance_id",
        "reference",
        "status",
        "reason",
        "filed_at",
        "days_open",
        "due_at",
        "overdue",
    }
    # The M&E team reads grievances but does not work them: not its queue.
    assert (await _work(wclient, staff["me"]))["grievances"] is None


async def test_obligations_falling_due_and_agreements_due_for_a_spot_check(
    wclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    world: World,
    db: asyncpg.Connection,
) -> None:
    c, refs = wclient, world.refs
    owed = (await _work(c, staff["officer"]))["obligations"]
    # Weekly updates fall due within the 30 days' notice; monthly ones not yet.
    assert owed["count"] == 1
    assert owed["counts"] == {"overdue": 0, "due_soon": 1}
    assert [o["request"] for o in owed["items"]] == [refs["active"]]
    assert owed["items"][0]["days_past_due"] == -7
    assert owed["items"][0]["status"] == "open"
    await db.execute(
        "UPDATE obligations SET due_on = (now() AT TIME ZONE 'UTC')::date - 3"
        " WHERE agreement_id = $1::uuid",
        world.agreements["active"],
    )
    owed = (await _work(c, staff["officer"]))["obligations"]
    assert owed["counts"] == {"overdue": 1, "due_soon": 0}
    assert owed["items"][0]["status"] == "overdue"
    assert owed["items"][0]["days_past_due"] == 3
    # Met: no longer anyone's work.
    met = await c.post(
        f"/v1/staff/obligations/{owed['items'][0]['obligation_id']}/met",
        json={"deliverable": "Updates received"},
        headers=staff["officer"],
    )
    assert met.status_code == 200, met.text
    assert (await _work(c, staff["officer"]))["obligations"]["count"] == 0

    # Agreements just signed are not due; the M&E team's queue fills as they age.
    me = (await _work(c, staff["me"]))["spot_checks"]
    assert me["count"] == 0
    await db.execute(
        "UPDATE agreements SET valid_from = now() - interval '200 days' WHERE id = ANY($1::uuid[])",
        [world.agreements[n] for n in ("active", "suspended", "operator", "expired")],
    )
    me = (await _work(c, staff["me"]))["spot_checks"]
    # Active ones only: the suspended and the expired agreements are not checked.
    assert me["count"] == 2
    assert me["counts"] == {"never_checked": 2}
    assert {i["agreement_id"] for i in me["items"]} == {
        world.agreements["active"],
        world.agreements["operator"],
    }
    assert all(round(i["days_overdue"]) == 20 for i in me["items"])
    # A check makes the agreement not due again until the interval has passed.
    check = await c.post(
        f"/v1/staff/agreements/{world.agreements['active']}/spot-checks",
        json={"outcome": "passed", "findings": "All in order", "action": "none"},
        headers=staff["me"],
    )
    assert check.status_code == 201, check.text
    me = (await _work(c, staff["me"]))["spot_checks"]
    assert [i["agreement_id"] for i in me["items"]] == [world.agreements["operator"]]
    await db.execute(
        "UPDATE spot_checks SET at = now() - interval '190 days' WHERE agreement_id = $1::uuid",
        world.agreements["active"],
    )
    me = (await _work(c, staff["me"]))["spot_checks"]
    assert me["count"] == 2
    assert me["counts"] == {"never_checked": 1}
    # The agreement never checked is the longest due (since day 180 of its 200).
    assert [i["agreement_id"] for i in me["items"]] == [
        world.agreements["operator"],
        world.agreements["active"],
    ]
    assert me["items"][1]["last_outcome"] == "passed"
    assert round(me["items"][1]["days_overdue"]) == 10


async def test_counts_and_sections_leak_nothing_beyond_the_callers_work(
    wclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    world: World,
    wurl: str,
) -> None:
    c = wclient
    # No section of another role, and no personal data in any answer.
    for who in staff.values():
        text = (await c.get(URL, headers=who)).text
        assert world.cnic not in text
        assert "+92 300 7654321" not in text  # the filer's phone
        assert "ayesha.khan@pspa.example.pk" not in text  # the applicant's contact
    committee = await _work(c, staff["committee"])
    assert committee["requests"]["count"] == 1
    assert [committee[s] for s in SECTIONS[1:]] == [None, None, None]

    # A token asked for fewer scopes sees fewer sections (its scopes, not only its roles).
    made = json.loads(
        run_cli(["staff", "create", "--name", "Narrow", "--role", "officer", "--json"], wurl).stdout
    )
    narrow = bearer(
        await get_token(c, made["client_id"], made["client_secret"], scope="requests:read")
    )
    body = await _work(c, narrow)
    assert body["requests"]["count"] == 4
    assert body["obligations"] is not None
    assert body["grievances"] is None

    # Partners have no work here.
    r = await c.get(URL, headers=world.partner_auth)
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert (await c.get(URL)).status_code == 401


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"limit": "x"}, {"page": 2}])
async def test_bad_parameters_are_422(
    wclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], params: dict[str, Any]
) -> None:
    r = await wclient.get(URL, headers=staff["officer"], params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
