"""Programmes over HTTP: staff manage rules, partners ask eligibility and the eligible list.

A module database of its own (500 households): the tests set scores and disabilities by
direct SQL fixtures, which must not leak into the shared session registry.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from conftest import fresh_database, make_settings, open_client
from partner_helpers import bearer, create_partner, get_token
from request_helpers import staff_by_role

from app.services.programmes.demo import ensure_demo_programmes

LIVING = "m.household_id = h.id AND m.deceased_on IS NULL"
EVER_MARRIED_WOMAN = (
    "m.gender = 'female' AND m.marital_status IN ('married','divorced','separated','widowed') "
    "AND m.date_of_birth <= current_date - interval '18 years'"
)
DISABLED = "cardinality(m.disabilities) > 0"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=500, seed=12) as u:
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
async def partner(c: httpx.AsyncClient, url: str) -> dict[str, Any]:
    made = create_partner(url, categories="iii,iv,v", programmes="cash-transfer,education-cct")
    token = await get_token(c, made["client_id"], made["client_secret"])
    return {**made, "headers": bearer(token)}


@pytest.fixture(scope="module")
async def staff(c: httpx.AsyncClient, url: str) -> dict[str, dict[str, str]]:
    return await staff_by_role(c, url, prefix="Programmes")


@pytest.fixture(scope="module")
async def pair(db: asyncpg.Connection) -> dict[str, str]:
    """Two households at 35 holding a living ever-married woman with a CNIC: one with a
    disabled member, one with none (direct SQL fixture). Returns the women's CNICs."""
    rows = await db.fetch(
        f"""SELECT DISTINCT ON (h.id) h.id, m.cnic FROM households h JOIN members m ON {LIVING}
             WHERE {EVER_MARRIED_WOMAN} AND m.cnic IS NOT NULL ORDER BY h.id, m.id LIMIT 2"""
    )
    disabled, plain = rows
    await db.execute(
        "UPDATE households SET pmt_score = 35 WHERE id = ANY($1::bigint[])",
        [disabled["id"], plain["id"]],
    )
    await db.execute(
        "UPDATE members SET disabilities = '{}' WHERE household_id = ANY($1::bigint[])",
        [disabled["id"], plain["id"]],
    )
    await db.execute(
        """UPDATE members SET disabilities = '{lower_limb}'
            WHERE id = (SELECT min(id) FROM members WHERE household_id = $1
                          AND deceased_on IS NULL)""",
        disabled["id"],
    )
    return {"disabled": disabled["cnic"], "plain": plain["cnic"]}


def eligibility_url(programme: str, cnic: str) -> str:
    return f"/v1/partner/programmes/{programme}/eligibility/{cnic}"


