"""Partner endpoints: 403 rules, a scope matrix, every beneficiaries filter vs SQL, streams."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import asyncpg
import httpx
import orjson
import pytest
from conftest import make_settings, open_client, run_cli
from partner_helpers import bearer, create_partner, get_token

URL = "/v1/partner/beneficiaries"


@pytest.fixture(scope="module")
async def pclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url, token_limits="10000/minute", partner_default_limits="100000/minute"
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def geo(db: asyncpg.Connection) -> asyncpg.Record:
    row = await db.fetchrow(
        """SELECT province_code, division_code, district_code, tehsil_code, union_council_code
             FROM households GROUP BY 1, 2, 3, 4, 5 ORDER BY count(*) DESC LIMIT 1"""
    )
    assert row is not None
    return row


@pytest.fixture(scope="module")
async def token(pclient: httpx.AsyncClient, seeded_url: str) -> str:
    p = create_partner(seeded_url, categories="iii,iv,v,vi", dimensions="education,room_count")
    return await get_token(pclient, p["client_id"], p["client_secret"])


async def _count(db: asyncpg.Connection, where: str, *args: object) -> int:
    n: int = await db.fetchval(f"SELECT count(*) FROM households h WHERE {where}", *args)
    return n


async def _walk(
    c: httpx.AsyncClient, token: str, params: dict[str, object]
) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    cursor = None
    while True:
        q = {**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}
        r = await c.get(URL, params=q, headers=bearer(token))
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def test_every_filter_matches_sql(
    pclient: httpx.AsyncClient, token: str, db: asyncpg.Connection, geo: asyncpg.Record
) -> None:
    living = "m.household_id = h.id AND m.deceased_on IS NULL"
    cases: list[tuple[dict[str, object], str, tuple[object, ...]]] = [
        ({}, "true", ()),
        ({"province": geo["province_code"]}, "province_code = $1", (geo["province_code"],)),
        ({"division": geo["division_code"]}, "division_code = $1", (geo["division_code"],)),
        ({"district": geo["district_code"]}, "district_code = $1", (geo["district_code"],)),
        ({"tehsil": geo["tehsil_code"]}, "tehsil_code = $1", (geo["tehsil_code"],)),
        (
            {"union_council": geo["union_council_code"]},
            "union_council_code = $1",
            (geo["union_council_code"],),
        ),
        ({"score_min": 30}, "pmt_score >= 30", ()),
        ({"score_max": 20.5}, "pmt_score <= 20.5", ()),
        ({"poverty_band": ["ultra_poor", "poor"]}, "poverty_band IN ('ultra_poor','poor')", ()),
        (
            {"member_type": "children"},
            f"EXISTS (SELECT 1 FROM members m WHERE {living} AND date_part('year', age(m.date_of_birth)) < 18)",  # noqa: E501
            (),
        ),
        (
            {"member_type": "adults"},
            f"EXISTS (SELECT 1 FROM members m WHERE {living} AND date_part('year', age(m.date_of_birth)) >= 18)",  # noqa: E501
            (),
        ),
        (
            {"member_type": "elderly"},
            f"EXISTS (SELECT 1 FROM members m WHERE {living} AND date_part('year', age(m.date_of_birth)) >= 65)",  # noqa: E501
            (),
        ),
        (
            {"member_type": "ever_married_women"},
            "EXISTS (SELECT 1 FROM families f WHERE f.household_id = h.id)",
            (),
        ),
        (
            {"member_type": "disabled"},
            f"EXISTS (SELECT 1 FROM members m WHERE {living} AND m.disabilities <> '{{}}')",
            (),
        ),
    ]
    for params, where, args in cases:
        items = await _walk(pclient, token, params)
        expected = await _count(db, where, *args)
        assert len(items) == expected, params
        ids = [int(str(i["household_id"])) for i in items]
        assert ids == sorted(set(ids)), params


async def test_member_type_returns_only_those_members_plus_head(
    pclient: httpx.AsyncClient, token: str, db: asyncpg.Connection
) -> None:
    r = await pclient.get(
        URL, params={"member_type": "elderly", "limit": 200}, headers=bearer(token)
    )
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items
    ids = [int(str(hh["household_id"])) for hh in items]
    rows = await db.fetch(
        """SELECT household_id, count(*) AS living,
                  count(*) FILTER (WHERE relationship = 'head'
                                      OR date_part('year', age(date_of_birth)) >= 65) AS listed
             FROM members WHERE deceased_on IS NULL AND household_id = ANY($1::bigint[])
            GROUP BY 1""",
        ids,
    )
    expected = {row["household_id"]: row for row in rows}
    for hh, household_id in zip(items, ids, strict=True):
        members = hh["members"]
        assert any(m["age"] >= 65 for m in members), household_id  # why it is listed
        assert all(m["relationship"] == "head" or m["age"] >= 65 for m in members)
        assert len(members) == expected[household_id]["listed"], household_id
    # The filter left members out: these households have more living members than listed.
    assert sum(len(hh["members"]) for hh in items) < sum(row["living"] for row in rows)


async def test_cursor_walk_equals_stream_equals_sql(
    pclient: httpx.AsyncClient, token: str, db: asyncpg.Connection, geo: asyncpg.Record
) -> None:
    params = {"province": geo["province_code"], "dimensions": "education,room_count,gender"}
    walked = await _walk(pclient, token, params)
    r = await pclient.get(
        URL, params=params, headers={**bearer(token), "Accept": "application/x-ndjson"}
    )
    assert r.status_code == 200
    streamed = [orjson.loads(line) for line in r.content.splitlines() if line]
    expected = await _count(db, "province_code = $1", geo["province_code"])
    assert walked == streamed
    assert len(streamed) == expected
    assert "room_count" in streamed[0]
    assert "education" in streamed[0]["members"][0]
    r = await pclient.get(URL, params=params, headers={**bearer(token), "Accept": "text/csv"})
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len({row["household_id"] for row in rows}) == expected
    assert len(rows) == sum(len(h["members"]) or 1 for h in streamed)


async def test_forbidden_requests(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection, geo: asyncpg.Record
) -> None:
    other = await db.fetchval(
        "SELECT district_code FROM households WHERE district_code <> $1 LIMIT 1",
        geo["district_code"],
    )
    p = create_partner(seeded_url, categories="iii,iv", geo=geo["district_code"])
    tok = await get_token(pclient, p["client_id"], p["client_secret"])
    r = await pclient.get(URL, params={"district": other}, headers=bearer(tok))
    assert r.status_code == 403
    assert other in r.json()["detail"]
    r = await pclient.get(URL, params={"dimensions": "gender"}, headers=bearer(tok))
    assert r.status_code == 403  # category v lacking
    scoped = await _walk(pclient, tok, {})
    assert len(scoped) == await _count(db, "district_code = $1", geo["district_code"])
    p2 = create_partner(seeded_url, categories="iv,v", dimensions="education")
    tok2 = await get_token(pclient, p2["client_id"], p2["client_secret"])
    r = await pclient.get(URL, params={"dimensions": "land"}, headers=bearer(tok2))
    assert r.status_code == 403
    assert "land" in r.json()["detail"]
    assert (
        await pclient.get("/v1/partner/extracts/anonymized", headers=bearer(tok2))
    ).status_code == 403
    run_cli(["partners", "suspend", p2["agreement_id"]], seeded_url)
    r = await pclient.get(URL, headers=bearer(tok2))
    assert r.status_code == 403
    assert "suspended" in r.json()["detail"]


async def test_scope_matrix(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection
) -> None:
    cnic = await db.fetchval(
        "SELECT cnic FROM members WHERE cnic IS NOT NULL AND deceased_on IS NULL LIMIT 1"
    )
    endpoints = {
        "scores:read": (f"/v1/partner/scores/{cnic}", "iii"),
        "beneficiaries:read": (URL + "?limit=1", "iv"),
        "extracts:read": ("/v1/partner/extracts/anonymized?province=PK6", "vi"),
    }
    for scope, (path, category) in endpoints.items():
        assert (await pclient.get(path)).status_code == 401
        wrong = "i" if category != "i" else "ii"
        pw = create_partner(seeded_url, categories=wrong)
        tw = await get_token(pclient, pw["client_id"], pw["client_secret"])
        assert (await pclient.get(path, headers=bearer(tw))).status_code == 403, scope
        pr = create_partner(seeded_url, categories=category)
        tr = await get_token(pclient, pr["client_id"], pr["client_secret"], scope=scope)
        assert (await pclient.get(path, headers=bearer(tr))).status_code == 200, scope


def test_cli_validation(seeded_url: str) -> None:
    for bad in (
        ["--type", "alien"],
        ["--categories", "ix"],
        ["--dimensions", "shoe_size"],
        ["--geo", "PK999999"],
        [
            "--dimensions",
            "disability,employment,education,room_count,toilet_type,electrical_equipment,gas_equipment,kitchen_assets,livestock,land",
        ],
    ):
        args = ["partners", "create", "--name", "X", "--type", "donor", "--categories", "iv", *bad]
        result = run_cli(args, seeded_url, check=False)
        assert result.returncode == 1, bad
        assert result.stderr.startswith("error: "), bad
        assert len(result.stderr.strip().splitlines()) == 1, bad
