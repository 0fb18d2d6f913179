"""The M&E reports (§6.4) over HTTP, each figure checked against the raw tables.

A module scenario drives requests through the workflow API (approvals priced by the formula,
case by case and gratis, a rejection, a withdrawal, one left waiting), signs agreements whose
partners read a score, beneficiary lists and an extract, and sends an update batch. The
scenario's request timelines are then moved into early 2020 (as if the steps had taken
hours and days), so a 2020 range holds only this module's requests; the audit log and the
update batches keep their real times (the audit log is append-only) and are read over today.

Expected figures are recomputed here from raw rows in Python (never by the service's SQL);
the session database is shared, so whole reports are compared with the same computation over
the same range, and this module's own rows are checked against what the scenario did.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import make_settings, open_client, run_cli
from partner_helpers import bearer, create_partner, get_token

URL = "/v1/staff/reports"
ROLES = ("officer", "committee", "secretary", "me", "admin")
ORG_TYPES = ("government", "semi_autonomous", "academic", "local_ngo", "donor", "private")
TERMINAL = {"rejected", "withdrawn", "revoked", "expired"}
STATES = (
    "submitted",
    "under_review",
    "reviewed",
    "interviewed",
    "recommended",
    "not_recommended",
    "approved",
    "rejected",
    "active",
    "expired",
    "suspended",
    "revoked",
    "withdrawn",
)
UPDATE_KINDS = (
    "member_birth",
    "member_death",
    "member_update",
    "address_change",
    "phone_change",
    "household_survey",
    "new_household",
    "member_move",
)
# Where the scenario's timelines are moved: request i starts on BASE + i days, and its
# successive steps take these many hours (cycled), so the stages have real durations.
BASE = datetime(2020, 1, 6, 6, 0, tzinfo=UTC)
STEP_HOURS = (3.0, 26.5, 7.0, 49.0, 12.25, 5.0, 70.0, 2.0)
SPAN = {"from": "2020-01-01", "to": "2020-02-29"}


@dataclass
class Scenario:
    tag: str
    request_ids: list[str] = field(default_factory=list)
    references: dict[str, str] = field(default_factory=dict)
    quotes: dict[str, dict[str, Any]] = field(default_factory=dict)
    agreements: dict[str, str] = field(default_factory=dict)
    organizations: dict[str, str] = field(default_factory=dict)
    delivered: dict[tuple[str, str], tuple[int, int, int]] = field(default_factory=dict)
    batch: dict[str, Any] = field(default_factory=dict)
    overdue_obligation: str = ""
    met_obligation: str = ""
    open_obligation: str = ""


@pytest.fixture(scope="module")
async def rclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url,
        token_limits="10000/minute",
        partner_default_limits="100000/minute",
        request_form_limits="10000/minute",
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def staff(rclient: httpx.AsyncClient, seeded_url: str) -> dict[str, dict[str, str]]:
    """One staff member per role: headers, and the client id the audit log records."""
    out = {}
    for role in ROLES:
        made = json.loads(
            run_cli(
                ["staff", "create", "--name", f"Reports {role}", "--role", role, "--json"],
                seeded_url,
            ).stdout
        )
        token = await get_token(rclient, made["client_id"], made["client_secret"])
        out[role] = {**bearer(token), "client_id": made["client_id"]}
    return out


def _headers(who: dict[str, str], **extra: str) -> dict[str, str]:
    return {"Authorization": who["Authorization"], **extra}


def form(name: str, org_type: str, categories: list[str], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "organization": {
            "name": name,
            "type": org_type,
            "contact_name": "Sana Malik",
            "email": "sana.malik@example.pk",
            "phone": "+92 51 1234567",
            "address": "2 Constitution Avenue, Islamabad",
        },
        "purpose": "Monitoring a social protection programme",
        "extent_of_use": "Two analysts",
        "period": {"start": "2027-01-01", "end": "2027-12-31"},
        "storage": "vpn",
        "categories": categories,
        "dimensions": ["education"],
        "geography": [],
        "methodology": "Descriptive statistics",
        "security_measures": "Encrypted disks",
    }
    body.update(overrides)
    return body


async def _act(
    c: httpx.AsyncClient, who: dict[str, str], rid: str, action: str, body: dict[str, Any]
) -> dict[str, Any]:
    r = await c.post(f"/v1/staff/requests/{rid}/actions/{action}", json=body, headers=_headers(who))
    assert r.status_code == 200, (action, r.text)
    answer: dict[str, Any] = r.json()
    return answer


async def _submit(c: httpx.AsyncClient, s: Scenario, key: str, body: dict[str, Any]) -> str:
    r = await c.post("/v1/requests", json=body)
    assert r.status_code == 201, r.text
    made = r.json()
    s.request_ids.append(made["request_id"])
    s.references[key] = made["reference"]
    s.organizations[key] = body["organization"]["name"]
    return str(made["status_url"]) if key == "withdrawn" else str(made["request_id"])


async def _to_decision(
    c: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    rid: str,
    review: dict[str, Any],
    recommendation: dict[str, Any],
) -> None:
    await _act(c, staff["officer"], rid, "start_review", {})
    await _act(c, staff["officer"], rid, "review", review)
    await _act(c, staff["officer"], rid, "record_interview", {"outcome": "passed", "notes": "ok"})
    await _act(c, staff["committee"], rid, "recommend", recommendation)


async def _sign(c: httpx.AsyncClient, staff: dict[str, dict[str, str]], rid: str) -> str:
    signed = await _act(c, staff["officer"], rid, "sign", {})
    assert signed["status"] == "active"
    return await get_token(c, signed["client_id"], signed["client_secret"])


@pytest.fixture(scope="module")
async def scenario(
    rclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection
) -> Scenario:
    c = rclient
    s = Scenario(tag=uuid.uuid4().hex[:6])
    district: str = await db.fetchval(
        "SELECT district_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    approve = {"recommendation": "approve", "notes": "In order"}
    decide = {"reasons": "As recommended"}

    # A: category v, update partner; reads beneficiaries (iv, and v with a dimension).
    rid = await _submit(c, s, "v", form(f"Reports Sindh Programme {s.tag}", "government", ["v"]))
    review_v = {
        "category": "v",
        "clearance_level": "restricted",
        "dimensions": ["education"],
        "geography": [district],
        "valid_days": 365,
        "update_kinds": ["phone_change", "member_death"],
        "update_frequency": "monthly",
    }
    await _to_decision(c, staff, rid, review_v, approve)
    s.quotes["v"] = (await _act(c, staff["secretary"], rid, "approve", decide))["quote"]
    token_v = await _sign(c, staff, rid)
    s.agreements["v"] = await db.fetchval(
        "SELECT agreement_id::text FROM data_requests WHERE id = $1::uuid", rid
    )
    for category, params in (
        ("iv", {"limit": 40}),
        ("v", {"limit": 25, "dimensions": "education"}),
    ):
        got = await c.get("/v1/partner/beneficiaries", params=params, headers=bearer(token_v))
        assert got.status_code == 200, got.text
        items = got.json()["items"]
        assert items
        members = sum(len(item["members"]) for item in items)
        s.delivered[("v", category)] = (1, len(items), members)

    # The update batch: applied, unchanged, conflict, rejected, and a kind nobody knows.
    hh = await db.fetch(
        "SELECT id, version FROM households WHERE district_code = $1 ORDER BY id LIMIT 2",
        district,
    )
    phone = f"0300 {uuid.uuid4().int % 10**7:07d}"
    records = [
        {"ref": "1", "kind": "phone_change", "household_id": hh[0]["id"], "phone": phone},
        {"ref": "2", "kind": "phone_change", "household_id": hh[0]["id"], "phone": phone},
        {
            "ref": "3",
            "kind": "phone_change",
            "household_id": hh[1]["id"],
            "expected_version": hh[1]["version"] + 7,
            "phone": phone,
        },
        {"ref": "4", "kind": "phone_change", "household_id": "abc", "phone": phone},
        {"ref": "5", "kind": "teleportation", "household_id": hh[1]["id"]},
    ]
    update_headers = {**bearer(token_v), "Idempotency-Key": uuid.uuid4().hex}
    sent = await c.post("/v1/partner/updates", json={"records": records}, headers=update_headers)
    assert sent.status_code == 202, sent.text
    batch_id = sent.json()["batch_id"]
    for _ in range(600):
        body = (await c.get(f"/v1/partner/updates/{batch_id}", headers=update_headers)).json()
        if body["status"] == "done":
            break
        await asyncio.sleep(0.1)
    assert body["status"] == "done", body
    outcomes = [r["outcome"] for r in body["results"]]
    # The second phone is already the registry's: the partner (who may not read phones) is
    # told "applied"; the report counts it as unchanged.
    assert outcomes == ["applied", "applied", "conflict", "rejected", "rejected"], body
    s.batch = body

    # B: category iii; reads a score; owes quarterly updates.
    rid = await _submit(
        c, s, "iii", form(f"Reports Authority {s.tag}", "semi_autonomous", ["iii"], dimensions=[])
    )
    review_iii = {
        "category": "iii",
        "clearance_level": "restricted",
        "valid_days": 365,
        "update_kinds": ["member_death"],
        "update_frequency": "quarterly",
    }
    await _to_decision(c, staff, rid, review_iii, approve)
    s.quotes["iii"] = (await _act(c, staff["secretary"], rid, "approve", decide))["quote"]
    token_iii = await _sign(c, staff, rid)
    s.agreements["iii"] = await db.fetchval(
        "SELECT agreement_id::text FROM data_requests WHERE id = $1::uuid", rid
    )
    cnic = await db.fetchval(
        "SELECT cnic FROM members WHERE cnic IS NOT NULL AND deceased_on IS NULL"
        " ORDER BY id LIMIT 1"
    )
    got = await c.get(f"/v1/partner/scores/{cnic}", headers=bearer(token_iii))
    assert got.status_code == 200, got.text
    s.delivered[("iii", "iii")] = (1, 1, 1)

    # C: gratis research, category vi: owes its findings; reads an extract.
    rid = await _submit(
        c,
        s,
        "vi",
        form(
            f"Reports University {s.tag}",
            "academic",
            ["vi"],
            dimensions=[],
            gratis_criterion="a",
            gratis_justification="Doctoral research; findings shared with full rights",
        ),
    )
    await _to_decision(
        c,
        staff,
        rid,
        {"category": "vi", "clearance_level": "restricted", "valid_days": 30},
        {"recommendation": "approve", "gratis": True, "notes": "criterion a"},
    )
    approved = await _act(c, staff["secretary"], rid, "approve", decide)
    assert approved["quote"]["basis"] == "gratis"
    s.quotes["vi"] = approved["quote"]
    s.overdue_obligation = approved["obligation_id"]
    token_vi = await _sign(c, staff, rid)
    s.agreements["vi"] = await db.fetchval(
        "SELECT agreement_id::text FROM data_requests WHERE id = $1::uuid", rid
    )
    got = await c.get(
        "/v1/partner/extracts/anonymized", headers={**bearer(token_vi), "Accept": "text/csv"}
    )
    assert got.status_code == 200, got.text
    extract = list(csv.DictReader(io.StringIO(got.text)))
    assert len(extract) == int(got.headers["x-records"]) > 0
    s.delivered[("vi", "vi")] = (1, len({r["household_pid"] for r in extract}), len(extract))

    # D: a donor's custom analysis, priced case by case, approved (not signed).
    rid = await _submit(c, s, "case", form(f"Reports Donor {s.tag}", "donor", ["ii"]))
    await _to_decision(
        c,
        staff,
        rid,
        {"category": "ii", "clearance_level": "restricted", "amount": "150000"},
        approve,
    )
    s.quotes["case"] = (await _act(c, staff["secretary"], rid, "approve", decide))["quote"]
    assert s.quotes["case"]["basis"] == "case_by_case"

    # E: rejected (not recommended); F: withdrawn by the requester; G: left waiting.
    rid = await _submit(c, s, "rejected", form(f"Reports Company {s.tag}", "private", ["iv"]))
    await _to_decision(
        c,
        staff,
        rid,
        {"category": "iv", "clearance_level": "restricted"},
        {"recommendation": "reject", "notes": "No clear purpose"},
    )
    await _act(c, staff["secretary"], rid, "reject", {"reasons": "Not recommended"})
    status_url = await _submit(
        c, s, "withdrawn", form(f"Reports NGO {s.tag}", "local_ngo", ["iv", "v"])
    )
    reference, _, token = status_url.rpartition("?token=")
    r = await c.post(f"{reference}/withdraw", params={"token": token})
    assert r.status_code == 200, r.text
    await _submit(c, s, "waiting", form(f"Reports Council {s.tag}", "government", ["i"]))

    # Obligations: A's updates met, B's open, C's findings overdue (as if time had passed).
    owed = await db.fetch(
        """SELECT o.id::text, o.kind, d.reference FROM obligations o
             JOIN data_requests d ON d.id = o.request_id WHERE d.reference = ANY($1)""",
        [s.references[k] for k in ("v", "iii", "vi")],
    )
    by_ref = {(o["reference"], o["kind"]): o["id"] for o in owed}
    s.met_obligation = by_ref[(s.references["v"], "updates")]
    s.open_obligation = by_ref[(s.references["iii"], "updates")]
    assert by_ref[(s.references["vi"], "findings")] == s.overdue_obligation
    met = await c.post(
        f"/v1/staff/obligations/{s.met_obligation}/met",
        json={"deliverable": "First monthly feed"},
        headers=_headers(staff["officer"]),
    )
    assert met.status_code == 200, met.text
    await db.execute(
        "UPDATE obligations SET due_on = $2 WHERE id = $1::uuid",
        s.overdue_obligation,
        _today() - timedelta(days=3),
    )

    await _move_timelines(db, s.request_ids)
    return s


def _today() -> date:
    return datetime.now(UTC).date()


async def _move_timelines(db: asyncpg.Connection, request_ids: list[str]) -> None:
    """Request i starts on BASE + i days; each step takes the next STEP_HOURS."""
    for i, rid in enumerate(request_ids):
        events = await db.fetch(
            "SELECT id FROM request_events WHERE request_id = $1::uuid ORDER BY id", rid
        )
        at = BASE + timedelta(days=i)
        for j, event in enumerate(events):
            await db.execute("UPDATE request_events SET at = $2 WHERE id = $1", event["id"], at)
            if j == 0:
                await db.execute(
                    "UPDATE data_requests SET created_at = $2 WHERE id = $1::uuid", rid, at
                )
            at += timedelta(hours=STEP_HOURS[(i + j) % len(STEP_HOURS)])


# --- reading reports, and what they should say ----------------------------------------


async def _report(
    c: httpx.AsyncClient, who: dict[str, str], name: str, **params: str
) -> dict[str, Any]:
    r = await c.get(f"{URL}/{name}", params=params, headers=_headers(who))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert body["report"] == name
    assert body["from"] == params.get("from")
    assert body["to"] == params.get("to")
    return body


def _bounds(params: dict[str, str]) -> tuple[datetime | None, datetime | None]:
    start = params.get("from")
    end = params.get("to")
    since = datetime.combine(date.fromisoformat(start), time(), UTC) if start else None
    until = (
        datetime.combine(date.fromisoformat(end) + timedelta(days=1), time(), UTC) if end else None
    )
    return since, until


def _inside(at: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or at >= since) and (until is None or at < until)


def _percentile(values: list[float], p: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = p * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def _expected_requests(
    db: asyncpg.Connection, params: dict[str, str], now: datetime
) -> tuple[Counter[tuple[str, str, str]], dict[str, list[float]], Counter[str]]:
    since, until = _bounds(params)
    requests = [
        r
        for r in await db.fetch(
            "SELECT id, status, organization_type, review, created_at FROM data_requests"
        )
        if _inside(r["created_at"], since, until)
    ]
    counts: Counter[tuple[str, str, str]] = Counter()
    for r in requests:
        review = json.loads(r["review"]) if r["review"] else None
        category = review["category"] if review else "unreviewed"
        counts[(r["status"], r["organization_type"], category)] += 1
    stays: dict[str, list[float]] = defaultdict(list)
    still: Counter[str] = Counter()
    events = await db.fetch(
        "SELECT request_id, to_status, at FROM request_events WHERE request_id = ANY($1)"
        " ORDER BY request_id, id",
        [r["id"] for r in requests],
    )
    by_request: dict[Any, list[asyncpg.Record]] = defaultdict(list)
    for e in events:
        by_request[e["request_id"]].append(e)
    for timeline in by_request.values():
        for k, e in enumerate(timeline):
            if e["to_status"] in TERMINAL:
                continue
            left = timeline[k + 1]["at"] if k + 1 < len(timeline) else now
            if k + 1 == len(timeline):
                still[e["to_status"]] += 1
            stays[e["to_status"]].append(max((left - e["at"]).total_seconds(), 0) / 3600)
    return counts, stays, still


def _check_stages(body: dict[str, Any], stays: dict[str, list[float]], still: Counter[str]) -> None:
    assert [s["stage"] for s in body["stages"]] == [s for s in STATES if s not in TERMINAL]
    for stage in body["stages"]:
        hours = stays.get(stage["stage"], [])
        assert stage["entered"] == len(hours), stage
        assert stage["open"] == still[stage["stage"]], stage
        if not hours:
            assert stage["median_hours"] is None
            assert stage["p90_hours"] is None
            continue
        assert stage["median_hours"] == pytest.approx(_percentile(hours, 0.5), abs=6e-4)
        assert stage["p90_hours"] == pytest.approx(_percentile(hours, 0.9), abs=6e-4)


def _csv_matches(text: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """The CSV has a header and one line per JSON row, with the same values."""
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].split(",") == columns
    assert len(parsed) == len(rows)
    for line, row in zip(parsed, rows, strict=True):
        assert list(row) == columns
        # Hours of a stay still running count up to each answer's generated_at: the CSV
        # and the JSON are two requests, seconds apart.
        for key in [k for k in columns if k.endswith("_hours") and row[k] is not None]:
            assert float(line.pop(key)) == pytest.approx(float(row[key]), abs=0.05)
            row = {k: v for k, v in row.items() if k != key}
        assert line == {k: _as_csv(v) for k, v in row.items()}


def _as_csv(value: Any) -> str:
    """A JSON value as the CSV writes it: nothing for null, true/false for a boolean."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- the tests ------------------------------------------------------------------------


