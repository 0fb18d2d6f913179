"""GET /v1/public/geography against the shipped data: levels, parents, search, caching, errors.

Expected units are read from app/data/geography.csv itself, so the counts follow the data.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import make_settings, open_client

from app.data import GEOGRAPHY_CSV
from app.main import create_app
from app.schemas.geography import GeoUnits

URL = "/v1/public/geography"
LISTED_LEVELS = ("province", "division", "district", "tehsil")


@cache
def shipped() -> dict[str, dict[str, str]]:
    """The CSV rows by code."""
    with GEOGRAPHY_CSV.open(encoding="utf-8") as fh:
        return {row["code"]: row for row in csv.DictReader(fh)}


def codes_at(level: str) -> list[str]:
    return sorted(code for code, row in shipped().items() if row["level"] == level)


def has_ancestor(code: str, ancestor: str) -> bool:
    parent = shipped()[code]["parent_code"]
    while parent:
        if parent == ancestor:
            return True
        parent = shipped()[parent]["parent_code"]
    return False


def expected_item(code: str) -> dict[str, Any]:
    row = shipped()[code]
    return {
        "code": code,
        "name": row["name_en"],
        "name_ur": row["name_ur"] or None,
        "level": row["level"],
        "parent": row["parent_code"] or None,
        "centroid": {"lat": float(row["lat"]), "lon": float(row["lon"])} if row["lat"] else None,
    }


async def items(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await client.get(URL, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return GeoUnits.model_validate(response.json()).model_dump(mode="json")["items"]


def codes(answer: list[dict[str, Any]]) -> list[str]:
    return [item["code"] for item in answer]


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert "etag" not in response.headers
    return body


class Untouchable:
    """Stands in for the pool: any use of it means a request reached the database."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used ({name})")