async def test_disabled_member_at_35_is_eligible_at_37_the_other_is_not(
    c: httpx.AsyncClient, partner: dict[str, Any], pair: dict[str, str]
) -> None:
    r = await c.get(eligibility_url("cash-transfer", pair["disabled"]), headers=partner["headers"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["eligible"] is True
    assert body["clause"] == "raised_cut_off:has_disabled_member"
    assert (body["pmt_score"], body["cut_off"]) == (35.0, 37.0)
    assert body["unit"] == "family"
    assert body["recipient"] is True
    assert body["families"] >= 1

    r = await c.get(eligibility_url("cash-transfer", pair["plain"]), headers=partner["headers"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["eligible"] is False
    assert body["clause"] == "above_cut_off"
    assert (body["pmt_score"], body["cut_off"]) == (35.0, 32.0)


async def _walk(
    c: httpx.AsyncClient, path: str, headers: dict[str, str], params: dict[str, Any]
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = {**params, "limit": 50, **({"cursor": cursor} if cursor else {})}
        r = await c.get(path, params=q, headers=headers)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


async def test_eligible_list_equals_an_independent_query(
    c: httpx.AsyncClient, partner: dict[str, Any], db: asyncpg.Connection, pair: dict[str, str]
) -> None:
    path = "/v1/partner/programmes/cash-transfer/beneficiaries"
    expected = [
        r["id"]
        for r in await db.fetch(
            f"""SELECT h.id FROM households h
                 WHERE EXISTS (SELECT 1 FROM members m WHERE {LIVING} AND {EVER_MARRIED_WOMAN})
                   AND (h.pmt_score <= 32 OR (h.pmt_score <= 37 AND EXISTS (
                        SELECT 1 FROM members m WHERE {LIVING} AND {DISABLED})))
                 ORDER BY h.id"""
        )
    ]
    assert len(expected) > 20
    walked = await _walk(c, path, partner["headers"], {})
    assert [int(h["household_id"]) for h in walked] == expected
    # The family unit: each ever-married woman is marked the recipient, counted per household.
    recipients = {
        (r["household_id"], r["id"])
        for r in await db.fetch(
            f"""SELECT m.household_id, m.id FROM members m JOIN households h ON {LIVING}
                 WHERE {EVER_MARRIED_WOMAN} AND h.id = ANY($1::bigint[])""",
            expected,
        )
    }
    marked = {
        (int(h["household_id"]), int(m["member_id"]))
        for h in walked
        for m in h["members"]
        if m["recipient"]
    }
    assert marked == recipients

    # Streams are the same list; the beneficiary filters apply on top of the rule.
    r = await c.get(path, headers={**partner["headers"], "Accept": "application/x-ndjson"})
    streamed = [orjson.loads(line) for line in r.content.splitlines() if line]
    assert streamed == walked
    r = await c.get(path, headers={**partner["headers"], "Accept": "text/csv"})
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert "recipient" in rows[0]
    assert len({row["household_id"] for row in rows}) == len(expected)
    district = await db.fetchval("SELECT district_code FROM households WHERE id = $1", expected[0])
    in_district = await _walk(c, path, partner["headers"], {"district": district, "score_min": 10})
    want = await db.fetch(
        "SELECT id FROM households WHERE id = ANY($1::bigint[]) AND district_code = $2 "
        "AND pmt_score >= 10 ORDER BY id",
        expected,
        district,
    )
    assert [int(h["household_id"]) for h in in_district] == [r["id"] for r in want]


async def test_education_programme_requires_a_school_age_child(
    c: httpx.AsyncClient, partner: dict[str, Any], db: asyncpg.Connection
) -> None:
    walked = await _walk(
        c, "/v1/partner/programmes/education-cct/beneficiaries", partner["headers"], {}
    )
    expected = await db.fetch(
        f"""SELECT h.id FROM households h WHERE h.pmt_score <= 32 AND EXISTS (
               SELECT 1 FROM members m WHERE {LIVING}
                  AND date_part('year', age(current_date, m.date_of_birth)) >= 5
                  AND date_part('year', age(current_date, m.date_of_birth)) < 17)
            ORDER BY h.id"""
    )
    assert [int(h["household_id"]) for h in walked] == [r["id"] for r in expected]
    assert walked
    assert "recipient" not in walked[0]["members"][0]
    # A household with no such child answers which clause refused it. Its score is set
    # below the cut-off here, so that the child is the only thing it lacks.
    row = await db.fetchrow(
        f"""SELECT h.id, m.cnic FROM households h JOIN members m ON {LIVING}
             WHERE m.cnic IS NOT NULL AND h.pmt_score IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM members m WHERE {LIVING}
                  AND date_part('year', age(current_date, m.date_of_birth)) >= 5
                  AND date_part('year', age(current_date, m.date_of_birth)) < 17)
             ORDER BY h.pmt_score, h.id LIMIT 1"""
    )
    assert row is not None, "no household without a school-age child in the registry"
    await db.execute(
        "UPDATE households SET pmt_score = least(pmt_score, 30) WHERE id = $1", row["id"]
    )
    r = await c.get(eligibility_url("education-cct", row["cnic"]), headers=partner["headers"])
    assert r.status_code == 200, r.text
    assert r.json()["eligible"] is False
    assert r.json()["clause"] == "requires:has_school_age_child"


async def test_partners_read_only_the_programmes_their_agreement_names(
    c: httpx.AsyncClient, url: str, partner: dict[str, Any], pair: dict[str, str]
) -> None:
    r = await c.get("/v1/partner/programmes", headers=partner["headers"])
    assert [p["code"] for p in r.json()["items"]] == ["cash-transfer", "education-cct"]
    programme_id = r.json()["items"][0]["programme_id"]
    r = await c.get(f"/v1/partner/programmes/{programme_id}", headers=partner["headers"])
    assert r.status_code == 200
    assert r.json()["rule"]["raised_cut_offs"] == [{"when": "has_disabled_member", "cut_off": 37.0}]

    other = create_partner(url, categories="iii,iv")
    headers = bearer(await get_token(c, other["client_id"], other["client_secret"]))
    assert (await c.get("/v1/partner/programmes", headers=headers)).json()["items"] == []
    for path in (
        "/v1/partner/programmes/cash-transfer",
        eligibility_url("cash-transfer", pair["disabled"]),
        "/v1/partner/programmes/cash-transfer/beneficiaries",
    ):
        r = await c.get(path, headers=headers)
        assert r.status_code == 404, (path, r.text)

    # Named, but without beneficiary data (category iv/v): 403 for eligibility and lists.
    scores_only = create_partner(url, categories="iii", programmes="cash-transfer")
    headers = bearer(await get_token(c, scores_only["client_id"], scores_only["client_secret"]))
    assert (await c.get("/v1/partner/programmes/cash-transfer", headers=headers)).status_code == 200
    r = await c.get(eligibility_url("cash-transfer", pair["disabled"]), headers=headers)
    assert r.status_code == 403


async def test_eligibility_is_audited_with_a_masked_cnic(
    c: httpx.AsyncClient, partner: dict[str, Any], db: asyncpg.Connection, pair: dict[str, str]
) -> None:
    r = await c.get(eligibility_url("cash-transfer", pair["plain"]), headers=partner["headers"])
    assert r.status_code == 200
    row = await db.fetchrow(
        "SELECT endpoint, filters, households FROM audit_log WHERE client_id = $1 "
        "ORDER BY id DESC LIMIT 1",
        partner["client_id"],
    )
    assert row["endpoint"] == "/v1/partner/programmes/{programme_id}/eligibility/{cnic}"
    filters = orjson.loads(row["filters"])
    assert pair["plain"] not in row["filters"]
    assert filters["cnic"].endswith(pair["plain"][-1])
    assert filters["rule_version"] == "1"
    assert row["households"] == 1
    await c.get("/v1/partner/programmes/cash-transfer/beneficiaries", headers=partner["headers"])
    row = await db.fetchrow(
        "SELECT endpoint, filters FROM audit_log WHERE client_id = $1 ORDER BY id DESC LIMIT 1",
        partner["client_id"],
    )
    assert row["endpoint"] == "/v1/partner/programmes/{programme_id}/beneficiaries (page)"
    assert "programme" in orjson.loads(row["filters"])


async def test_staff_create_validate_and_version_a_rule(
    c: httpx.AsyncClient,
    db: asyncpg.Connection,
    staff: dict[str, dict[str, str]],
    partner: dict[str, Any],
    pair: dict[str, str],
) -> None:
    org = str(await db.fetchval("SELECT id FROM organizations ORDER BY created_at LIMIT 1"))
    body = {
        "code": "pilot",
        "name": "Pilot transfer",
        "organization_id": org,
        "rule": {
            "cut_off": 32,
            "raised_cut_offs": [{"when": "has_disabled_member", "cut_off": 37}],
        },
    }
    assert (
        await c.post("/v1/staff/programmes", json=body, headers=staff["committee"])
    ).status_code == 403
    bad_rules = [
        {"cut_off": "32"},
        {"cut_off": 32, "raised_cut_offs": [{"when": "has_disabled_member", "cut_off": 30}]},
        {"cut_off": 32, "requires": ["has_unicorn"]},
        {"cut_off": 32, "geography": ["PK999"]},
        {"cut_off": 32.123},
        {"cut_off": 32, "unit": "village"},
        {"cut_off": 32, "extra": 1},
    ]
    for rule in bad_rules:
        r = await c.post(
            "/v1/staff/programmes", json={**body, "rule": rule}, headers=staff["officer"]
        )
        assert r.status_code == 422, (rule, r.text)
    assert await db.fetchval("SELECT count(*) FROM programmes WHERE code = 'pilot'") == 0

    r = await c.post("/v1/staff/programmes", json=body, headers=staff["officer"])
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["version"] == 1
    assert len(created["versions"]) == 1
    r = await c.post("/v1/staff/programmes", json=body, headers=staff["admin"])
    assert r.status_code == 409

    agreement = partner["agreement_id"]
    ref = created["programme_id"]
    r = await c.put(f"/v1/staff/programmes/{ref}/agreements/{agreement}", headers=staff["officer"])
    assert r.status_code == 204
    r = await c.get(eligibility_url("pilot", pair["plain"]), headers=partner["headers"])
    assert (r.json()["eligible"], r.json()["rule_version"]) == (False, 1)

    # Version 2 raises the base cut-off to 36: the household at 35 is now in, by cut_off.
    r = await c.post(
        "/v1/staff/programmes/pilot/versions",
        json={"rule": {"cut_off": 36}, "note": "budget raised"},
        headers=staff["officer"],
    )
    assert r.status_code == 201, r.text
    assert [v["version"] for v in r.json()["versions"]] == [1, 2]
    r = await c.get(eligibility_url("pilot", pair["plain"]), headers=partner["headers"])
    answer = r.json()
    assert (answer["eligible"], answer["clause"], answer["cut_off"]) == (True, "cut_off", 36.0)
    assert (answer["rule_version"], answer["unit"], answer["recipient"]) == (2, "household", None)
    listed = await c.get("/v1/staff/programmes", headers=staff["admin"])
    assert "pilot" in [p["code"] for p in listed.json()["items"]]
    r = await c.delete(
        f"/v1/staff/programmes/pilot/agreements/{agreement}", headers=staff["officer"]
    )
    assert r.status_code == 204
    r = await c.get(eligibility_url("pilot", pair["plain"]), headers=partner["headers"])
    assert r.status_code == 404
    actions = await db.fetch(
        "SELECT endpoint FROM audit_log WHERE endpoint LIKE '%/v1/staff/programmes%' ORDER BY id"
    )
    assert len(actions) == 4