async def test_requests_counts_and_time_in_each_stage(
    rclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    scenario: Scenario,
    db: asyncpg.Connection,
) -> None:
    body = await _report(rclient, staff["me"], "requests", **SPAN)
    now = datetime.fromisoformat(body["generated_at"])
    counts, stays, still = await _expected_requests(db, SPAN, now)
    got = {
        (r["status"], r["organization_type"], r["category"]): r["requests"] for r in body["rows"]
    }
    assert got == dict(counts)
    # Only this module's requests are in 2020, and each is where the scenario left it.
    assert got == {
        ("submitted", "government", "unreviewed"): 1,
        ("approved", "donor", "ii"): 1,
        ("rejected", "private", "iv"): 1,
        ("active", "government", "v"): 1,
        ("active", "semi_autonomous", "iii"): 1,
        ("active", "academic", "vi"): 1,
        ("withdrawn", "local_ngo", "unreviewed"): 1,
    }
    assert body["totals"] == {"requests": 7}
    _check_stages(body, stays, still)
    by_stage = {s["stage"]: s for s in body["stages"]}
    # Every request but the withdrawn one left "submitted" after the step the timeline gave.
    assert by_stage["submitted"]["entered"] == 7
    assert by_stage["submitted"]["open"] == 1
    assert by_stage["active"]["open"] == 3
    assert by_stage["suspended"] == {
        "stage": "suspended",
        "entered": 0,
        "open": 0,
        "median_hours": None,
        "p90_hours": None,
    }
    assert by_stage["under_review"]["entered"] == 5

    # Over all time, the whole database (other modules' requests included) adds up too.
    everything = await _report(rclient, staff["officer"], "requests")
    now = datetime.fromisoformat(everything["generated_at"])
    counts, stays, still = await _expected_requests(db, {}, now)
    assert {
        (r["status"], r["organization_type"], r["category"]): r["requests"]
        for r in everything["rows"]
    } == dict(counts)
    assert everything["totals"]["requests"] == sum(counts.values())
    _check_stages(everything, stays, still)