@pytest.fixture(scope="module")
async def no_db_client(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose app has no usable pool: what it answers was decided before any query."""
    app = create_app(make_settings(seeded_url))
    async with app.router.lifespan_context(app):
        pool = app.state.pool
        app.state.pool = Untouchable()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://nser.test") as c:
                yield c
        finally:
            app.state.pool = pool


# -- the shipped levels --------------------------------------------------------------------


def test_the_shipped_data_has_every_level() -> None:
    assert len(codes_at("province")) >= 4  # the four provinces, plus the territories
    for level in LISTED_LEVELS:
        assert codes_at(level), level


@pytest.mark.parametrize("level", LISTED_LEVELS)
async def test_a_level_lists_every_shipped_unit_sorted_by_code(
    client: httpx.AsyncClient, level: str
) -> None:
    answer = await items(client, level=level)
    assert codes(answer) == codes_at(level)
    assert answer == [expected_item(code) for code in codes_at(level)]


async def test_provinces_have_urdu_names_centroids_and_no_parent(
    client: httpx.AsyncClient,
) -> None:
    answer = await items(client, level="province")
    assert len(answer) == len(codes_at("province"))
    assert "Punjab" in {item["name"] for item in answer}
    for item in answer:
        assert item["parent"] is None
        assert item["name_ur"]
        assert item["centroid"] is not None


async def test_urdu_names_and_centroids_follow_the_data(client: httpx.AsyncClient) -> None:
    answer = await items(client, level="tehsil")
    with_ur = {item["code"] for item in answer if item["name_ur"]}
    assert with_ur == {c for c in codes_at("tehsil") if shipped()[c]["name_ur"]}
    with_centroid = {item["code"] for item in answer if item["centroid"]}
    assert with_centroid == {c for c in codes_at("tehsil") if shipped()[c]["lat"]}
    assert with_ur
    assert with_centroid


# -- parents -------------------------------------------------------------------------------


async def test_districts_of_a_province_at_any_depth(client: httpx.AsyncClient) -> None:
    answer = await items(client, level="district", parent="PK6")
    expected = [c for c in codes_at("district") if has_ancestor(c, "PK6")]
    assert codes(answer) == expected
    assert "Lahore" in {item["name"] for item in answer}
    # Each item's parent is the unit directly above it (a division), not the one asked.
    assert {item["parent"] for item in answer} <= set(codes_at("division"))


async def test_districts_of_a_division_are_its_children(client: httpx.AsyncClient) -> None:
    answer = await items(client, level="district", parent="PK6D06")
    assert codes(answer) == [c for c in codes_at("district") if has_ancestor(c, "PK6D06")]
    assert {item["parent"] for item in answer} == {"PK6D06"}


async def test_tehsils_of_a_district(client: httpx.AsyncClient) -> None:
    answer = await items(client, level="tehsil", parent="PK617")
    assert answer == [expected_item(c) for c in codes_at("tehsil") if has_ancestor(c, "PK617")]
    assert [item["name"] for item in answer] == ["Lahore Cantt", "Lahore City"]


async def test_tehsils_of_a_province(client: httpx.AsyncClient) -> None:
    answer = await items(client, level="tehsil", parent="PK7")
    assert codes(answer) == [c for c in codes_at("tehsil") if has_ancestor(c, "PK7")]


async def test_unknown_parent_is_404(client: httpx.AsyncClient) -> None:
    for parent in ("PK9", "PK6D99", "XX1"):
        response = await client.get(URL, params={"level": "district", "parent": parent})
        body = assert_problem(response, 404)
        assert parent in body["detail"]


@pytest.mark.parametrize(
    ("level", "parent"),
    [("district", "PK617"), ("district", "PK61701"), ("province", "PK6"), ("division", "PK617")],
)
async def test_a_parent_not_coarser_than_the_level_is_422(
    client: httpx.AsyncClient, level: str, parent: str
) -> None:
    body = assert_problem(await client.get(URL, params={"level": level, "parent": parent}), 422)
    assert body["errors"][0]["field"] == "parent"


# -- name search ---------------------------------------------------------------------------


@pytest.mark.parametrize("q", ["lahore", "LAHORE", "LaHoRe", "ahor"])
async def test_name_search_is_case_insensitive_substring(client: httpx.AsyncClient, q: str) -> None:
    for level in ("district", "tehsil"):
        expected = [c for c in codes_at(level) if q.lower() in shipped()[c]["name_en"].lower()]
        assert codes(await items(client, level=level, q=q)) == expected
    assert "PK617" in codes(await items(client, level="district", q=q))
    assert {"PK61701", "PK61702"} <= set(codes(await items(client, level="tehsil", q=q)))


async def test_name_search_matches_the_urdu_name(client: httpx.AsyncClient) -> None:
    assert codes(await items(client, level="district", q=shipped()["PK617"]["name_ur"])) == [
        "PK617"
    ]


async def test_name_search_within_a_parent(client: httpx.AsyncClient) -> None:
    assert codes(await items(client, level="district", parent="PK6", q="lahore")) == ["PK617"]
    assert await items(client, level="district", parent="PK7", q="lahore") == []


@pytest.mark.parametrize("q", ["%", "_", "\\", "'"])
async def test_search_characters_are_literal(client: httpx.AsyncClient, q: str) -> None:
    assert await items(client, level="province", q=q) == []


# -- union councils ------------------------------------------------------------------------


async def test_union_councils_of_a_tehsil_after_seeding(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    answer = await items(client, level="union_council", parent="PK61701")
    stored = await db.fetch(
        "SELECT code FROM geo_units WHERE level = 'union_council' AND parent_code = 'PK61701'"
    )
    assert sorted(r["code"] for r in stored) == codes(answer)
    assert len(answer) >= 8
    for item in answer:
        assert item["level"] == "union_council"
        assert item["parent"] == "PK61701"
        assert item["code"].startswith("PK61701")
        assert item["name"]
        assert item["centroid"] is not None


async def test_union_councils_of_a_district_cover_its_tehsils(client: httpx.AsyncClient) -> None:
    answer = await items(client, level="union_council", parent="PK617")
    assert {item["parent"] for item in answer} == {"PK61701", "PK61702"}
    assert codes(answer) == sorted(codes(answer))


async def test_villages_of_a_union_council(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    uc = await db.fetchval(
        "SELECT code FROM geo_units WHERE level = 'union_council' ORDER BY code LIMIT 1"
    )
    answer = await items(client, level="village", parent=uc)
    expected = await db.fetch(
        "SELECT code FROM geo_units WHERE level = 'village' AND parent_code = $1", uc
    )
    assert sorted(i["code"] for i in answer) == sorted(r["code"] for r in expected)
    assert answer
    assert {i["level"] for i in answer} == {"village"}
    body = assert_problem(await client.get(URL, params={"level": "village"}), 422)
    assert body["errors"][0]["field"] == "parent"


async def test_union_councils_need_a_parent(no_db_client: httpx.AsyncClient) -> None:
    body = assert_problem(await no_db_client.get(URL, params={"level": "union_council"}), 422)
    assert body["errors"][0]["field"] == "parent"
    assert "required" in body["detail"]


# -- caching -------------------------------------------------------------------------------


async def test_etag_and_cache_control(client: httpx.AsyncClient) -> None:
    first = await client.get(URL, params={"level": "district", "parent": "PK6"})
    tag = first.headers["etag"]
    assert tag.startswith('"')
    assert tag.endswith('"')
    assert first.headers["cache-control"] == "public, max-age=86400"
    again = await client.get(URL, params={"level": "district", "parent": "PK6"})
    assert again.headers["etag"] == tag
    other = await client.get(URL, params={"level": "district", "parent": "PK7"})
    assert other.headers["etag"] != tag


@pytest.mark.parametrize("written", ["{tag}", "W/{tag}", '"stale", {tag}', "*"])
async def test_if_none_match_answers_304(client: httpx.AsyncClient, written: str) -> None:
    params = {"level": "province"}
    tag = (await client.get(URL, params=params)).headers["etag"]
    response = await client.get(
        URL, params=params, headers={"If-None-Match": written.format(tag=tag)}
    )
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == tag
    assert response.headers["cache-control"] == "public, max-age=86400"


async def test_a_stale_tag_gets_the_body(client: httpx.AsyncClient) -> None:
    response = await client.get(
        URL, params={"level": "province"}, headers={"If-None-Match": '"stale"'}
    )
    assert response.status_code == 200
    assert len(response.json()["items"]) == len(codes_at("province"))


# -- malformed requests never reach the database --------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"level": "city"},
        {"level": "Province"},
        {},
        {"parent": "PK6"},
    ],
)
async def test_unknown_or_missing_level_is_422(
    no_db_client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    body = assert_problem(await no_db_client.get(URL, params=params), 422)
    assert body["errors"][0]["field"] == "level"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("parent", "PK6\x00"),
        ("parent", "\x00"),
        ("parent", "PK6\n"),
        ("parent", "PK 6"),
        ("parent", "PK6-D01"),
        ("parent", "PK6'"),
        ("parent", ""),
        ("parent", "P" * 17),
        ("parent", "PK6\u0661"),  # an Arabic-Indic digit is not [0-9]
        ("q", "lahore\x00"),
        ("q", "\x00"),
        ("q", "lahore\n"),
        ("q", "la\thore"),
        ("q", "lahore\x7f"),
        ("q", "lahore\x85"),
        ("q", ""),
        ("q", "a" * 101),
    ],
)
async def test_malformed_parent_or_q_is_422_before_any_query(
    no_db_client: httpx.AsyncClient, field: str, value: str
) -> None:
    response = await no_db_client.get(URL, params={"level": "district", field: value})
    body = assert_problem(response, 422)
    assert body["errors"][0]["field"] == field


async def test_a_raw_nul_in_the_query_string_is_422(no_db_client: httpx.AsyncClient) -> None:
    for query in ("level=district&q=la%00hore", "level=district&parent=PK6%00"):
        assert_problem(await no_db_client.get(f"{URL}?{query}"), 422)


async def test_longest_allowed_search_is_answered(client: httpx.AsyncClient) -> None:
    assert await items(client, level="tehsil", q="a" * 100) == []


# -- public reference data -----------------------------------------------------------------


async def test_public_without_audit_or_rate_limit(seeded_url: str, db: asyncpg.Connection) -> None:
    """No credentials, no audit record, and not counted against the public look-up limit."""
    audited = await db.fetchval("SELECT count(*) FROM audit_log")
    async for c in open_client(make_settings(seeded_url, public_lookup_limits="1/minute")):
        for _ in range(5):
            response = await c.get(URL, params={"level": "province"})
            assert response.status_code == 200, response.text
            assert "retry-after" not in response.headers
    assert await db.fetchval("SELECT count(*) FROM audit_log") == audited


async def test_openapi_documents_the_answers(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"][URL]["get"]
    responses = operation["responses"]
    assert set(responses) >= {"200", "304", "404", "422"}
    for status in ("404", "422"):
        assert "application/problem+json" in responses[status]["content"]
    assert {"ETag", "Cache-Control"} <= set(responses["200"]["headers"])
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) >= {"level", "parent", "q"}
    assert params["level"]["required"] is True
