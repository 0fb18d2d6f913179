"""Geo-tagged households (category viii): who may read them, what is never shared, formats.

"Geo-tagged" is checked here against ``geo_units`` directly: a household is shareable only
when it has coordinates and every unit it lies in (province to village) is geo-tagged.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from conftest import make_settings, open_client
from partner_helpers import bearer, create_partner, get_token

URL = "/v1/partner/geo"
SEQ = "application/geo+json-seq"
# Shareable: located, and no unit of the household (any level) is untagged.
TAGGED = """h.lat IS NOT NULL AND h.lon IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM geo_units g
     WHERE g.code IN (h.province_code, h.division_code, h.district_code, h.tehsil_code,
                      h.union_council_code, h.village_code)
       AND NOT g.geo_tagged)"""


@pytest.fixture(scope="module")
async def gclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url, token_limits="10000/minute", partner_default_limits="100000/minute"
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def partner(gclient: httpx.AsyncClient, seeded_url: str) -> dict[str, str]:
    p = create_partner(
        seeded_url, name="Geo Partner", categories="viii", dimensions="education,room_count"
    )
    p["token"] = await get_token(gclient, p["client_id"], p["client_secret"])
    return p


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [orjson.loads(line) for line in response.content.splitlines()]


async def tagged_ids(db: asyncpg.Connection, where: str = "true", *args: object) -> list[str]:
    rows = await db.fetch(
        f"SELECT h.id FROM households h WHERE {TAGGED} AND {where} ORDER BY h.id", *args
    )
    return [str(r["id"]) for r in rows]


async def test_ndjson_by_default_only_geo_tagged(
    gclient: httpx.AsyncClient, partner: dict[str, str], db: asyncpg.Connection
) -> None:
    r = await gclient.get(URL, headers=bearer(partner["token"]))
    assert r.headers["content-type"] == "application/x-ndjson"
    records = ndjson(r)
    expected = await tagged_ids(db)
    assert [rec["household_id"] for rec in records] == expected
    assert len(expected) > 100
    assert set(records[0]) == {"household_id", "lat", "lon"}
    points = {
        str(row["id"]): (row["lat"], row["lon"])
        for row in await db.fetch("SELECT id, lat, lon FROM households WHERE lat IS NOT NULL")
    }
    for rec in records:
        assert (rec["lat"], rec["lon"]) == points[rec["household_id"]]
    # Nothing from Balochistan or a unit that is not geo-tagged.
    excluded = await db.fetch(
        f"SELECT h.id::text AS id FROM households h WHERE NOT ({TAGGED}) OR h.province_code = 'PK2'"
    )
    assert excluded
    assert not {row["id"] for row in excluded} & {rec["household_id"] for rec in records}


async def test_never_balochistan_or_test_phase_even_if_asked_or_located(
    gclient: httpx.AsyncClient, partner: dict[str, str], db: asyncpg.Connection
) -> None:
    untagged = await db.fetchval(
        """SELECT h.district_code FROM households h JOIN geo_units d ON d.code = h.district_code
            WHERE NOT d.geo_tagged AND h.province_code <> 'PK2'
            GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"""
    )
    assert untagged is not None
    for params in ({"province": "PK2"}, {"district": untagged}):
        assert ndjson(await gclient.get(URL, params=params, headers=bearer(partner["token"]))) == []
    # Even a household there that somehow has coordinates is never shared.
    planted = await db.fetch(
        """SELECT id FROM households
            WHERE lat IS NULL AND (province_code = 'PK2' OR district_code = $1)
            ORDER BY id LIMIT 6""",
        untagged,
    )
    ids = [row["id"] for row in planted]
    assert len(ids) == 6
    await db.execute(
        "UPDATE households SET lat = 30.0, lon = 68.0 WHERE id = ANY($1::bigint[])", ids
    )
    try:
        for params in ({}, {"province": "PK2"}, {"district": untagged}):
            records = ndjson(
                await gclient.get(URL, params=params, headers=bearer(partner["token"]))
            )
            assert not {str(i) for i in ids} & {rec["household_id"] for rec in records}
            assert records or params, "the unfiltered stream is empty"
    finally:
        await db.execute(
            "UPDATE households SET lat = NULL, lon = NULL WHERE id = ANY($1::bigint[])", ids
        )


async def test_geojson_seq_framing(
    gclient: httpx.AsyncClient, partner: dict[str, str], db: asyncpg.Connection
) -> None:
    district = await db.fetchval(
        f"SELECT h.district_code FROM households h WHERE {TAGGED} "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    r = await gclient.get(
        URL,
        params={"district": district, "dimensions": "poverty_level,room_count"},
        headers={**bearer(partner["token"]), "Accept": SEQ},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == SEQ
    body = r.content
    assert body.startswith(b"\x1e")
    assert body.endswith(b"\n")
    records = body.split(b"\x1e")
    assert records[0] == b""
    features = []
    for text in records[1:]:
        assert text.endswith(b"\n")
        assert text.count(b"\n") == 1
        features.append(orjson.loads(text))
    expected = await tagged_ids(db, "h.district_code = $1", district)
    assert expected
    assert [f["properties"]["household_id"] for f in features] == expected
    rows = {
        str(row["id"]): row
        for row in await db.fetch(
            "SELECT id, lat, lon, poverty_band, rooms FROM households WHERE district_code = $1",
            district,
        )
    }
    for feature in features:
        assert feature["type"] == "Feature"
        assert feature["geometry"]["type"] == "Point"
        row = rows[feature["properties"]["household_id"]]
        assert feature["geometry"]["coordinates"] == [row["lon"], row["lat"]]
        assert set(feature["properties"]) == {"household_id", "poverty_level", "room_count"}
        assert feature["properties"]["poverty_level"] == row["poverty_band"]
        assert feature["properties"]["room_count"] == row["rooms"]


async def test_csv_and_member_dimensions(
    gclient: httpx.AsyncClient, partner: dict[str, str], db: asyncpg.Connection
) -> None:
    params = {"province": "PK6", "dimensions": "education,gender", "poverty_band": "poor"}
    records = ndjson(await gclient.get(URL, params=params, headers=bearer(partner["token"])))
    expected = await tagged_ids(db, "province_code = 'PK6' AND poverty_band = 'poor'")
    assert expected
    assert [rec["household_id"] for rec in records] == expected
    living = {
        str(row["household_id"]): row["n"]
        for row in await db.fetch(
            "SELECT household_id, count(*) AS n FROM members WHERE deceased_on IS NULL GROUP BY 1"
        )
    }
    for rec in records:
        assert len(rec["members"]) == living.get(rec["household_id"], 0)
        assert all(set(m) == {"gender", "education"} for m in rec["members"])
    r = await gclient.get(
        URL, params=params, headers={**bearer(partner["token"]), "Accept": "text/csv"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["household_id", "lat", "lon", "education", "gender"]  # as asked
    assert len(rows) == sum(len(rec["members"]) or 1 for rec in records)
    assert {row["household_id"] for row in rows} == set(expected)


async def test_dimensions_granted_and_locked(
    gclient: httpx.AsyncClient, partner: dict[str, str]
) -> None:
    auth = bearer(partner["token"])
    ok = await gclient.get(
        URL, params={"province": "PK7", "dimensions": "room_count"}, headers=auth
    )
    assert ok.status_code == 200  # locked, granted
    ok = await gclient.get(URL, params={"province": "PK7", "dimensions": "livestock"}, headers=auth)
    assert ok.status_code == 403  # locked, not granted
    assert "livestock" in ok.json()["detail"]
    r = await gclient.get(URL, params={"dimensions": "land,gender"}, headers=auth)
    assert r.status_code == 403
    r = await gclient.get(URL, params={"dimensions": "shoe_size"}, headers=auth)
    assert r.status_code == 422
    records = ndjson(
        await gclient.get(
            URL, params={"province": "PK7", "dimensions": "area_location"}, headers=auth
        )
    )
    assert records
    assert all(set(rec["area_location"]) == {"village"} for rec in records)


async def test_category_viii_only_and_geography(
    gclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection
) -> None:
    assert (await gclient.get(URL)).status_code == 401
    for categories in ("iv,v", "vii", "i,ii,iii,iv,v,vi,vii"):
        p = create_partner(seeded_url, categories=categories)
        token = await get_token(gclient, p["client_id"], p["client_secret"])
        r = await gclient.get(URL, headers=bearer(token))
        assert r.status_code == 403, categories
        assert "geo:read" in r.json()["detail"]
    district = await db.fetchval(
        f"SELECT h.district_code FROM households h WHERE {TAGGED} "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    p = create_partner(seeded_url, categories="viii", geo=district)
    token = await get_token(gclient, p["client_id"], p["client_secret"])
    records = ndjson(await gclient.get(URL, headers=bearer(token)))
    assert records
    assert [rec["household_id"] for rec in records] == await tagged_ids(
        db, "h.district_code = $1", district
    )
    # Another province, outside the agreement's district: refused.
    other = await db.fetchval(
        "SELECT province_code FROM households WHERE district_code <> $1 "
        "AND province_code <> (SELECT province_code FROM households WHERE district_code = $1 "
        "LIMIT 1) LIMIT 1",
        district,
    )
    assert other is not None
    r = await gclient.get(URL, params={"province": other}, headers=bearer(token))
    assert r.status_code == 403, r.text


async def test_audit_row_per_stream(
    gclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection
) -> None:
    p = create_partner(seeded_url, name="Audited Geo", categories="viii", dimensions="education")
    token = await get_token(gclient, p["client_id"], p["client_secret"])
    for accept in ("application/x-ndjson", SEQ, "text/csv"):
        r = await gclient.get(
            URL,
            params={"province": "PK5", "dimensions": "education"},
            headers={**bearer(token), "Accept": accept},
        )
        assert r.status_code == 200
    rows = await db.fetch(
        "SELECT * FROM audit_log WHERE client_id = $1 ORDER BY id", p["client_id"]
    )
    assert [row["endpoint"] for row in rows] == [
        "/v1/partner/geo (ndjson)",
        "/v1/partner/geo (geojson-seq)",
        "/v1/partner/geo (csv)",
    ]
    households = len(await tagged_ids(db, "province_code = 'PK5'"))
    assert households > 0
    members = await db.fetchval(
        f"""SELECT count(*) FROM members m JOIN households h ON h.id = m.household_id
             WHERE m.deceased_on IS NULL AND {TAGGED} AND h.province_code = 'PK5'"""
    )
    for row in rows:
        assert row["households"] == households
        assert row["members"] == members
        assert row["dimensions"] == ["education"]
        assert orjson.loads(row["filters"]) == {"province": ["PK5"]}


async def test_openapi_lists_the_stream_types(gclient: httpx.AsyncClient) -> None:
    document = (await gclient.get("/openapi.json")).json()
    content = document["paths"][URL]["get"]["responses"]["200"]["content"]
    assert {SEQ, "application/x-ndjson", "text/csv"} <= set(content)


async def test_an_untagged_unit_at_any_level_is_excluded(
    gclient: httpx.AsyncClient, partner: dict[str, str], db: asyncpg.Connection
) -> None:
    """A village (or union council) marked untagged under a tagged tehsil drops out too."""
    row = await db.fetchrow(
        f"""SELECT h.village_code, h.union_council_code FROM households h WHERE {TAGGED}
             GROUP BY 1, 2 ORDER BY count(*) DESC LIMIT 1"""
    )
    assert row is not None
    for level in ("village_code", "union_council_code"):
        code = row[level]
        inside = {
            str(r["id"])
            for r in await db.fetch(f"SELECT id FROM households WHERE {level} = $1", code)
        }
        before = ndjson(await gclient.get(URL, headers=bearer(partner["token"])))
        assert inside <= {rec["household_id"] for rec in before}
        await db.execute("UPDATE geo_units SET geo_tagged = false WHERE code = $1", code)
        try:
            after = ndjson(await gclient.get(URL, headers=bearer(partner["token"])))
            assert [rec["household_id"] for rec in after] == await tagged_ids(db)
            assert not inside & {rec["household_id"] for rec in after}
            assert len(after) == len(before) - len(inside)
        finally:
            await db.execute("UPDATE geo_units SET geo_tagged = true WHERE code = $1", code)