def _category(endpoint: str, dimensions: list[str]) -> str | None:
    if endpoint == "/v1/partner/scores/{cnic}":
        return "iii"
    if endpoint.startswith("/v1/partner/beneficiaries ("):
        return "v" if dimensions else "iv"
    if endpoint.startswith("/v1/partner/extracts/anonymized ("):
        return "vi"
    if endpoint == "GET /v1/partner/summaries":
        return "i"
    if endpoint in ("POST /v1/partner/analysis", "GET /v1/partner/analysis/{analysis_id}"):
        return "ii"
    if endpoint.startswith("/v1/partner/maps/"):
        return "vii"
    if endpoint.startswith("/v1/partner/geo ("):
        return "viii"
    return None


async def test_data_shared_per_partner_and_category(
    rclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    scenario: Scenario,
    db: asyncpg.Connection,
) -> None:
    today = _today().isoformat()
    span = {"from": today, "to": today}
    body = await _report(rclient, staff["secretary"], "data-shared", **span)
    since, until = _bounds(span)
    names = {r["id"]: r["name"] for r in await db.fetch("SELECT id, name FROM organizations")}
    expected: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for a in await db.fetch(
        "SELECT at, agreement_id, endpoint, dimensions, households, members FROM audit_log"
        " WHERE agreement_id IS NOT NULL"
    ):
        category = _category(a["endpoint"], list(a["dimensions"]))
        if category is None or not _inside(a["at"], since, until):
            continue
        row = expected[(str(a["agreement_id"]), category)]
        row[0] += 1
        row[1] += a["households"]
        row[2] += a["members"]
    got = {
        (r["agreement_id"], r["category"]): [r["accesses"], r["households"], r["members"]]
        for r in body["rows"]
    }
    assert got == dict(expected)
    assert body["totals"] == {
        "accesses": sum(v[0] for v in expected.values()),
        "households": sum(v[1] for v in expected.values()),
        "members": sum(v[2] for v in expected.values()),
    }
    for row in body["rows"]:
        organization = await db.fetchval(
            "SELECT organization_id::text FROM agreements WHERE id = $1::uuid", row["agreement_id"]
        )
        assert row["organization_id"] == organization
        assert row["organization"] == names[uuid.UUID(organization)]

    # What this module's partners received, as the scenario saw it.
    mine = {
        (key, r["category"]): r
        for key, agreement in scenario.agreements.items()
        for r in body["rows"]
        if r["agreement_id"] == agreement
    }
    assert set(mine) == set(scenario.delivered)
    for key, (accesses, households, members) in scenario.delivered.items():
        row = mine[key]
        assert row["accesses"] == accesses
        assert row["members"] == members
        assert row["households"] == households
        assert row["organization"] == scenario.organizations[key[0]]

    # A range that ends before today holds none of it.
    yesterday = (_today() - timedelta(days=1)).isoformat()
    before = await _report(rclient, staff["me"], "data-shared", to=yesterday)
    assert not {r["agreement_id"] for r in before["rows"]} & set(scenario.agreements.values())


