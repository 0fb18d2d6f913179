"""Anonymized extracts: no direct identifiers, per-agreement pseudonyms, k-anonymity."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import httpx
import orjson
import pyarrow.parquet as pq
import pytest
from conftest import make_settings, open_client
from partner_helpers import bearer, create_partner, get_token

URL = "/v1/partner/extracts/anonymized"
QI = ("province", "division", "district", "tehsil", "gender", "age_bracket", "education")


@pytest.fixture(scope="module")
async def pclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url, token_limits="10000/minute", partner_default_limits="100000/minute"
    )
    async for c in open_client(settings):
        yield c


async def _token(c: httpx.AsyncClient, url: str) -> str:
    p = create_partner(url, categories="vi", dimensions="education")
    return await get_token(c, p["client_id"], p["client_secret"])


async def test_extract_is_anonymous_and_k_anonymous(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection
) -> None:
    province = await db.fetchval(
        "SELECT province_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    params = {"province": province, "dimensions": "education"}
    t1, t2 = await _token(pclient, seeded_url), await _token(pclient, seeded_url)
    r1 = await pclient.get(
        URL, params=params, headers={**bearer(t1), "Accept": "application/x-ndjson"}
    )
    assert r1.status_code == 200
    rows = [orjson.loads(line) for line in r1.content.splitlines()]
    assert int(r1.headers["x-records"]) == len(rows) > 0
    assert int(r1.headers["x-suppressed-records"]) >= 0
    groups = Counter(tuple(row[q] for q in QI) for row in rows)
    assert min(groups.values()) >= 5
    identifiers = {
        r["cnic"] for r in await db.fetch("SELECT cnic FROM members WHERE cnic IS NOT NULL")
    }
    names = {r["name"] for r in await db.fetch("SELECT DISTINCT name FROM members")}
    for row in rows:
        assert set(row) == {*QI, "household_pid", "member_pid", "poverty_band"}
        for value in row.values():
            assert value not in identifiers
            assert value not in names
            assert not (isinstance(value, str) and value.isdigit() and len(value) == 13)
    r2 = await pclient.get(
        URL, params=params, headers={**bearer(t2), "Accept": "application/x-ndjson"}
    )
    other = [orjson.loads(line) for line in r2.content.splitlines()]
    assert len(other) == len(rows)
    assert not {r["household_pid"] for r in rows} & {r["household_pid"] for r in other}
    again = await pclient.get(URL, params=params, headers={**bearer(t1), "Accept": "text/csv"})
    csv_rows = list(csv.DictReader(io.StringIO(again.text)))
    assert [r["member_pid"] for r in csv_rows] == [r["member_pid"] for r in rows]
    pq_resp = await pclient.get(
        URL, params=params, headers={**bearer(t1), "Accept": "application/vnd.apache.parquet"}
    )
    table = pq.read_table(io.BytesIO(pq_resp.content))
    assert table.num_rows == len(rows)


async def test_a_filter_finer_than_the_extract_level_is_refused(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection
) -> None:
    """A union-council filter would place every record of a tehsil-level extract in that
    union council; under a district-level agreement a tehsil filter would do the same."""
    row = await db.fetchrow("SELECT tehsil_code, union_council_code FROM households LIMIT 1")
    headers = {**bearer(await _token(pclient, seeded_url)), "Accept": "application/x-ndjson"}
    r = await pclient.get(URL, params={"union_council": row["union_council_code"]}, headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "union_council: finer than this agreement's extract level (tehsil)" in r.text
    assert (
        await pclient.get(URL, params={"tehsil": row["tehsil_code"]}, headers=headers)
    ).status_code == 200
    district = create_partner(seeded_url, categories="vi", extract_geo_level="district")
    token = await get_token(pclient, district["client_id"], district["client_secret"])
    r = await pclient.get(
        URL, params={"tehsil": row["tehsil_code"]}, headers={**bearer(token), "Accept": "text/csv"}
    )
    assert r.status_code == 422, r.text
    assert "tehsil: finer than this agreement's extract level (district)" in r.text
