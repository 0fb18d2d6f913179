"""Hex-bin maps, public and partner: every hexagon against SQL and h3 computed here.

The expected map is built independently of the service: the households in scope read
with plain SQL, each located one put in its hexagon with ``h3.latlng_to_cell``, counted.
Then the published map must show every hexagon that has a household, never a count below
the threshold, and for each hexagon it publishes the true count rounded to the base (half
up) and the true share below the cut-off (3 decimals) or mean score (2 decimals). And the
adversary of disclosure_attack, knowing the exact count of every published hexagon and of
the total, cannot narrow any withheld hexagon to less than the threshold.
"""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import h3
import httpx
import orjson
import pytest
from conftest import make_settings, open_client, run_cli
from disclosure_attack import assert_open, map_answer, published_or_withheld, rounded
from partner_helpers import bearer, create_partner, get_token
from PIL import Image

THRESHOLD = 10
BASE = 5
PUBLIC = "/v1/public/maps"
PARTNER = "/v1/partner/maps"


@pytest.fixture(scope="module")
async def mclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # Public maps describe the last refresh: make it describe the registry as it is.
    # In a thread: the session client's in-process refresher runs on this event loop and
    # may hold the refresh lock the command waits for; blocking the loop would deadlock.
    await asyncio.to_thread(run_cli, ["products", "refresh"], seeded_url)
    settings = make_settings(
        seeded_url,
        token_limits="10000/minute",
        partner_default_limits="100000/minute",
        public_lookup_limits="100000/minute",
        suppress_below=THRESHOLD,
        disclosure_rounding_base=BASE,
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def busiest_district(db: asyncpg.Connection) -> str:
    code: str = await db.fetchval(
        """SELECT district_code FROM households WHERE lat IS NOT NULL
            GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"""
    )
    return code


@pytest.fixture(scope="module")
async def maps_token(mclient: httpx.AsyncClient, seeded_url: str) -> str:
    p = create_partner(seeded_url, name="Mapping Partner", categories="vii")
    return await get_token(mclient, p["client_id"], p["client_secret"])


def published(n: int) -> int | None:
    return published_or_withheld(n, THRESHOLD, BASE)


@dataclass
class Hexagon:
    households: int = 0
    below: int = 0
    scores: list[Decimal] = field(default_factory=list)


@dataclass
class Truth:
    hexagons: dict[str, Hexagon]
    without_location: int


async def truth(
    db: asyncpg.Connection, resolution: int, cut_off: float, where: str = "true", *args: object
) -> Truth:
    rows = await db.fetch(f"SELECT lat, lon, pmt_score FROM households h WHERE {where}", *args)
    hexagons: dict[str, Hexagon] = {}
    without = 0
    for row in rows:
        if row["lat"] is None or row["lon"] is None:
            without += 1
            continue
        cell = h3.latlng_to_cell(row["lat"], row["lon"], resolution)
        hexagon = hexagons.setdefault(cell, Hexagon())
        hexagon.households += 1
        hexagon.scores.append(row["pmt_score"])
        hexagon.below += row["pmt_score"] < Decimal(str(cut_off))
    return Truth(hexagons, without)


def check_map(body: dict[str, Any], expected: Truth, measure: str, resolution: int) -> int:
    """Assert the published map against the truth; return how many hexagons show a value."""
    assert body["type"] == "FeatureCollection"
    assert body["measure"] == measure
    assert body["resolution"] == resolution
    assert isinstance(body["registry_version"], int)
    assert body["disclosure"]["suppressed_below"] == THRESHOLD
    assert body["disclosure"]["rounding_base"] == BASE
    assert body["households_without_location"] == published(expected.without_location)
    features = {f["properties"]["h3"]: f for f in body["features"]}
    assert len(features) == len(body["features"])
    assert set(features) == set(expected.hexagons)
    shown = 0
    for cell, feature in features.items():
        true = expected.hexagons[cell]
        props = feature["properties"]
        assert feature["type"] == "Feature"
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon"
        assert ring[0] == ring[-1]
        boundary = [x for lat, lng in h3.cell_to_boundary(cell) for x in (lng, lat)]
        assert [x for point in ring[:-1] for x in point] == pytest.approx(boundary, abs=1e-6)
        # RFC 7946: an exterior ring is counter-clockwise (positive shoelace area).
        assert sum(a[0] * b[1] - b[0] * a[1] for a, b in itertools.pairwise(ring)) > 0
        if true.households < THRESHOLD:
            assert props["households"] is None, (cell, true.households)
            assert props["value"] is None
            continue
        if props["households"] is None:  # withheld by complementary suppression
            assert props["value"] is None
            continue
        assert props["households"] >= THRESHOLD
        assert props["households"] == rounded(true.households, BASE), cell
        share = true.below / true.households
        if measure == "households":
            assert props["value"] == props["households"]
        elif measure == "poverty_rate":
            if any(s >= 0.9 or s <= 0.1 for s in (share, round(share, 3))):
                assert props["value"] is None  # nearly everyone or no one: withheld
            else:
                assert props["value"] == round(share, 3), cell
        else:
            mean = float(sum(true.scores)) / true.households
            assert props["value"] == pytest.approx(mean, abs=0.0051), cell
        shown += props["value"] is not None
    answer, lower = map_answer(body)
    truth = {(cell,): hexagon.households for cell, hexagon in expected.hexagons.items()}
    withheld = assert_open(answer, threshold=THRESHOLD, base=BASE, truth=truth, lower=lower)
    assert len(withheld) == body["disclosure"]["suppressed_cells"]
    return shown


@pytest.mark.parametrize(
    ("measure", "resolution"),
    [("poverty_rate", 2), ("households", 3), ("mean_pmt_score", 2), ("poverty_rate", 5)],
)
async def test_public_map_matches_sql_and_h3(
    mclient: httpx.AsyncClient, db: asyncpg.Connection, measure: str, resolution: int
) -> None:
    r = await mclient.get(f"{PUBLIC}/{measure}", params={"resolution": resolution})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/geo+json"
    body = r.json()
    expected = await truth(db, resolution, 32.0)
    shown = check_map(body, expected, measure, resolution)
    if resolution <= 3:
        assert shown > 0
    small = sum(1 for h in expected.hexagons.values() if h.households < THRESHOLD)
    assert body["disclosure"]["suppressed_cells"] >= small
    located = sum(h.households for h in expected.hexagons.values())
    assert body["total"]["households"] == published(located)


async def test_public_map_defaults_cut_off_and_geography(
    mclient: httpx.AsyncClient, db: asyncpg.Connection, busiest_district: str
) -> None:
    r = await mclient.get(f"{PUBLIC}/poverty_rate")
    assert r.status_code == 200
    body = r.json()
    assert body["resolution"] == 5
    assert body["cut_off"] == 32
    params = {"resolution": 4, "cut_off": 45, "district": busiest_district}
    r = await mclient.get(f"{PUBLIC}/poverty_rate", params=params)
    assert r.status_code == 200, r.text
    expected = await truth(db, 4, 45, "district_code = $1", busiest_district)
    check_map(r.json(), expected, "poverty_rate", 4)
    r = await mclient.get(f"{PUBLIC}/households", params={"province": "PK2", "resolution": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["features"] == []  # Balochistan: no household has a location
    balochistan = await db.fetchval(
        "SELECT count(*) FROM households WHERE province_code = 'PK2' AND lat IS NULL"
    )
    assert body["households_without_location"] == published(balochistan)
    assert body["total"]["households"] is None


async def test_households_without_location_counts_the_scope(
    mclient: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    for params, where in (
        ({}, "true"),
        ({"province": "PK6"}, "province_code = 'PK6'"),
        ({"province": ["PK6", "PK5"]}, "province_code IN ('PK6', 'PK5')"),
    ):
        r = await mclient.get(f"{PUBLIC}/households", params={**params, "resolution": 1})
        assert r.status_code == 200, r.text
        n = await db.fetchval(
            f"SELECT count(*) FROM households WHERE (lat IS NULL OR lon IS NULL) AND {where}"
        )
        assert r.json()["households_without_location"] == published(n), params


async def test_public_map_refusals(mclient: httpx.AsyncClient) -> None:
    for path, params in (
        (f"{PUBLIC}/households", {"resolution": 6}),
        (f"{PUBLIC}/households", {"resolution": -1}),
        (f"{PUBLIC}/literacy", {}),
        (f"{PUBLIC}/poverty_rate", {"cut_off": 101}),
        (f"{PUBLIC}/poverty_rate", {"cut_off": 45.5}),  # partners only: whole numbers here
        (f"{PUBLIC}/households", {"format": "svg"}),
        (f"{PUBLIC}/households", {"district": "PK9999"}),  # no such district
        (f"{PUBLIC}/households", {"district": "PK6"}),  # a province, not a district
        (f"{PUBLIC}/households", {"tehsil": "PK60401"}),  # not a public filter
    ):
        r = await mclient.get(path, params=params)
        assert r.status_code == 422, (path, params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_png(mclient: httpx.AsyncClient) -> None:
    r = await mclient.get(f"{PUBLIC}/poverty_rate", params={"format": "png", "resolution": 3})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(r.content)) as image:
        image.verify()
    with Image.open(io.BytesIO(r.content)) as image:
        assert image.format == "PNG"
        assert image.size == (800, 800)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None
        assert len(colours) > 10


async def test_etag_and_not_modified(mclient: httpx.AsyncClient) -> None:
    url = f"{PUBLIC}/households"
    first = await mclient.get(url, params={"resolution": 2})
    again = await mclient.get(url, params={"resolution": 2})
    assert first.status_code == again.status_code == 200
    tag = first.headers["etag"]
    assert tag.startswith('"')
    assert tag == again.headers["etag"]
    assert first.content == again.content
    assert first.headers["cache-control"] == "public, max-age=60"
    r = await mclient.get(url, params={"resolution": 2}, headers={"If-None-Match": tag})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == tag
    r = await mclient.get(url, params={"resolution": 2}, headers={"If-None-Match": '"other"'})
    assert r.status_code == 200
    png = await mclient.get(url, params={"resolution": 2, "format": "png"})
    assert png.headers["etag"] != tag
    other = await mclient.get(url, params={"resolution": 1})
    assert other.headers["etag"] != tag


async def test_a_statement_alone_does_not_move_the_tag(
    mclient: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    url = f"{PUBLIC}/households"
    before = await mclient.get(url, params={"resolution": 0})
    # A no-op statement bumps the registry's data version, but the public map describes
    # the worker's last refresh (tests/products/test_public_products.py: refreshes).
    await db.execute("UPDATE households SET version = version WHERE false")
    after = await mclient.get(url, params={"resolution": 0})
    assert after.json()["registry_version"] == before.json()["registry_version"]
    assert after.headers["etag"] == before.headers["etag"]
    cached = await mclient.get(
        url, params={"resolution": 0}, headers={"If-None-Match": before.headers["etag"]}
    )
    assert cached.status_code == 304


async def test_public_fair_use_limit_has_its_own_count(seeded_url: str) -> None:
    settings = make_settings(seeded_url, public_lookup_limits="2/minute")
    async for c in open_client(settings):
        for _ in range(2):
            assert (
                await c.get(f"{PUBLIC}/households", params={"resolution": 0})
            ).status_code == 200
        r = await c.get(f"{PUBLIC}/households", params={"resolution": 0})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        # The score look-up counts apart: the maps spent nothing of its allowance.
        assert (await c.get("/v1/public/scores/3520212345671")).status_code != 429


async def test_partner_map_within_the_agreement(
    mclient: httpx.AsyncClient,
    seeded_url: str,
    db: asyncpg.Connection,
    busiest_district: str,
) -> None:
    p = create_partner(seeded_url, categories="vii", geo=busiest_district)
    token = await get_token(mclient, p["client_id"], p["client_secret"])
    r = await mclient.get(f"{PARTNER}/households", params={"resolution": 7}, headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/geo+json"
    assert r.headers["cache-control"] == "no-store"
    expected = await truth(db, 7, 32.0, "district_code = $1", busiest_district)
    check_map(r.json(), expected, "households", 7)
    assert r.json()["resolution"] == 7
    # Default resolution 6, with beneficiary filters.
    r = await mclient.get(
        f"{PARTNER}/poverty_rate",
        params={"score_max": 60, "poverty_band": ["poor", "very_poor", "non_poor"]},
        headers=bearer(token),
    )
    assert r.status_code == 200, r.text
    where = (
        "district_code = $1 AND pmt_score <= 60 "
        "AND poverty_band IN ('poor', 'very_poor', 'non_poor')"
    )
    check_map(r.json(), await truth(db, 6, 32.0, where, busiest_district), "poverty_rate", 6)
    # Outside the agreement's geography.
    other = await db.fetchval(
        "SELECT district_code FROM households WHERE district_code <> $1 LIMIT 1", busiest_district
    )
    r = await mclient.get(
        f"{PARTNER}/households", params={"district": other}, headers=bearer(token)
    )
    assert r.status_code == 403
    assert other in r.json()["detail"]
    r = await mclient.get(
        f"{PARTNER}/households", params={"province": "PK2"}, headers=bearer(token)
    )
    assert r.status_code == 403


async def test_partner_map_filters_match_sql(
    mclient: httpx.AsyncClient, maps_token: str, db: asyncpg.Connection
) -> None:
    uc = await db.fetchval(
        """SELECT union_council_code FROM households WHERE lat IS NOT NULL
            GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"""
    )
    r = await mclient.get(
        f"{PARTNER}/mean_pmt_score",
        params={"union_council": uc, "resolution": 7},
        headers=bearer(maps_token),
    )
    assert r.status_code == 200, r.text
    expected = await truth(db, 7, 32.0, "union_council_code = $1", uc)
    check_map(r.json(), expected, "mean_pmt_score", 7)
    living_children = (
        "EXISTS (SELECT 1 FROM members m WHERE m.household_id = h.id AND m.deceased_on IS NULL "
        "AND m.date_of_birth > current_date - interval '18 years')"
    )
    r = await mclient.get(
        f"{PARTNER}/households",
        params={"member_type": "children", "resolution": 3, "score_min": 20},
        headers=bearer(maps_token),
    )
    assert r.status_code == 200, r.text
    expected = await truth(db, 3, 32.0, f"pmt_score >= 20 AND {living_children}")
    assert check_map(r.json(), expected, "households", 3) > 0


async def test_partner_map_refusals(
    mclient: httpx.AsyncClient, seeded_url: str, maps_token: str
) -> None:
    url = f"{PARTNER}/households"
    assert (await mclient.get(url)).status_code == 401
    r = await mclient.get(url, params={"resolution": 8}, headers=bearer(maps_token))
    assert r.status_code == 422
    r = await mclient.get(url, params={"dimensions": "gender"}, headers=bearer(maps_token))
    assert r.status_code == 422  # a map has no dimensions
    r = await mclient.get(f"{PARTNER}/literacy", headers=bearer(maps_token))
    assert r.status_code == 422
    p = create_partner(seeded_url, categories="iv,viii")
    token = await get_token(mclient, p["client_id"], p["client_secret"])
    r = await mclient.get(url, headers=bearer(token))
    assert r.status_code == 403
    assert "maps:read" in r.json()["detail"]


async def test_partner_png_and_audit(
    mclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection
) -> None:
    p = create_partner(seeded_url, name="Audited Mapper", categories="vii", geo="PK6")
    token = await get_token(mclient, p["client_id"], p["client_secret"])
    for fmt in ("png", "geojson", "geojson"):  # the third is served from the cache
        r = await mclient.get(
            f"{PARTNER}/poverty_rate",
            params={"format": fmt, "resolution": 4, "cut_off": 20},
            headers=bearer(token),
        )
        assert r.status_code == 200, r.text
    assert r.content.startswith(b"{")
    rows = await db.fetch(
        "SELECT * FROM audit_log WHERE client_id = $1 ORDER BY id", p["client_id"]
    )
    assert len(rows) == 3
    in_scope = await db.fetchval("SELECT count(*) FROM households WHERE province_code = 'PK6'")
    for row in rows:
        assert row["endpoint"] == "/v1/partner/maps/poverty_rate"
        assert row["households"] == in_scope
        assert row["members"] == 0
        filters = orjson.loads(row["filters"])
        assert filters["resolution"] == "4"
        assert filters["cut_off"] == "20.0"
    with Image.open(io.BytesIO((await _png(mclient, token)).content)) as image:
        assert image.size == (800, 800)


async def _png(client: httpx.AsyncClient, token: str) -> httpx.Response:
    r = await client.get(
        f"{PARTNER}/households", params={"format": "png", "resolution": 7}, headers=bearer(token)
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return r


async def test_openapi_declares_the_content_types(mclient: httpx.AsyncClient) -> None:
    document = (await mclient.get("/openapi.json")).json()
    for path in ("/v1/public/maps/{measure}", "/v1/partner/maps/{measure}"):
        content = document["paths"][path]["get"]["responses"]["200"]["content"]
        assert {"application/geo+json", "image/png"} <= set(content), path
    public = document["paths"]["/v1/public/maps/{measure}"]["get"]
    assert "304" in public["responses"]
    assert "429" in public["responses"]
    assert "security" not in public
    partner = document["paths"]["/v1/partner/maps/{measure}"]["get"]
    assert partner["security"] == [{"bearerAuth": []}]


async def test_concurrent_requests_share_one_computation(
    mclient: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services.products import public as public_service

    calls = 0
    reads = public_service.map_reads

    async def counting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return await reads(*args)

    monkeypatch.setattr(public_service, "map_reads", counting)
    # Not a map the worker pre-renders, nor one kept in the database (a cut-off of its own).
    params = {"resolution": 1, "cut_off": 17}
    answers = await asyncio.gather(
        *(mclient.get(f"{PUBLIC}/poverty_rate", params=params) for _ in range(5))
    )
    assert [r.status_code for r in answers] == [200] * 5
    assert len({r.content for r in answers}) == 1
    assert calls == 1
    assert (await mclient.get(f"{PUBLIC}/poverty_rate", params=params)).status_code == 200
    assert calls == 1  # and then from the cache