async def test_updates_per_partner_and_kind(
    rclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    scenario: Scenario,
    db: asyncpg.Connection,
) -> None:
    today = _today().isoformat()
    span = {"from": today}
    body = await _report(
        rclient, staff["admin"] if "admin" in staff else staff["me"], "updates", **span
    )
    since, until = _bounds(span)
    batches = {
        b["id"]: b
        for b in await db.fetch(
            "SELECT id, agreement_id, record_count, dry_run, received_at, source"
            " FROM update_batches"
        )
        if b["source"] == "partner" and _inside(b["received_at"], since, until)
    }
    expected: dict[tuple[str, str, bool], Counter[str]] = defaultdict(Counter)
    seen: dict[tuple[str, str, bool], set[Any]] = defaultdict(set)
    outcomes = 0
    for u in await db.fetch("SELECT batch_id, kind, outcome, unchanged FROM update_results"):
        batch = batches.get(u["batch_id"])
        if batch is None:
            continue
        outcomes += 1
        kind = u["kind"] if u["kind"] in UPDATE_KINDS else "other"
        key = (str(batch["agreement_id"]), kind, batch["dry_run"])
        expected[key]["received"] += 1
        # What the registry found, whatever the partner was told.
        truth = "unchanged" if u["unchanged"] else u["outcome"]
        expected[key]["conflicts" if truth == "conflict" else truth] += 1
        seen[key].add(u["batch_id"])
    fields = ("received", "applied", "rejected", "conflicts", "unchanged")
    got = {(r["agreement_id"], r["kind"], r["dry_run"]): r for r in body["rows"]}
    assert set(got) == set(expected)
    for key, row in got.items():
        assert {f: row[f] for f in fields} == {f: expected[key][f] for f in fields}
        assert row["batches"] == len(seen[key])
    records = sum(b["record_count"] for b in batches.values())
    dry_runs = [b for b in batches.values() if b["dry_run"]]
    assert body["totals"] == {
        "batches": len(batches),
        "records": records,
        "pending": records - outcomes,
        "dry_run_batches": len(dry_runs),
        "dry_run_records": sum(b["record_count"] for b in dry_runs),
        **{f: sum(c[f] for c in expected.values()) for f in fields},
    }

    # This module's batch, by kind.
    agreement = scenario.agreements["v"]
    assert got[(agreement, "phone_change", False)] == {
        "organization": scenario.organizations["v"],
        "organization_id": got[(agreement, "phone_change", False)]["organization_id"],
        "agreement_id": agreement,
        "kind": "phone_change",
        "dry_run": False,
        "batches": 1,
        "received": 4,
        "applied": 1,
        "rejected": 1,
        "conflicts": 1,
        "unchanged": 1,
    }
    assert {f: got[(agreement, "other", False)][f] for f in fields} == {
        "received": 1,
        "applied": 0,
        "rejected": 1,
        "conflicts": 0,
        "unchanged": 0,
    }


