"""As-of lists: the registry rebuilt from history, not today's data filtered.

A module database of its own (400 households): an update batch changes membership, scores,
bands and addresses, and a new rule version is written. Lists read before the batch must
equal the same lists asked ``as_of`` that instant after it, page by page and streamed.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from conftest import fresh_database, make_settings, open_client, service_url
from partner_helpers import bearer, create_partner, get_token
from request_helpers import staff_by_role
from updates_helpers import send, updates_partner

from app.services.programmes.demo import ensure_demo_programmes

BENEFICIARIES = "/v1/partner/beneficiaries"
PROGRAMME = "/v1/partner/programmes/cash-transfer/beneficiaries"
DIMENSIONS = "household_composition,age_bracket,education,room_count,toilet_type,land"
TODAY = date.today()
LIVING = "m.household_id = h.id AND m.deceased_on IS NULL"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=400, seed=23) as u:
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
async def reader(c: httpx.AsyncClient, url: str) -> dict[str, str]:
    made = create_partner(
        url, categories="iii,iv,v", programmes="cash-transfer", dimensions=DIMENSIONS
    )
    return bearer(await get_token(c, made["client_id"], made["client_secret"]))


async def _walk(
    c: httpx.AsyncClient, path: str, headers: dict[str, str], params: dict[str, Any]
) -> tuple[list[dict[str, Any]], set[str | None]]:
    """Every item of a paged list, and the snapshot ids its pages carried."""
    items: list[dict[str, Any]] = []
    snapshots: set[str | None] = set()
    cursor = None
    while True:
        q = {**params, "limit": 37, **({"cursor": cursor} if cursor else {})}
        r = await c.get(path, params=q, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        snapshots.add(body.get("snapshot"))
        if body.get("snapshot"):
            assert r.headers["x-snapshot-id"] == body["snapshot"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items, snapshots


async def _stream(
    c: httpx.AsyncClient, path: str, headers: dict[str, str], params: dict[str, Any], accept: str
) -> tuple[str, str | None]:
    r = await c.get(path, params=params, headers={**headers, "Accept": accept})
    assert r.status_code == 200, r.text
    return r.text, r.headers.get("x-snapshot-id")


READS: list[tuple[str, dict[str, Any]]] = [
    (BENEFICIARIES, {}),
    (BENEFICIARIES, {"dimensions": DIMENSIONS, "member_type": "ever_married_women"}),
    (BENEFICIARIES, {"score_max": 30, "poverty_band": ["ultra_poor", "very_poor", "poor"]}),
    (PROGRAMME, {}),
]


async def _read_all(
    c: httpx.AsyncClient, headers: dict[str, str], extra: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, (path, params) in enumerate(READS):
        items, snaps = await _walk(c, path, headers, {**params, **extra})
        out[f"page{i}"] = items
        out[f"snap{i}"] = snaps
    for accept in ("application/x-ndjson", "text/csv"):
        for i in (1, 3):
            path, params = READS[i]
            out[f"{accept}{i}"] = await _stream(c, path, headers, {**params, **extra}, accept)
    return out


async def _batch_records(db: asyncpg.Connection) -> list[dict[str, Any]]:
    """Deaths, a birth, re-scoring surveys both ways, an address change to another
    district, a marriage, a move and a new household."""
    women = await db.fetch(
        f"""SELECT DISTINCT ON (h.id) h.id, m.cnic FROM households h JOIN members m ON {LIVING}
             WHERE m.gender = 'female' AND m.relationship IN ('head', 'spouse')
               AND m.cnic IS NOT NULL AND h.pmt_score <= 32 ORDER BY h.id, m.id LIMIT 3"""
    )
    poor = await db.fetch("SELECT id FROM households WHERE pmt_score <= 25 ORDER BY id LIMIT 4")
    rich = await db.fetch("SELECT id FROM households WHERE pmt_score >= 45 ORDER BY id LIMIT 4")
    single = await db.fetchrow(
        f"""SELECT m.cnic FROM households h JOIN members m ON {LIVING}
             WHERE m.gender = 'female' AND m.marital_status = 'never_married'
               AND m.cnic IS NOT NULL AND m.date_of_birth < current_date - interval '20 years'
               AND h.pmt_score <= 30 ORDER BY m.id LIMIT 1"""
    )
    mover = await db.fetchrow(
        f"""SELECT m.cnic, h.id FROM households h JOIN members m ON {LIVING}
             WHERE m.relationship = 'daughter' AND m.cnic IS NOT NULL AND h.pmt_score <= 32
             ORDER BY m.id DESC LIMIT 1"""
    )
    geo = await db.fetch(
        """SELECT DISTINCT ON (district_code) id, district_code, tehsil_code, union_council_code
             FROM households ORDER BY district_code, id LIMIT 2"""
    )
    assert len(women) == 3
    assert len(poor) == 4
    assert len(rich) == 4
    assert len(geo) == 2
    assert single is not None
    assert mover is not None
    records: list[dict[str, Any]] = [
        {
            "ref": f"death{i}",
            "kind": "member_death",
            "cnic": w["cnic"],
            "date_of_death": (TODAY - timedelta(days=2)).isoformat(),
        }
        for i, w in enumerate(women[:2])
    ]
    records.append(
        {
            "ref": "birth",
            "kind": "member_birth",
            "household_id": women[2]["id"],
            "member": {
                "name": "Zara",
                "gender": "female",
                "date_of_birth": (TODAY - timedelta(days=5)).isoformat(),
                "relationship": "daughter",
            },
        }
    )
    records += [
        {
            "ref": f"richer{i}",
            "kind": "household_survey",
            "household_id": h["id"],
            "indicators": {
                "rooms": 9,
                "toilet_type": "flush_sewer",
                "electrical": ["refrigerator", "air_conditioner", "television"],
                "gas": ["geyser"],
                "kitchen": ["cooking_range"],
                "cows": 6,
                "land_acre": 20,
            },
        }
        for i, h in enumerate(poor)
    ]
    records += [
        {
            "ref": f"poorer{i}",
            "kind": "household_survey",
            "household_id": h["id"],
            "indicators": {
                "rooms": 1,
                "toilet_type": "none",
                "electrical": [],
                "gas": [],
                "kitchen": [],
                "cows": 0,
                "goats": 0,
                "buffaloes": 0,
                "land_acre": 0,
                "land_kanal": 0,
            },
        }
        for i, h in enumerate(rich)
    ]
    to = geo[1]
    records.append(
        {
            "ref": "address",
            "kind": "address_change",
            "household_id": geo[0]["id"],
            "address": "House 7, Canal Road",
            "district": to["district_code"],
            "tehsil": to["tehsil_code"],
            "union_council": to["union_council_code"],
        }
    )
    records.append(
        {
            "ref": "marriage",
            "kind": "member_update",
            "cnic": single["cnic"],
            "marital_status": "married",
        }
    )
    records.append(
        {
            "ref": "move",
            "kind": "member_move",
            "cnic": mover["cnic"],
            "to_household_id": rich[0]["id"],
            "relationship": "other_relative",
        }
    )
    records.append(
        {
            "ref": "new",
            "kind": "new_household",
            "household": {
                "address": "Plot 3",
                "district": to["district_code"],
                "tehsil": to["tehsil_code"],
                "union_council": to["union_council_code"],
                "surveyed_on": TODAY.isoformat(),
                "rooms": 1,
                "toilet_type": "none",
                "members": [
                    {
                        "name": "Rashida",
                        "gender": "female",
                        "date_of_birth": "1985-02-03",
                        "relationship": "head",
                        "marital_status": "widowed",
                        "cnic": "61101" + str(uuid.uuid4().int)[:7] + "2",
                    }
                ],
            },
        }
    )
    return records


@pytest.fixture(scope="module")
async def history(
    c: httpx.AsyncClient, url: str, db: asyncpg.Connection, reader: dict[str, str]
) -> dict[str, Any]:
    """The lists read at T0, then a batch and a new rule version, then the lists again."""
    before = await _read_all(c, reader, {})
    t0: datetime = await db.fetchval("SELECT clock_timestamp()")
    # Every change below is dated after T0: wait until the database clock has moved on.
    while await db.fetchval("SELECT clock_timestamp() <= $1", t0):
        pass
    records = await _batch_records(db)
    partner = await updates_partner(url, c, "As-of Updates")
    body = await send(c, partner, records)
    outcomes = {r["ref"]: r["outcome"] for r in body["results"]}
    assert set(outcomes.values()) == {"applied"}, body
    staff = await staff_by_role(c, url, prefix="As-of")
    r = await c.post(
        "/v1/staff/programmes/cash-transfer/versions",
        json={"rule": {"unit": "family", "cut_off": 20}, "note": "budget cut"},
        headers=staff["officer"],
    )
    assert r.status_code == 201, r.text
    after = await _read_all(c, reader, {})
    return {"t0": t0, "before": before, "after": after}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


async def test_as_of_before_a_batch_equals_the_list_read_before_it(
    c: httpx.AsyncClient, reader: dict[str, str], history: dict[str, Any]
) -> None:
    before, after = history["before"], history["after"]
    # The batch and the rule changed every list: reading today's data would not pass.
    for i in range(len(READS)):
        assert before[f"page{i}"] != after[f"page{i}"], READS[i]
        assert before[f"snap{i}"] == {None}
    past = await _read_all(c, reader, {"as_of": _iso(history["t0"])})
    for i in range(len(READS)):
        assert past[f"page{i}"] == before[f"page{i}"], READS[i]
        # Every page of the walk carries one snapshot id.
        (snap,) = past[f"snap{i}"]
        assert isinstance(snap, str)
        assert snap.startswith("snap_")
    # Streams (NDJSON, CSV) too, with the snapshot id as a header: the JSON one.
    for accept in ("application/x-ndjson", "text/csv"):
        for i in (1, 3):
            text, snap = past[f"{accept}{i}"]
            assert text == before[f"{accept}{i}"][0], (accept, READS[i])
            assert snap == next(iter(past[f"snap{i}"]))
    rows = list(csv.DictReader(io.StringIO(past["text/csv1"][0])))
    assert rows
    assert "household_composition" in rows[0]
    lines = [orjson.loads(x) for x in past["application/x-ndjson3"][0].splitlines()]
    assert lines == before["page3"]


async def test_small_as_of_pages_join_up_to_the_list_read_before(
    c: httpx.AsyncClient, reader: dict[str, str], history: dict[str, Any]
) -> None:
    """A page cuts the unchanged households and the ones rebuilt from history to its limit
    separately (the rebuild walks ids from the cursor and stops): with pages of two, the
    changed households fall on every side of page boundaries, and the walk must still be
    the list as it was read before the batch."""
    at = _iso(history["t0"])
    for i in (2, 3):
        path, params = READS[i]
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            q = {**params, "limit": 2, **({"cursor": cursor} if cursor else {"as_of": at})}
            r = await c.get(path, params=q, headers=reader)
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["items"]) <= 2
            items += body["items"]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert items == history["before"][f"page{i}"], READS[i]
        assert items != history["after"][f"page{i}"], READS[i]


async def test_snapshot_ids_are_stable_and_distinct(
    c: httpx.AsyncClient, reader: dict[str, str], history: dict[str, Any], db: asyncpg.Connection
) -> None:
    t0 = history["t0"]

    async def snap(path: str, params: dict[str, Any]) -> str:
        r = await c.get(path, params={"limit": 5, **params}, headers=reader)
        assert r.status_code == 200, r.text
        value: str = r.json()["snapshot"]
        assert datetime.fromisoformat(r.json()["as_of"]) == datetime.fromisoformat(params["as_of"])
        return value

    same = {"as_of": _iso(t0), "score_max": 30}
    first = await snap(BENEFICIARIES, same)
    # The same instant written with another offset is the same instant.
    written = (t0.astimezone(UTC) + timedelta(hours=5)).replace(tzinfo=None).isoformat()
    assert await snap(BENEFICIARIES, {**same, "as_of": written + "+05:00"}) == first
    assert await snap(BENEFICIARIES, same) == first
    later = t0 + timedelta(milliseconds=1)
    assert await snap(BENEFICIARIES, {**same, "as_of": _iso(later)}) != first
    assert await snap(BENEFICIARIES, {**same, "score_max": 31}) != first
    assert await snap(PROGRAMME, same) != first
    now: datetime = await db.fetchval("SELECT clock_timestamp()")
    assert await snap(BENEFICIARIES, {**same, "as_of": _iso(now)}) != first


async def test_programme_as_of_uses_the_rule_version_in_force_then(
    c: httpx.AsyncClient, reader: dict[str, str], history: dict[str, Any], db: asyncpg.Connection
) -> None:
    r = await c.get(PROGRAMME, params={"as_of": _iso(history["t0"]), "limit": 1000}, headers=reader)
    assert r.status_code == 200
    entries = await db.fetch(
        "SELECT filters FROM audit_log WHERE endpoint LIKE $1 ORDER BY id DESC LIMIT 1",
        "/v1/partner/programmes/%",
    )
    logged = orjson.loads(entries[0]["filters"])
    assert str(logged["rule_version"]) == "1"
    assert logged["snapshot"] == r.json()["snapshot"]
    assert logged["as_of"].startswith(history["t0"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M"))
    r = await c.get(PROGRAMME, params={"limit": 1}, headers=reader)
    logged = orjson.loads(
        await db.fetchval(
            "SELECT filters FROM audit_log WHERE endpoint LIKE $1 ORDER BY id DESC LIMIT 1",
            "/v1/partner/programmes/%",
        )
    )
    assert str(logged["rule_version"]) == "2"
    assert "as_of" not in logged


async def test_bad_instants_and_cursors_are_422(
    c: httpx.AsyncClient, reader: dict[str, str], history: dict[str, Any], db: asyncpg.Connection
) -> None:
    began: datetime = await db.fetchval("SELECT min(created_at) FROM households")
    future = datetime.now(UTC) + timedelta(days=1)
    cases = [
        (_iso(future), "in the future"),
        (_iso(began - timedelta(seconds=1)), "before the registry existed"),
        ("2026-11-30T09:00:00", "no UTC offset"),
        ("yesterday", "not an ISO 8601 date-time"),
    ]
    for path in (BENEFICIARIES, PROGRAMME):
        for value, message in cases:
            for accept in ("application/json", "application/x-ndjson"):
                r = await c.get(path, params={"as_of": value}, headers={**reader, "Accept": accept})
                assert r.status_code == 422, (path, value, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert message in r.json()["detail"], r.text
    # A cursor keeps its instant: another as_of, or none for a plain cursor, is refused.
    t0 = _iso(history["t0"])
    r = await c.get(BENEFICIARIES, params={"as_of": t0, "limit": 2}, headers=reader)
    cursor = r.json()["next_cursor"]
    r = await c.get(BENEFICIARIES, params={"cursor": cursor, "limit": 2}, headers=reader)
    assert r.status_code == 200
    assert r.json()["as_of"] is not None
    later = _iso(history["t0"] + timedelta(seconds=1))
    r = await c.get(BENEFICIARIES, params={"cursor": cursor, "as_of": later}, headers=reader)
    assert r.status_code == 422
    assert "the cursor continues" in r.json()["detail"]
    plain = (await c.get(BENEFICIARIES, params={"limit": 2}, headers=reader)).json()
    r = await c.get(
        BENEFICIARIES, params={"cursor": plain["next_cursor"], "as_of": t0}, headers=reader
    )
    assert r.status_code == 422
    assert "without as_of" in r.json()["detail"]


async def test_an_instant_is_refused_until_writes_that_began_before_it_end(
    c: httpx.AsyncClient, reader: dict[str, str], url: str
) -> None:
    # A writing transaction (it holds a transaction id) that began before the instant:
    # its changes will be dated before it, so the registry as of then is not final yet.
    # It runs as the service's role, as every writer of the registry does (the service's
    # ingest workers, `nser worker`, `nser pmt recompute`): PostgreSQL shows a role the
    # transactions of its own sessions.
    writer = await asyncpg.connect(service_url(url))
    try:
        tx = writer.transaction()
        await tx.start()
        await writer.fetchval("SELECT txid_current()")
        # An instant after the transaction began, on the database's own clock.
        at = _iso(await writer.fetchval("SELECT clock_timestamp()"))
        r = await c.get(BENEFICIARIES, params={"as_of": at, "limit": 2}, headers=reader)
        assert r.status_code == 422, r.text
        assert "not final yet" in r.json()["detail"]
        await tx.rollback()
        r = await c.get(BENEFICIARIES, params={"as_of": at, "limit": 2}, headers=reader)
        assert r.status_code == 200, r.text
    finally:
        await writer.close()
