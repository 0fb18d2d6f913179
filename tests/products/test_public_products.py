"""Public summaries and maps come from the worker's refresh of the public cube, never from
the registry on a visitor's request: what they publish, when they change, what a refresh
recounts, and what a visitor sees before the first one.

The registry here is a database of the module's own (the tests change it); the service runs
without in-process workers (no refresher) unless a test starts one, and refreshes are run
with ``nser products refresh`` as an operator would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from conftest import create_database, drop_database, fresh_database, make_settings, open_client
from conftest import run_cli as run

from app.services.disclosure.policy import Policy
from app.services.products import maps as map_service
from app.services.products import summaries as summary_service
from app.services.registry import version as registry_version
from app.services.sharing.beneficiaries_sql import Filters

SUMMARIES = "/v1/public/summaries"
MAPS = "/v1/public/maps"
POLICY = Policy(threshold=10, rounding_base=5)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=1500, seed=5) as u:
        yield u


def settings_for(url: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "public_lookup_limits": "100000/minute",
        "in_process_workers": 0,
        "suppress_below": POLICY.threshold,
        "disclosure_rounding_base": POLICY.rounding_base,
    }
    values.update(overrides)
    return make_settings(url, **values)


@pytest.fixture(scope="module")
async def client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(settings_for(url)):
        yield c


@pytest.fixture(scope="module")
async def owner(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
async def pool(url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(url, min_size=1, max_size=4)
    assert p is not None
    yield p
    await p.close()


async def busiest(owner: asyncpg.Connection) -> asyncpg.Record:
    row = await owner.fetchrow(
        """SELECT province_code, division_code, district_code FROM households
            WHERE lat IS NOT NULL GROUP BY 1, 2, 3 ORDER BY count(*) DESC LIMIT 1"""
    )
    assert row is not None
    return row


async def latest(owner: asyncpg.Connection) -> asyncpg.Record:
    row = await owner.fetchrow("SELECT * FROM public_refreshes ORDER BY id DESC LIMIT 1")
    assert row is not None
    return row


def refresh(url: str, *flags: str) -> str:
    return run(["products", "refresh", *flags], url).stdout


async def summary_direct(pool: asyncpg.Pool, group_by: list[str], geo: dict[str, list[str]]) -> Any:
    return await summary_service.public_summary(pool, group_by, geo, POLICY)


async def map_direct(
    pool: asyncpg.Pool, measure: str, resolution: int, cut_off: float, geo: dict[str, list[str]]
) -> Any:
    q = map_service.MapQuery(measure, resolution, cut_off, Filters(**geo))  # type: ignore[arg-type]
    version = await registry_version.data_version(pool)
    body = orjson.loads((await map_service.compute(pool, q, version, POLICY)).body)
    body.pop("registry_version")
    return body


def without_stamp(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("registry_version", "as_of")}


async def test_answers_equal_a_direct_count_of_the_registry(
    client: httpx.AsyncClient, owner: asyncpg.Connection, pool: asyncpg.Pool, url: str
) -> None:
    refresh(url)  # nothing may be pending from another test
    place = await busiest(owner)
    province, division = place["province_code"], place["division_code"]
    tables: list[tuple[list[str], dict[str, list[str]]]] = [
        (["province", "poverty_band", "gender"], {}),
        (["district", "poverty_band"], {"province": [province]}),
        (["division", "age_bracket", "gender"], {"province": [province]}),
        (["poverty_band", "age_bracket"], {"division": [division]}),
        (["gender"], {"province": [province], "district": [place["district_code"]]}),
        (["province"], {}),
    ]
    for group_by, geo in tables:
        r = await client.get(SUMMARIES, params={"group_by": ",".join(group_by), **geo})
        assert r.status_code == 200, r.text
        body = r.json()
        direct = await summary_direct(pool, group_by, geo)
        assert without_stamp(body) == without_stamp(direct), (group_by, geo)
        assert body["registry_version"] == direct["registry_version"]
        assert body["disclosure"]["suppressed_cells"] < len(body["rows"]) + len(body["margins"])
    maps: list[tuple[str, int, float, dict[str, list[str]]]] = [
        ("poverty_rate", 5, 32, {}),
        ("poverty_rate", 3, 45, {"province": [province]}),
        ("mean_pmt_score", 4, 32, {"division": [division]}),
        ("households", 0, 32, {}),
        ("households", 2, 32, {"province": ["PK2"]}),  # Balochistan: nothing located
        ("poverty_rate", 1, 0, {}),
        ("poverty_rate", 5, 100, {"district": [place["district_code"]]}),
    ]
    for measure, resolution, cut_off, geo in maps:
        params = {"resolution": resolution, "cut_off": cut_off, **geo}
        r = await client.get(f"{MAPS}/{measure}", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert isinstance(body.pop("as_of"), str)
        version = body.pop("registry_version")
        assert version == await registry_version.data_version(pool)
        assert body == await map_direct(pool, measure, resolution, cut_off, geo), params


async def test_answers_come_from_the_refresh_not_the_registry(
    client: httpx.AsyncClient, owner: asyncpg.Connection, pool: asyncpg.Pool, url: str
) -> None:
    refresh(url)
    place = await busiest(owner)
    params = {"group_by": "district,poverty_band", "province": place["province_code"]}
    map_params = {"resolution": 5, "district": place["district_code"]}
    before = await client.get(SUMMARIES, params=params)
    map_before = await client.get(f"{MAPS}/poverty_rate", params=map_params)
    assert before.status_code == map_before.status_code == 200
    # A third of the district's households become ultra poor, one of them moves away.
    changed = await owner.execute(
        """UPDATE households SET pmt_score = 5.25, poverty_band = 'ultra_poor'
            WHERE id IN (SELECT id FROM households WHERE district_code = $1
                          ORDER BY id LIMIT (SELECT count(*) / 3 FROM households
                                              WHERE district_code = $1))""",
        place["district_code"],
    )
    assert changed != "UPDATE 0"
    still = await client.get(SUMMARIES, params=params)
    map_still = await client.get(f"{MAPS}/poverty_rate", params=map_params)
    assert still.content == before.content
    assert still.headers["etag"] == before.headers["etag"]
    assert map_still.content == map_before.content
    cached = await client.get(
        SUMMARIES, params=params, headers={"If-None-Match": before.headers["etag"]}
    )
    assert cached.status_code == 304
    out = refresh(url)
    assert "incremental" in out, out
    assert "1 districts counted" in out, out
    after = await client.get(SUMMARIES, params=params)
    map_after = await client.get(f"{MAPS}/poverty_rate", params=map_params)
    assert after.status_code == map_after.status_code == 200
    assert after.json()["rows"] != before.json()["rows"]
    assert map_after.json()["features"] != map_before.json()["features"]
    assert after.json()["registry_version"] > before.json()["registry_version"]
    assert after.json()["as_of"] > before.json()["as_of"]
    assert map_after.json()["as_of"] == after.json()["as_of"]
    assert after.headers["etag"] != before.headers["etag"]
    stale = await client.get(
        SUMMARIES, params=params, headers={"If-None-Match": before.headers["etag"]}
    )
    assert stale.status_code == 200
    direct = await summary_direct(
        pool, ["district", "poverty_band"], {"province": [place["province_code"]]}
    )
    assert without_stamp(after.json()) == without_stamp(direct)


async def cube(owner: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [tuple(r) for r in await owner.fetch(f"SELECT * FROM {table} ORDER BY {order}")]
        for table, order in (
            ("public_cube", "1, 2, 3, 4, 5, 6"),
            ("public_map_cube", "1, 2, 3, 4, 5"),
            ("public_districts", "1, 2, 3"),
        )
    }


async def test_an_incremental_refresh_recounts_what_changed_and_equals_a_full_one(
    owner: asyncpg.Connection, url: str
) -> None:
    refresh(url)
    # A phone number is nothing the public products count: nothing to do.
    await owner.execute("UPDATE households SET phone = '03001234567' WHERE id <= 50")
    assert await owner.fetchval("SELECT count(*) FROM public_products_dirty") == 0
    assert "nothing changed" in refresh(url)
    place = await busiest(owner)
    other = await owner.fetchrow(
        """SELECT province_code, division_code, district_code FROM households
            WHERE district_code <> $1 AND lat IS NOT NULL
            GROUP BY 1, 2, 3 ORDER BY count(*) DESC LIMIT 1""",
        place["district_code"],
    )
    assert other is not None
    first, second = [
        r["id"]
        for r in await owner.fetch(
            "SELECT id FROM households WHERE district_code = $1 ORDER BY id LIMIT 2",
            place["district_code"],
        )
    ]
    async with owner.transaction():
        # A member dies, another is born elsewhere, a household moves and is re-scored.
        await owner.execute(
            """UPDATE members SET deceased_on = current_date
                WHERE id = (SELECT min(m.id) FROM members m
                             WHERE m.household_id = $1 AND m.deceased_on IS NULL)""",
            first,
        )
        await owner.execute(
            """UPDATE households SET province_code = $2, division_code = $3,
                      district_code = $4, lat = lat + 0.01, pmt_score = 71.5,
                      poverty_band = 'well_off'
                WHERE id = $1""",
            second,
            other["province_code"],
            other["division_code"],
            other["district_code"],
        )
    before = await latest(owner)
    out = refresh(url)
    incremental = await latest(owner)
    assert incremental["id"] > before["id"]
    assert not incremental["full"], out
    assert incremental["districts"] == 2
    assert incremental["answers"] > 0
    counted = await cube(owner)
    assert "full" in refresh(url, "--full")
    full = await latest(owner)
    assert full["full"]
    assert full["districts"] > 2
    assert await cube(owner) == counted


async def test_the_public_cut_off_is_a_whole_number(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{MAPS}/poverty_rate", params={"cut_off": 32.5})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "whole-number cut-off" in r.json()["detail"]
    r = await client.get(f"{MAPS}/poverty_rate", params={"cut_off": "40.0", "resolution": 2})
    assert r.status_code == 200
    assert r.json()["cut_off"] == 40


async def test_openapi_lists_the_refresh_and_its_503(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for path in (SUMMARIES, f"{MAPS}/{{measure}}"):
        responses = document["paths"][path]["get"]["responses"]
        assert "first refresh" in responses["503"]["description"]
        assert "Retry-After" in responses["503"]["headers"]
    summary = document["components"]["schemas"]["PublicSummary"]
    assert "as_of" in summary["required"]


async def wait_for_refresh(owner: asyncpg.Connection, after: int) -> asyncpg.Record:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        row = await owner.fetchrow(
            "SELECT * FROM public_refreshes WHERE id > $1 ORDER BY id LIMIT 1", after
        )
        if row is not None:
            return row
        await asyncio.sleep(0.2)
    raise AssertionError("no refresh came")


async def test_the_worker_refreshes_at_most_every_interval(
    owner: asyncpg.Connection, url: str
) -> None:
    refresh(url)
    start = await latest(owner)
    place = await busiest(owner)
    interval = 2.0
    settings = settings_for(url, in_process_workers=1, public_refresh_seconds=interval)
    async for c in open_client(settings):
        await owner.execute(
            "UPDATE households SET pmt_score = 3 WHERE id = (SELECT min(id) FROM households "
            "WHERE district_code = $1)",
            place["district_code"],
        )
        first = await wait_for_refresh(owner, start["id"])
        assert not first["full"]
        assert first["districts"] == 1
        for score in (4, 5, 6):  # three changes in a row: the next refresh takes them all
            await owner.execute(
                "UPDATE households SET pmt_score = $2 WHERE id = (SELECT min(id) FROM "
                "households WHERE district_code = $1)",
                place["district_code"],
                score,
            )
        second = await wait_for_refresh(owner, first["id"])
        waited = (second["as_of"] - first["finished_at"]).total_seconds()
        assert waited >= max(interval, first["seconds"])
        assert await owner.fetchval("SELECT count(*) FROM public_products_dirty") == 0
        r = await c.get(SUMMARIES, params={"group_by": "district", "district": place[2]})
        assert r.status_code == 200
        assert r.json()["as_of"] == second["as_of"].isoformat()


@pytest.fixture
def migrated_with_households() -> Iterator[str]:
    """A registry that had households before the public cube existed: migrated to the
    revision before it, seeded, then migrated to head."""
    u = create_database(revision="0015")
    try:
        # The seed loads the households; its closing refresh fails on the old schema.
        seeded = run(["seed", "--households", "300", "--seed", "2"], u, check=False)
        assert "seeded 300 households" in seeded.stdout, seeded.stderr
        run(["db", "upgrade"], u)
        yield u
    finally:
        drop_database(u)


async def test_503_until_the_first_refresh_of_an_existing_registry(
    migrated_with_households: str,
) -> None:
    u = migrated_with_households
    async for c in open_client(settings_for(u)):
        for path, params in (
            (SUMMARIES, {"group_by": "province"}),
            (f"{MAPS}/households", {}),
            (f"{MAPS}/households", {"format": "png"}),
        ):
            r = await c.get(path, params=params)
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["retry-after"] == "60"
            assert "first time" in r.json()["detail"]
        page = await c.get("/statistics")
        assert page.status_code == 503
        assert page.headers["content-type"].startswith("text/html")
    # The worker's refresher counts it without being asked.
    async for c in open_client(settings_for(u, in_process_workers=1, public_refresh_seconds=1)):
        deadline = time.monotonic() + 120
        r = await c.get(SUMMARIES, params={"group_by": "province"})
        while r.status_code == 503 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            r = await c.get(SUMMARIES, params={"group_by": "province"})
        assert r.status_code == 200, r.text
        assert sum(m["households"] or 0 for m in r.json()["margins"][-1:]) == 300


@pytest.fixture
def fresh_install() -> Iterator[str]:
    u = create_database()
    try:
        yield u
    finally:
        drop_database(u)


async def test_a_fresh_install_answers_at_once(fresh_install: str) -> None:
    async for c in open_client(settings_for(fresh_install)):
        r = await c.get(SUMMARIES, params={"group_by": "province,poverty_band"})
        assert r.status_code == 200, r.text
        assert r.json()["rows"] == []  # no household: nothing listed, nothing published
        r = await c.get(f"{MAPS}/households")
        assert r.status_code == 200
        assert r.json()["features"] == []
        assert (await c.get("/statistics")).status_code == 200