async def test_revenue_quoted_and_waived(
    rclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    scenario: Scenario,
    db: asyncpg.Connection,
) -> None:
    body = await _report(rclient, staff["secretary"], "revenue", **SPAN)
    since, until = _bounds(SPAN)
    expected: dict[str, dict[str, Any]] = {
        t: {
            "approved": 0,
            "formula": 0,
            "case_by_case": 0,
            "gratis": 0,
            "q": Decimal(0),
            "w": Decimal(0),
        }
        for t in ORG_TYPES
    }
    for e in await db.fetch(
        """SELECT e.at, d.organization_type, d.quote FROM request_events e
             JOIN data_requests d ON d.id = e.request_id WHERE e.action = 'approve'"""
    ):
        if not _inside(e["at"], since, until):
            continue
        quote = json.loads(e["quote"])
        row = expected[e["organization_type"]]
        row["approved"] += 1
        row[quote["basis"]] += 1
        if quote["basis"] == "gratis":
            row["w"] += Decimal(quote["C"] or 0) + Decimal(quote["F"] or 0)
        else:
            row["q"] += Decimal(quote["G"])
    assert [r["organization_type"] for r in body["rows"]] == list(ORG_TYPES)
    for row in body["rows"]:
        want = expected[row["organization_type"]]
        for k in ("approved", "formula", "case_by_case", "gratis"):
            assert row[k] == want[k], row
        assert Decimal(row["quoted_total"]) == want["q"]
        assert Decimal(row["waived_total"]) == want["w"]

    # Only this module approved anything in early 2020: the quotes it was given.
    q = scenario.quotes
    rows = {r["organization_type"]: r for r in body["rows"]}
    assert (rows["government"]["formula"], rows["government"]["quoted_total"]) == (1, q["v"]["G"])
    assert rows["semi_autonomous"]["quoted_total"] == q["iii"]["G"]
    assert rows["donor"] == {
        "organization_type": "donor",
        "approved": 1,
        "formula": 0,
        "case_by_case": 1,
        "gratis": 0,
        "quoted_total": "150000",
        "waived_total": "0",
    }
    waived = Decimal(q["vi"]["C"]) + Decimal(q["vi"]["F"])
    assert waived > 0
    assert rows["academic"]["gratis"] == 1
    assert Decimal(rows["academic"]["waived_total"]) == waived
    assert rows["academic"]["quoted_total"] == "0"
    assert rows["private"]["approved"] == 0  # the rejected request
    assert body["totals"]["approved"] == 4
    assert Decimal(body["totals"]["quoted_total"]) == sum(
        Decimal(q[k]["G"]) for k in ("v", "iii", "case")
    )
    assert Decimal(body["totals"]["waived_total"]) == waived
    assert body["totals"]["currency"] == "PKR"


