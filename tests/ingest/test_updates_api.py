"""POST/GET /v1/partner/updates end to end: every kind, every check, idempotency, dry run."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from partner_helpers import create_staff, get_token
from updates_helpers import checksum, headers, send, updates_partner

from app.services.ingest import store as ingest_store
from app.services.pmt import model as pmt

TODAY = date.today()


@pytest.fixture(scope="module")
async def partner(seeded_url: str, client: httpx.AsyncClient) -> dict[str, str]:
    return await updates_partner(seeded_url, client, "Updates Programme")


async def _households(db: asyncpg.Connection, n: int, offset: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        """SELECT h.*, (SELECT m.cnic FROM members m WHERE m.household_id = h.id
                          AND m.cnic IS NOT NULL AND m.relationship <> 'head'
                          AND m.deceased_on IS NULL ORDER BY m.id LIMIT 1) AS member_cnic,
                  (SELECT m.cnic FROM members m WHERE m.household_id = h.id
                          AND m.relationship = 'head' LIMIT 1) AS head_cnic
             FROM households h
            WHERE EXISTS (SELECT 1 FROM members m WHERE m.household_id = h.id
                             AND m.cnic IS NOT NULL AND m.relationship <> 'head'
                             AND m.deceased_on IS NULL)
            ORDER BY h.id OFFSET $2 LIMIT $1""",
        n,
        offset,
    )
    return rows


def _score(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["ref"]: r for r in body["results"]}


async def test_every_kind_applies_and_is_visible(
    client: httpx.AsyncClient, partner: dict[str, str], db: asyncpg.Connection
) -> None:
    hh = await _households(db, 8, 0)
    geo = hh[2]
    new_cnic = "61101" + uuid.uuid4().int.__str__()[:7] + "1"
    records = [
        {
            "ref": "birth",
            "kind": "member_birth",
            "household_id": hh[0]["id"],
            "member": {
                "name": "Ayesha",
                "gender": "female",
                "date_of_birth": (TODAY - timedelta(days=3)).isoformat(),
                "relationship": "other_relative",
            },
        },
        {
            "ref": "death",
            "kind": "member_death",
            "cnic": hh[1]["member_cnic"],
            "date_of_death": (TODAY - timedelta(days=1)).isoformat(),
        },
        {
            "ref": "update",
            "kind": "member_update",
            "cnic": hh[3]["member_cnic"],
            "education": "postgraduate",
            "employment": "employed",
        },
        {
            "ref": "address",
            "kind": "address_change",
            "household_id": geo["id"],
            "expected_version": geo["version"],
            "address": "House 1, Street 2",
            "district": geo["district_code"],
            "tehsil": geo["tehsil_code"],
            "union_council": geo["union_council_code"],
        },
        {
            "ref": "phone",
            "kind": "phone_change",
            "household_id": hh[4]["id"],
            "phone": "0300 1234567",
        },
        {
            "ref": "survey",
            "kind": "household_survey",
            "household_id": hh[5]["id"],
            "indicators": {
                "rooms": 9,
                "toilet_type": "flush_sewer",
                "electrical": ["refrigerator", "air_conditioner", "television"],
                "gas": ["geyser"],
                "kitchen": ["cooking_range"],
                "cows": 6,
                "land_acre": 20,
            },
        },
        {
            "ref": "new",
            "kind": "new_household",
            "household": {
                "address": "Plot 9",
                "district": geo["district_code"],
                "tehsil": geo["tehsil_code"],
                "union_council": geo["union_council_code"],
                "surveyed_on": TODAY.isoformat(),
                "phone": "+923331234567",
                "rooms": 1,
                "toilet_type": "none",
                "members": [
                    {
                        "name": "Bilal",
                        "gender": "male",
                        "date_of_birth": "1990-02-03",
                        "relationship": "head",
                        "marital_status": "married",
                        "cnic": new_cnic,
                    },
                    {
                        "name": "Sana",
                        "gender": "female",
                        "date_of_birth": "1993-04-05",
                        "relationship": "spouse",
                        "marital_status": "married",
                    },
                ],
            },
        },
        {
            "ref": "move",
            "kind": "member_move",
            "cnic": hh[6]["member_cnic"],
            "to_household_id": hh[7]["id"],
            "relationship": "other_relative",
        },
    ]
    before_score = await db.fetchval("SELECT pmt_score FROM households WHERE id = $1", hh[5]["id"])
    body = await send(client, partner, records)
    results = _score(body)
    assert {r: v["outcome"] for r, v in results.items()} == dict.fromkeys(results, "applied"), body
    assert body["counts"]["applied"] == 8
    # The in-memory re-score is final: the SQL re-score finds nothing left to change.
    touched = {r["household_id"] for r in results.values()} | {hh[6]["id"]}
    async with db.transaction():  # (an assertion failure rolls it back)
        assert await pmt.rescore_households(db, sorted(touched)) == 0

    born = await db.fetchrow(
        "SELECT name, household_id FROM members WHERE id = $1", results["birth"]["member_id"]
    )
    assert tuple(born) == ("Ayesha", hh[0]["id"])
    assert await db.fetchval(
        "SELECT deceased_on FROM members WHERE cnic = $1", hh[1]["member_cnic"]
    ) == TODAY - timedelta(days=1)
    # A deceased member is no longer found by the public score look-up.
    r = await client.get(f"/v1/public/scores/{hh[1]['member_cnic']}")
    assert r.status_code == 404
    assert tuple(
        await db.fetchrow(
            "SELECT education, employment FROM members WHERE cnic = $1", hh[3]["member_cnic"]
        )
    ) == ("postgraduate", "employed")
    addr = await db.fetchrow("SELECT address, version FROM households WHERE id = $1", geo["id"])
    assert tuple(addr) == ("House 1, Street 2", geo["version"] + 1)
    assert (
        await db.fetchval("SELECT phone FROM households WHERE id = $1", hh[4]["id"])
        == "+923001234567"
    )
    survey = await db.fetchrow(
        "SELECT rooms, pmt_score, poverty_band, version FROM households WHERE id = $1", hh[5]["id"]
    )
    assert survey["rooms"] == 9
    assert survey["pmt_score"] > before_score
    r = await client.get(f"/v1/public/scores/{hh[5]['head_cnic']}")
    assert r.status_code == 200
    assert r.json()["poverty_band"] == survey["poverty_band"]
    assert float(r.json()["pmt_score"]) == float(survey["pmt_score"])
    r = await client.get(f"/v1/public/scores/{new_cnic}")
    assert r.status_code == 200, r.text
    assert (
        await db.fetchval("SELECT household_id FROM members WHERE cnic = $1", hh[6]["member_cnic"])
        == hh[7]["id"]
    )

    # Every change left history with the batch and the partner's ref.
    rows = await db.fetch(
        "SELECT ref, change FROM household_history WHERE batch_id = $1 ORDER BY id",
        body["batch_id"],
    )
    assert {r["ref"] for r in rows} == set(results)
    staff = create_staff(client_url(client))
    token = await get_token(client, staff["client_id"], staff["client_secret"])
    r = await client.get(
        f"/v1/households/{geo['id']}/history", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    item = r.json()["items"][-1]
    assert (item["source"], item["batch_id"], item["ref"]) == (
        "partner_batch",
        body["batch_id"],
        "address",
    )
    assert item["after"]["address"] == "House 1, Street 2"
    r = await client.get(f"/v1/households/{geo['id']}/history", headers=headers(partner))
    assert r.status_code == 403


def client_url(client: httpx.AsyncClient) -> str:
    url: str = client._transport.app.state.settings.database_url  # type: ignore[attr-defined]
    return url


async def test_every_quality_check_rejects_with_its_reason(
    client: httpx.AsyncClient, partner: dict[str, str], db: asyncpg.Connection
) -> None:
    hh = await _households(db, 6, 20)
    h0 = hh[0]
    mother = await db.fetchrow(
        "SELECT id, date_of_birth FROM members WHERE household_id = $1 AND gender = 'female'"
        " ORDER BY date_of_birth LIMIT 1",
        h0["id"],
    )
    taken = await db.fetchval("SELECT cnic FROM members WHERE cnic IS NOT NULL LIMIT 1")
    other_district = await db.fetchval(
        "SELECT code FROM geo_units WHERE level = 'district' AND code <> $1 LIMIT 1",
        h0["district_code"],
    )
    future = (TODAY + timedelta(days=30)).isoformat()
    geo = {
        "district": h0["district_code"],
        "tehsil": h0["tehsil_code"],
        "union_council": h0["union_council_code"],
    }
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {"kind": "phone_change", "household_id": "abc", "phone": "03001234567"},
            "rejected",
            "household_id: Input should be a valid integer",
        ),
        (
            {"kind": "member_death", "cnic": "3520-1", "date_of_death": "2020-01-01"},
            "rejected",
            "cnic: a CNIC is 13 digits",
        ),
        (
            {"kind": "member_death", "cnic": "9999999999999", "date_of_death": "2020-01-01"},
            "rejected",
            "unknown CNIC 99999-*******-9",
        ),
        (
            {"kind": "phone_change", "household_id": 987654321, "phone": "03001234567"},
            "rejected",
            "unknown household 987654321",
        ),
        (
            {"kind": "member_death", "cnic": h0["member_cnic"], "date_of_death": future},
            "rejected",
            f"date_of_death {future} is in the future",
        ),
        (
            {"kind": "member_death", "cnic": h0["member_cnic"], "date_of_death": "1900-01-01"},
            "rejected",
            "date_of_death 1900-01-01 is before the member's date of birth",
        ),
        (
            {
                "kind": "member_birth",
                "household_id": h0["id"],
                "mother_member_id": mother["id"],
                "member": {
                    "name": "X",
                    "gender": "male",
                    "relationship": "son",
                    "date_of_birth": (
                        mother["date_of_birth"] + timedelta(days=365 * 5)
                    ).isoformat(),
                },
            },
            "rejected",
            "is not at least 12 years older than a child born on",
        ),
        (
            {
                "kind": "member_birth",
                "household_id": h0["id"],
                "member": {
                    "name": "X",
                    "gender": "male",
                    "relationship": "son",
                    "date_of_birth": future,
                },
            },
            "rejected",
            f"member date_of_birth {future} is in the future",
        ),
        (
            {"kind": "member_update", "cnic": h0["member_cnic"], "new_cnic": taken},
            "rejected",
            "already",
        ),
        (
            {
                "kind": "new_household",
                "household": {
                    "address": "a",
                    **geo,
                    "surveyed_on": TODAY.isoformat(),
                    "members": [
                        {
                            "name": "Q",
                            "gender": "male",
                            "date_of_birth": "1980-01-01",
                            "relationship": "head",
                            "marital_status": "married",
                            "cnic": taken,
                        }
                    ],
                },
            },
            "rejected",
            "is already registered",
        ),
        (
            {
                "kind": "new_household",
                "household": {
                    "address": "a",
                    **geo,
                    "surveyed_on": TODAY.isoformat(),
                    "members": [
                        {
                            "name": "Q",
                            "gender": "male",
                            "date_of_birth": "2020-01-01",
                            "relationship": "head",
                            "marital_status": "married",
                        }
                    ],
                },
            },
            "rejected",
            "cannot be married (minimum 14)",
        ),
        (
            {
                "kind": "member_update",
                "cnic": h0["member_cnic"],
                "marital_status": "widowed",
                "household_id": h0["id"],
            },
            "applied",
            "",
        ),
        (
            {
                "kind": "address_change",
                "household_id": h0["id"],
                "address": "b",
                **{**geo, "district": other_district},
            },
            "rejected",
            f"tehsil '{h0['tehsil_code']}' is not inside district '{other_district}'",
        ),
        (
            {
                "kind": "address_change",
                "household_id": h0["id"],
                "address": "b",
                **{**geo, "union_council": "NOPE"},
            },
            "rejected",
            "unknown union_council code 'NOPE'",
        ),
        (
            {"kind": "phone_change", "household_id": h0["id"], "phone": "+441234567890"},
            "rejected",
            "is not a Pakistani mobile number",
        ),
        (
            {"kind": "household_survey", "household_id": h0["id"], "indicators": {"cows": -1}},
            "rejected",
            "indicators.cows: Input should be greater than or equal to 0",
        ),
        (
            {
                "kind": "household_survey",
                "household_id": h0["id"],
                "indicators": {"toilet_type": "golden"},
            },
            "rejected",
            "indicators.toilet_type: must be one of",
        ),
        (
            {
                "kind": "phone_change",
                "household_id": h0["id"],
                "expected_version": 1,
                "phone": "03001234567",
            },
            "conflict",
            "expected_version 1 is not the household's current version",
        ),
        (
            {
                "kind": "household_survey",
                "household_id": h0["id"],
                "pmt_score": 3,
                "indicators": {"rooms": 1},
            },
            "rejected",
            "'pmt_score' is derived by the registry",
        ),
        (
            {
                "kind": "phone_change",
                "household_id": h0["id"],
                "poverty_band": "poor",
                "phone": "03001234567",
            },
            "rejected",
            "'poverty_band' is derived",
        ),
        (
            {"kind": "new_household", "household": {"id": 5}},
            "rejected",
            "'household.id' is derived",
        ),
        (
            {"kind": "member_move", "cnic": h0["head_cnic"], "to_household_id": hh[1]["id"]},
            "rejected",
            "is the head of their household; a head cannot move out",
        ),
        (
            {
                "kind": "member_birth",
                "household_id": h0["id"],
                "member": {
                    "name": "X",
                    "gender": "male",
                    "relationship": "spouse",
                    "date_of_birth": TODAY.isoformat(),
                },
            },
            "rejected",
            "a newborn cannot be spouse",
        ),
    ]
    records = [{"ref": f"c{i}", **rec} for i, (rec, _, _) in enumerate(cases)]
    body = await send(client, partner, records)
    results = _score(body)
    for i, (_, outcome, reason) in enumerate(cases):
        got = results[f"c{i}"]
        assert got["outcome"] == outcome, (i, got)
        assert any(reason in r for r in got["reasons"]) or not reason, (i, got)


async def test_kind_not_in_agreement_is_rejected_per_record(
    seeded_url: str, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    from partner_helpers import create_partner

    p = create_partner(seeded_url, name="Births only", update_kinds="member_birth")
    p["token"] = await get_token(client, p["client_id"], p["client_secret"])
    hh = await _households(db, 1, 40)
    body = await send(
        client,
        p,
        [
            {
                "ref": "a",
                "kind": "phone_change",
                "household_id": hh[0]["id"],
                "phone": "03001234567",
            },
        ],
    )
    assert body["results"][0]["outcome"] == "rejected"
    assert body["results"][0]["reasons"][0].startswith("kind 'phone_change' is not allowed")


async def test_idempotent_replay_same_batch_other_body_422_and_other_partner_404(
    seeded_url: str, client: httpx.AsyncClient, partner: dict[str, str], db: asyncpg.Connection
) -> None:
    hh = await _households(db, 1, 50)
    records = [
        {
            "ref": "r1",
            "kind": "household_survey",
            "household_id": hh[0]["id"],
            "indicators": {"goats": 7},
        }
    ]
    h = headers(partner, "replay-key")
    first = await client.post("/v1/partner/updates", json={"records": records}, headers=h)
    assert first.status_code == 202
    batch_id = first.json()["batch_id"]
    from updates_helpers import wait_done

    await wait_done(client, partner, batch_id)
    again = await client.post("/v1/partner/updates", json={"records": records}, headers=h)
    assert again.status_code == 200
    assert again.json()["batch_id"] == batch_id
    # The replay queued nothing: one batch for the key, processed once.
    stored = await db.fetch(
        "SELECT status, attempts FROM update_batches WHERE client_id = $1"
        " AND idempotency_key = 'replay-key'",
        partner["client_id"],
    )
    assert [tuple(r) for r in stored] == [("done", 1)]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM household_history"
            " WHERE household_id = $1 AND source = 'partner_batch'",
            hh[0]["id"],
        )
        == 1
    )
    assert await db.fetchval("SELECT version FROM households WHERE id = $1", hh[0]["id"]) == (
        hh[0]["version"] + 1
    )
    other = await client.post(
        "/v1/partner/updates", json={"records": records, "dry_run": True}, headers=h
    )
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"

    stranger = await updates_partner(seeded_url, client, "Stranger")
    r = await client.get(f"/v1/partner/updates/{batch_id}", headers=headers(stranger))
    assert r.status_code == 404
    # Keys are per client: the stranger may use the same key for its own batch.
    r = await client.post(
        "/v1/partner/updates",
        json={"records": records},
        headers=headers(stranger, "replay-key"),
    )
    assert r.status_code == 202
    assert r.json()["batch_id"] != batch_id


async def test_envelope_errors_store_nothing(
    client: httpx.AsyncClient, partner: dict[str, str], db: asyncpg.Connection
) -> None:
    count = await db.fetchval("SELECT count(*) FROM update_batches")
    no_key = {"Authorization": headers(partner)["Authorization"]}
    r = await client.post("/v1/partner/updates", json={"records": [{}]}, headers=no_key)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    for body in (
        b"{not json",
        b"[]",
        b'{"records": []}',
        b'{"records": 5}',
        b'{"records": [{}], "dry_run": "yes"}',
        b'{"records": [{}], "extra": 1}',
    ):
        r = await client.post(
            "/v1/partner/updates",
            content=body,
            headers={**headers(partner), "Content-Type": "application/json"},
        )
        assert r.status_code == 422, body
        assert r.headers["content-type"] == "application/problem+json"
    r = await client.post("/v1/partner/updates", json={"records": [{}]})
    assert r.status_code == 401
    assert await db.fetchval("SELECT count(*) FROM update_batches") == count


async def test_size_caps_and_concurrent_key(
    seeded_url: str, partner: dict[str, str], db: asyncpg.Connection
) -> None:
    from conftest import make_settings, open_client

    settings = make_settings(
        seeded_url, updates_max_body_bytes=2000, updates_max_records=3, in_process_workers=0
    )
    async for c in open_client(settings):
        big = {
            "records": [
                {"ref": str(i), "kind": "phone_change", "household_id": 1, "phone": "03001234567"}
                for i in range(40)
            ]
        }
        r = await c.post("/v1/partner/updates", json=big, headers=headers(partner))
        assert r.status_code == 413
        assert "NSER_UPDATES_MAX_BODY_BYTES" in r.json()["detail"]

        async def chunks() -> Any:
            for _ in range(100):
                yield b" " * 100

        r = await c.post(
            "/v1/partner/updates",
            content=chunks(),
            headers={**headers(partner), "Content-Type": "application/json"},
        )
        assert r.status_code == 413
        four = {"records": big["records"][:4]}
        r = await c.post("/v1/partner/updates", json=four, headers=headers(partner))
        assert r.status_code == 413
        assert "NSER_UPDATES_MAX_RECORDS" in r.json()["detail"]

        # A first request with this key is still being stored (it holds the key's lock).
        h = headers(partner, "slow-key")
        conn = await asyncpg.connect(seeded_url)
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1)",
                    ingest_store.lock_key(partner["client_id"], "slow-key"),
                )
                r = await c.post(
                    "/v1/partner/updates", json={"records": big["records"][:1]}, headers=h
                )
                assert r.status_code == 409
        finally:
            await conn.close()
        r = await c.post("/v1/partner/updates", json={"records": big["records"][:1]}, headers=h)
        assert r.status_code == 202


async def test_dry_run_changes_nothing(
    client: httpx.AsyncClient, partner: dict[str, str], db: asyncpg.Connection
) -> None:
    hh = await _households(db, 3, 60)
    geo = hh[0]
    records = [
        {
            "ref": "1",
            "kind": "household_survey",
            "household_id": hh[0]["id"],
            "indicators": {"rooms": 12, "electrical": ["air_conditioner"]},
        },
        {"ref": "2", "kind": "phone_change", "household_id": hh[1]["id"], "phone": "03111111111"},
        {
            "ref": "3",
            "kind": "phone_change",
            "household_id": hh[1]["id"],
            "phone": "03111111112",
            "expected_version": hh[1]["version"],
        },
        {
            "ref": "4",
            "kind": "member_death",
            "cnic": hh[2]["member_cnic"],
            "date_of_death": TODAY.isoformat(),
        },
        {
            "ref": "5",
            "kind": "new_household",
            "household": {
                "address": "x",
                "district": geo["district_code"],
                "tehsil": geo["tehsil_code"],
                "union_council": geo["union_council_code"],
                "surveyed_on": TODAY.isoformat(),
                "members": [
                    {
                        "name": "Z",
                        "gender": "female",
                        "date_of_birth": "1970-01-01",
                        "relationship": "head",
                        "marital_status": "widowed",
                    }
                ],
            },
        },
    ]
    # Let earlier tests' batches finish first: only the dry run may run in the window.
    deadline = asyncio.get_running_loop().time() + 60
    while await db.fetchval("SELECT count(*) FROM update_batches WHERE status <> 'done'"):
        assert asyncio.get_running_loop().time() < deadline, "earlier batches still running"
        await asyncio.sleep(0.1)
    before = await checksum(db)
    body = await send(client, partner, records, dry_run=True)
    assert body["dry_run"] is True
    outcomes = [r["outcome"] for r in body["results"]]
    # The third record sees the second's (simulated) version bump.
    assert outcomes == ["applied", "applied", "conflict", "applied", "applied"], body
    assert await checksum(db) == before
