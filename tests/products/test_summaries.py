"""Summary tables (category i): public and partner, against the registry counted in SQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import make_settings, open_client, run_cli
from disclosure_attack import assert_open, listed_units, rounded, table_answer
from partner_helpers import bearer, create_partner, get_token

PUBLIC = "/v1/public/summaries"
PARTNER = "/v1/partner/summaries"
THRESHOLD = 10
BASE = 5
LIVING = "JOIN members m ON m.household_id = h.id AND m.deceased_on IS NULL"
GEOGRAPHY = {"province", "division", "district", "tehsil", "union_council"}


@pytest.fixture(scope="module")
async def pclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # The public tables describe the last refresh: make it describe the registry as it is
    # (other modules may have changed the session's registry since).
    # In a thread: the session client's in-process refresher runs on this event loop and
    # may hold the refresh lock the command waits for; blocking the loop would deadlock.
    await asyncio.to_thread(run_cli, ["products", "refresh"], seeded_url)
    settings = make_settings(
        seeded_url,
        token_limits="10000/minute",
        partner_default_limits="100000/minute",
        public_lookup_limits="100000/minute",
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def district(db: asyncpg.Connection) -> asyncpg.Record:
    """The district with most households, with its province."""
    row = await db.fetchrow(
        """SELECT province_code, division_code, district_code FROM households
            GROUP BY 1, 2, 3 ORDER BY count(*) DESC LIMIT 1"""
    )
    assert row is not None
    return row


Key = tuple[str | None, ...]


def _check_published(
    published: list[dict[str, Any]], truth: dict[Key, tuple[int, int]], dims: list[str]
) -> int:
    """Each published cell: null, or the true counts rounded; never below the threshold.
    Returns how many cells were published."""
    shown = 0
    for cell in published:
        key = tuple(cell[d] for d in dims)
        households, members = truth.get(key, (0, 0))
        if cell["households"] is None:
            assert cell["members"] is None, cell
            continue
        shown += 1
        assert households >= THRESHOLD, (cell, households)
        assert cell["households"] == rounded(households, BASE), (cell, households)
        assert cell["members"] == rounded(members, BASE), (cell, members)
    return shown


def _attack(body: dict[str, Any], dims: list[str], truth: dict[Key, int] | None = None) -> int:
    """The adversary of disclosure_attack on the whole answer: no withheld household count
    may be narrowed to less than the threshold from the published cells and margins (their
    exact values when ``truth``, the interior's true households, is given; else only the
    rounded ones). Returns how many withheld cells it attacked."""
    assert body["disclosure"]["suppressed_below"] == THRESHOLD
    assert body["disclosure"]["rounding_base"] == BASE
    answer = table_answer([*body["rows"], *body["margins"]], dims)
    geography = [i for i, d in enumerate(dims) if d in GEOGRAPHY]
    withheld = assert_open(
        answer, threshold=THRESHOLD, base=BASE, truth=truth, lower=listed_units(answer, geography)
    )
    assert len(withheld) == body["disclosure"]["suppressed_cells"]
    return len(withheld)


def _with_margins(truth: dict[Key, tuple[int, int]], n: int) -> dict[Key, tuple[int, int]]:
    """The interior truth plus every margin, summed (as the tables define margins)."""
    out: dict[Key, tuple[int, int]] = {}
    for key, (h, m) in truth.items():
        for mask in range(1 << n):
            mk = tuple(None if mask >> i & 1 else v for i, v in enumerate(key))
            a, b = out.get(mk, (0, 0))
            out[mk] = (a + h, b + m)
    return out


async def test_public_province_band_gender_matches_sql(
    pclient: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    r = await pclient.get(PUBLIC, params={"group_by": "province,poverty_band,gender"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {
        "rows",
        "margins",
        "suppressed_below",
        "disclosure",
        "registry_version",
        "as_of",
    }
    assert body["suppressed_below"] == THRESHOLD
    assert body["disclosure"]["rounding_base"] == BASE
    assert "method" in body["disclosure"]
    rows = await db.fetch(
        f"""SELECT h.province_code, h.poverty_band, m.gender,
                   count(DISTINCT h.id) AS households, count(*) AS members
              FROM households h {LIVING} GROUP BY 1, 2, 3"""
    )
    truth = {(r["province_code"], r["poverty_band"], r["gender"]): (r[3], r[4]) for r in rows}
    dims = ["province", "poverty_band", "gender"]
    assert all(set(cell) == {*dims, "households", "members"} for cell in body["rows"])
    assert all(None not in (c[d] for d in dims) for c in body["rows"])
    # Every province seen x the five bands x two genders, each once.
    provinces = {k[0] for k in truth}
    assert len(body["rows"]) == len(provinces) * 5 * 2
    assert len({tuple(c[d] for d in dims) for c in body["rows"]}) == len(body["rows"])
    assert _check_published(body["rows"], truth, dims) > 0
    margins = _with_margins(truth, 3)
    assert all(any(c[d] is None for d in dims) for c in body["margins"])
    assert len(body["margins"]) == (len(provinces) + 1) * 6 * 3 - len(body["rows"])
    assert _check_published(body["margins"], margins, dims) > 0
    grand = body["margins"][-1]
    assert grand["province"] is grand["poverty_band"] is grand["gender"] is None
    members = await db.fetchval(f"SELECT count(*) FROM households h {LIVING}")
    assert grand["members"] == rounded(members, BASE)
    assert _attack(body, dims, {key: h for key, (h, _) in truth.items()}) > 0


async def test_public_household_dimensions_and_filter(
    pclient: httpx.AsyncClient, db: asyncpg.Connection, district: asyncpg.Record
) -> None:
    code = district["district_code"]
    r = await pclient.get(
        PUBLIC, params=[("group_by", "district"), ("group_by", "poverty_band"), ("district", code)]
    )
    assert r.status_code == 200, r.text
    body = r.json()
    rows = await db.fetch(
        """SELECT h.district_code, h.poverty_band, count(*) AS households,
                  sum((SELECT count(*) FROM members m
                        WHERE m.household_id = h.id AND m.deceased_on IS NULL)) AS members
             FROM households h WHERE h.district_code = $1 GROUP BY 1, 2""",
        code,
    )
    truth = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    assert {c["district"] for c in body["rows"]} == {code}
    assert _check_published(body["rows"], truth, ["district", "poverty_band"]) > 0
    total = body["margins"][-1]
    households = await db.fetchval("SELECT count(*) FROM households WHERE district_code = $1", code)
    assert total["households"] == rounded(households, BASE)
    _attack(body, ["district", "poverty_band"], {k: h for k, (h, _) in truth.items()})


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"group_by": "tehsil"}, 422, "finer than district"),
        ({"group_by": "province,union_council"}, 422, "finer than district"),
        ({"group_by": "village"}, 422, "finer than district"),
        ({"group_by": "education"}, 422, "unknown dimension"),
        ({"group_by": "shoe_size"}, 422, "unknown dimension"),
        ({"group_by": "province,district"}, 422, "one geography level"),
        ({"group_by": "gender,gender"}, 422, "twice"),
        ({"group_by": ","}, 422, "at least one"),
        ({}, 422, "group_by"),
        ({"group_by": "province", "tehsil": "PK60101"}, 422, "tehsil"),
        ({"group_by": "province", "district": "PK999"}, 422, "PK999"),
        # Every district of the country by band and gender: 2,898 cells with the margins.
        ({"group_by": "district,poverty_band,gender"}, 422, "(at most 2000)"),
    ],
)
async def test_public_refusals(
    pclient: httpx.AsyncClient, params: dict[str, str], status: int, words: str
) -> None:
    r = await pclient.get(PUBLIC, params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert words in r.text


async def test_public_etag_and_cache(pclient: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    params = {"group_by": "province,gender"}
    first = await pclient.get(PUBLIC, params=params)
    again = await pclient.get(PUBLIC, params={"group_by": ["province", "gender"]})
    assert first.status_code == again.status_code == 200
    tag = first.headers["etag"]
    assert tag.startswith('"')
    assert not tag.startswith('W/"')
    assert again.headers["etag"] == tag
    assert first.content == again.content
    assert first.headers["cache-control"] == "public, max-age=60"
    r = await pclient.get(PUBLIC, params=params, headers={"If-None-Match": tag})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == tag
    r = await pclient.get(PUBLIC, params=params, headers={"If-None-Match": '"other"'})
    assert r.status_code == 200
    _attack(first.json(), ["province", "gender"])  # from the rounded answer alone
    # A statement on households that changes nothing counted leaves the answer and its tag:
    # answers follow the worker's refreshes, not every statement.
    await db.execute("UPDATE households SET updated_at = updated_at WHERE id = 1")
    r = await pclient.get(PUBLIC, params=params, headers={"If-None-Match": tag})
    assert r.status_code == 304


async def test_public_fair_use_limit(seeded_url: str) -> None:
    settings = make_settings(seeded_url, public_lookup_limits="2/minute")
    async for c in open_client(settings):
        for _ in range(2):
            assert (await c.get(PUBLIC, params={"group_by": "province"})).status_code == 200
        r = await c.get(PUBLIC, params={"group_by": "province"})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        # Its own key: the look-up's budget is untouched.
        assert (await c.get("/v1/public/scores/3520212345673")).status_code != 429


async def _partner(
    c: httpx.AsyncClient, url: str, **opts: Any
) -> tuple[dict[str, str], dict[str, str]]:
    p = create_partner(url, categories="i,ii", **opts)
    return p, bearer(await get_token(c, p["client_id"], p["client_secret"]))


async def test_partner_below_district_within_agreement(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection, district: asyncpg.Record
) -> None:
    code = district["district_code"]
    p, auth = await _partner(pclient, seeded_url, geo=code)
    r = await pclient.get(PARTNER, params={"group_by": "tehsil,poverty_band"}, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["query_id"], int)
    rows = await db.fetch(
        """SELECT tehsil_code, poverty_band, count(*) FROM households
            WHERE district_code = $1 GROUP BY 1, 2""",
        code,
    )
    truth = {(r[0], r[1]): r[2] for r in rows}
    assert {c["tehsil"] for c in body["rows"]} == {k[0] for k in truth}
    shown = 0
    for cell in body["rows"]:
        h = truth.get((cell["tehsil"], cell["poverty_band"]), 0)
        if cell["households"] is not None:
            shown += 1
            assert h >= THRESHOLD
            assert cell["households"] == rounded(h, BASE)
    assert shown > 0
    assert _attack(body, ["tehsil", "poverty_band"], truth) > 0
    households = sum(truth.values())
    assert body["margins"][-1]["households"] == rounded(households, BASE)
    # A union council inside the agreement as a filter, grouped by union council.
    uc = await db.fetchval(
        "SELECT union_council_code FROM households WHERE district_code = $1 "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
        code,
    )
    r = await pclient.get(
        PARTNER, params={"group_by": "union_council", "union_council": uc}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert [c["union_council"] for c in r.json()["rows"]] == [uc]
    _attack(r.json(), ["union_council"])
    # Outside the agreement's geography: 403.
    other = await db.fetchval(
        "SELECT district_code FROM households WHERE district_code <> $1 LIMIT 1", code
    )
    r = await pclient.get(
        PARTNER, params={"group_by": "poverty_band", "district": other}, headers=auth
    )
    assert r.status_code == 403
    assert other in r.json()["detail"]
    # Audited: the agreement, the grouping, the households in scope.
    audit = await db.fetchrow(
        """SELECT * FROM audit_log WHERE client_id = $1 AND endpoint = $2 ORDER BY id LIMIT 1""",
        p["client_id"],
        "GET /v1/partner/summaries",
    )
    assert audit is not None
    assert audit["dimensions"] == ["tehsil", "poverty_band"]
    assert audit["households"] == households
    assert str(audit["agreement_id"]) == p["agreement_id"]
    members = await db.fetchval(
        f"SELECT count(*) FROM households h {LIVING} WHERE h.district_code = $1", code
    )
    assert audit["members"] == members
    logged = await db.fetchval(
        "SELECT count(*) FROM aggregate_queries WHERE agreement_id = $1::uuid",
        p["agreement_id"],
    )
    assert logged == 2


async def test_partner_dimensions(pclient: httpx.AsyncClient, seeded_url: str) -> None:
    _, auth = await _partner(pclient, seeded_url, dimensions="education")
    ok = await pclient.get(
        PARTNER, params={"group_by": "province,education,poverty_level"}, headers=auth
    )
    assert ok.status_code == 200, ok.text
    assert {"province", "education", "poverty_band"} <= set(ok.json()["rows"][0])
    assert _attack(ok.json(), ["province", "education", "poverty_band"]) > 0
    for group_by, status in (
        ("land", 403),
        ("province,disability", 403),
        ("shoe_size", 422),
        ("village", 422),
        ("area_location", 422),
        ("province,tehsil", 422),
    ):
        r = await pclient.get(PARTNER, params={"group_by": group_by}, headers=auth)
        assert r.status_code == status, (group_by, r.text)
    r = await pclient.get(PARTNER, params={"group_by": "land"}, headers=auth)
    assert "land" in r.json()["detail"]
    r = await pclient.get(
        PARTNER, params={"group_by": "province", "dimensions": "land"}, headers=auth
    )
    assert r.status_code == 422  # not a parameter of the summaries


async def test_partner_scope(pclient: httpx.AsyncClient, seeded_url: str) -> None:
    assert (await pclient.get(PARTNER, params={"group_by": "province"})).status_code == 401
    p = create_partner(seeded_url, categories="iii")
    auth = bearer(await get_token(pclient, p["client_id"], p["client_secret"]))
    r = await pclient.get(PARTNER, params={"group_by": "province"}, headers=auth)
    assert r.status_code == 403


async def test_partner_empty_selection(pclient: httpx.AsyncClient, seeded_url: str) -> None:
    _, auth = await _partner(pclient, seeded_url)
    r = await pclient.get(
        PARTNER,
        params={"group_by": "district,poverty_band", "score_min": 100, "score_max": 0},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rows"] == []  # no district holds one: nothing to break down
    assert all(c["households"] is None for c in body["margins"])
    _attack(body, ["district", "poverty_band"])