async def test_obligations_open_met_overdue(
    rclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    scenario: Scenario,
    db: asyncpg.Connection,
) -> None:
    body = await _report(rclient, staff["officer"], "obligations")
    today = date.fromisoformat(body["totals"]["as_of"])
    assert today == datetime.fromisoformat(body["generated_at"]).date()
    rows = await db.fetch(
        """SELECT o.id::text, o.kind, o.status, o.due_on, o.agreement_id::text, d.reference,
                  d.form FROM obligations o JOIN data_requests d ON d.id = o.request_id"""
    )
    expected: dict[str, Counter[str]] = {"findings": Counter(), "updates": Counter()}
    late = []
    for o in rows:
        status = o["status"]
        if status == "open" and o["due_on"] < today:
            status = "overdue"
            late.append(o)
        expected[o["kind"]][status] += 1
        expected[o["kind"]]["total"] += 1
    fields = ("open", "overdue", "met", "total")
    assert body["rows"] == [
        {"kind": kind, **{f: expected[kind][f] for f in fields}} for kind in expected
    ]
    assert body["totals"] == {
        **{f: sum(c[f] for c in expected.values()) for f in fields},
        "as_of": today.isoformat(),
    }
    assert sorted(o["obligation_id"] for o in body["overdue"]) == sorted(o["id"] for o in late)
    mine = [o for o in body["overdue"] if o["obligation_id"] == scenario.overdue_obligation]
    assert mine == [
        {
            "obligation_id": scenario.overdue_obligation,
            "organization": scenario.organizations["vi"],
            "request": scenario.references["vi"],
            "agreement_id": scenario.agreements["vi"],
            "kind": "findings",
            "due_on": (today - timedelta(days=3)).isoformat(),
            "days_overdue": 3,
        }
    ]
    statuses = {
        o["id"]: o["status"]
        for o in rows
        if o["id"] in (scenario.met_obligation, scenario.open_obligation)
    }
    assert statuses == {scenario.met_obligation: "met", scenario.open_obligation: "open"}

    # The range is on the due date: three days ago holds the overdue findings.
    day = (today - timedelta(days=3)).isoformat()
    that_day = await _report(rclient, staff["officer"], "obligations", **{"from": day, "to": day})
    due = [o for o in rows if o["due_on"].isoformat() == day]
    assert sum(r["total"] for r in that_day["rows"]) == len(due)
    assert scenario.overdue_obligation in {o["obligation_id"] for o in that_day["overdue"]}


@pytest.mark.parametrize(
    ("name", "table", "params"),
    [
        ("requests", "rows", SPAN),
        ("requests", "stages", SPAN),
        ("data-shared", "rows", {}),
        ("updates", "rows", {}),
        ("revenue", "rows", SPAN),
        ("obligations", "rows", {}),
        ("obligations", "overdue", {}),
    ],
)
async def test_csv_is_the_json_table(
    rclient: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    scenario: Scenario,
    name: str,
    table: str,
    params: dict[str, str],
) -> None:
    who = staff["me"]
    query = {**params, "table": table} if table != "rows" else dict(params)
    got = await rclient.get(f"{URL}/{name}", params=query, headers=_headers(who, Accept="text/csv"))
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "text/csv; charset=utf-8"
    body = await _report(rclient, who, name, **params)
    rows = body[table]
    assert rows
    columns = got.text.splitlines()[0].split(",")
    _csv_matches(got.text, columns, rows)
    # A preference for JSON wins over a lesser CSV.
    r = await rclient.get(
        f"{URL}/{name}",
        params=params,
        headers=_headers(who, Accept="application/json, text/csv;q=0.5"),
    )
    assert r.headers["content-type"].startswith("application/json")


async def test_an_empty_csv_still_has_its_header(
    rclient: httpx.AsyncClient, staff: dict[str, dict[str, str]]
) -> None:
    r = await rclient.get(
        f"{URL}/updates",
        params={"from": "1999-01-01", "to": "1999-01-31"},
        headers=_headers(staff["me"], Accept="text/csv"),
    )
    assert r.status_code == 200, r.text
    assert r.text == (
        "organization,organization_id,agreement_id,kind,dry_run,batches,received,applied,"
        "rejected,conflicts,unchanged\n"
    )


async def test_every_read_is_audited(
    rclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection
) -> None:
    who = staff["me"]
    last = await db.fetchval("SELECT max(id) FROM audit_log")
    await _report(rclient, who, "revenue", **SPAN)
    r = await rclient.get(
        f"{URL}/obligations", params={"table": "overdue"}, headers=_headers(who, Accept="text/csv")
    )
    assert r.status_code == 200
    rows = await db.fetch(
        "SELECT actor_type, client_id, agreement_id, endpoint, filters, dimensions, households,"
        " members FROM audit_log WHERE id > $1 ORDER BY id",
        last,
    )
    assert [(r["actor_type"], r["client_id"], r["agreement_id"], r["endpoint"]) for r in rows] == [
        ("staff", who["client_id"], None, "GET /v1/staff/reports/{name}")
    ] * 2
    assert json.loads(rows[0]["filters"]) == {"report": "revenue", **SPAN, "format": "json"}
    assert json.loads(rows[1]["filters"]) == {
        "report": "obligations",
        "format": "csv",
        "table": "overdue",
    }
    assert all((r["dimensions"], r["households"], r["members"]) == ([], 0, 0) for r in rows)


async def test_refusals(
    rclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection
) -> None:
    last = await db.fetchval("SELECT max(id) FROM audit_log")
    who = _headers(staff["officer"])
    # The committee holds no reports:read; nor does a request without a token.
    r = await rclient.get(f"{URL}/requests", headers=_headers(staff["committee"]))
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert "reports:read" in r.json()["detail"]
    assert (await rclient.get(f"{URL}/requests")).status_code == 401
    cases: list[tuple[str, dict[str, str], str]] = [
        ("requests", {"from": "2026-02-01", "to": "2026-01-31"}, "from"),
        ("payroll", {}, "name"),
        ("requests", {"from": "2026-02-30"}, "from"),
        ("revenue", {"table": "stages"}, "table"),
        ("requests", {"form": "2026-01-01"}, "form"),
    ]
    for name, params, field_name in cases:
        r = await rclient.get(f"{URL}/{name}", params=params, headers=who)
        assert r.status_code == 422, (name, params, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert field_name in r.text
    # Nothing was read, so nothing was audited.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM audit_log WHERE id > $1 AND endpoint = $2",
            last,
            "GET /v1/staff/reports/{name}",
        )
        == 0
    )
    # The range's ends are inclusive days: from == to is one whole day.
    same = await rclient.get(
        f"{URL}/requests", params={"from": "2020-01-06", "to": "2020-01-06"}, headers=who
    )
    assert same.status_code == 200


async def test_open_ended_and_extreme_ranges(
    rclient: httpx.AsyncClient, staff: dict[str, dict[str, str]]
) -> None:
    for params in ({"from": "0001-01-01", "to": "9999-12-31"}, {"to": "9999-12-31"}):
        for name in ("requests", "data-shared", "updates", "revenue", "obligations"):
            r = await rclient.get(f"{URL}/{name}", params=params, headers=_headers(staff["me"]))
            assert r.status_code == 200, (name, params, r.text)


def test_csv_cells_never_run_as_spreadsheet_formulas() -> None:
    """Organization names come from the public form: a leading = + - @ is neutralized."""
    from app.services.monitoring.reports import to_csv

    text = to_csv(
        ["organization", "households", "due_on"],
        [
            {"organization": '=HYPERLINK("http://x")', "households": 3, "due_on": None},
            {"organization": "@SUM(A1)", "households": 0, "due_on": date(2027, 1, 2)},
            {"organization": "Plain, with comma", "households": 1, "due_on": None},
        ],
    )
    assert list(csv.reader(io.StringIO(text))) == [
        ["organization", "households", "due_on"],
        ['\'=HYPERLINK("http://x")', "3", ""],
        ["'@SUM(A1)", "0", "2027-01-02"],
        ["Plain, with comma", "1", ""],
    ]


async def test_data_shared_counts_the_information_products(
    rclient: httpx.AsyncClient, staff: dict[str, dict[str, str]], seeded_url: str
) -> None:
    """Summaries (i), analyses (ii), maps (vii) and geo-tagged points (viii) are data shared."""
    p = create_partner(seeded_url, name="Products Reader", categories="i,ii,vii,viii")
    auth = bearer(await get_token(rclient, p["client_id"], p["client_secret"]))
    assert (
        await rclient.get("/v1/partner/summaries", params={"group_by": "province"}, headers=auth)
    ).status_code == 200
    made = await rclient.post("/v1/partner/analysis", json={"rows": ["poverty_band"]}, headers=auth)
    assert made.status_code == 201, made.text
    assert (await rclient.get("/v1/partner/maps/households", headers=auth)).status_code == 200
    assert (await rclient.get("/v1/partner/geo", headers=auth)).status_code == 200
    today = _today().isoformat()
    body = await _report(rclient, staff["me"], "data-shared", **{"from": today, "to": today})
    mine = {
        r["category"]: r["accesses"] for r in body["rows"] if r["agreement_id"] == p["agreement_id"]
    }
    assert mine == {"i": 1, "ii": 1, "vii": 1, "viii": 1}
