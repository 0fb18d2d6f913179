"""`nser seed` invariants, checked in SQL on a freshly seeded database (3000 households).

The module seeds its own database: the session's shared one is changed by other modules
(updates applied, test rows inserted), and these are invariants of the seed itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from conftest import create_database, drop_database, fresh_database, run_cli

from app.services.pmt import model as pmt


@pytest.fixture(scope="module")
def own_seeded_url() -> Iterator[str]:
    with fresh_database(households=3000, seed=7) as url:
        yield url


@pytest.fixture(scope="module")
async def db(own_seeded_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(own_seeded_url)
    yield conn
    await conn.close()


async def test_cnics_are_unique_13_digits_with_gender_parity(db: asyncpg.Connection) -> None:
    row = await db.fetchrow(
        """SELECT count(cnic) AS n, count(DISTINCT cnic) AS distinct_n,
                  count(*) FILTER (WHERE cnic !~ '^[1-9][0-9]{12}$') AS malformed,
                  count(*) FILTER (WHERE gender = 'male' AND right(cnic, 1)::int % 2 = 0)
                    AS even_men,
                  count(*) FILTER (WHERE gender = 'female' AND right(cnic, 1)::int % 2 = 1)
                    AS odd_women
             FROM members WHERE cnic IS NOT NULL"""
    )
    assert row["n"] > 10_000
    assert row["n"] == row["distinct_n"]
    assert (row["malformed"], row["even_men"], row["odd_women"]) == (0, 0, 0)


async def test_cnic_first_digit_mostly_matches_the_province(db: asyncpg.Connection) -> None:
    share = await db.fetchval(
        """SELECT avg((left(m.cnic, 1) = p.cnic_digit)::int)
             FROM members m JOIN households h ON h.id = m.household_id
             JOIN geo_units p ON p.code = h.province_code
            WHERE m.cnic IS NOT NULL"""
    )
    assert 0.9 < share < 1.0


async def test_every_adult_has_a_cnic_and_some_children_do_not(db: asyncpg.Connection) -> None:
    row = await db.fetchrow(
        """SELECT count(*) FILTER (WHERE age >= 18 AND cnic IS NULL) AS adults_without,
                  avg((cnic IS NOT NULL)::int) FILTER (WHERE age < 18) AS children_with
             FROM (SELECT m.cnic, date_part('year', age(h.surveyed_on, m.date_of_birth)) AS age
                     FROM members m JOIN households h ON h.id = m.household_id) x"""
    )
    assert row["adults_without"] == 0
    assert 0.3 < row["children_with"] < 0.5


async def test_exactly_one_living_head_per_household(db: asyncpg.Connection) -> None:
    bad = await db.fetchval(
        """SELECT count(*) FROM households h
            WHERE (SELECT count(*) FROM members m
                    WHERE m.household_id = h.id AND m.relationship = 'head'
                      AND m.deceased_on IS NULL) <> 1"""
    )
    assert bad == 0


async def test_nobody_ever_married_under_18(db: asyncpg.Connection) -> None:
    bad = await db.fetchval(
        """SELECT count(*) FROM members m JOIN households h ON h.id = m.household_id
            WHERE m.marital_status <> 'never_married'
              AND (date_part('year', age(h.surveyed_on, m.date_of_birth)) < 18
                   OR date_part('year', age(current_date, m.date_of_birth)) < 18)"""
    )
    assert bad == 0
    families = await db.fetchval("SELECT count(*) FROM families")
    households = await db.fetchval("SELECT count(*) FROM households")
    # Wives of married sons and daughters back home make a second family in some households.
    assert households * 0.9 < families < households * 1.6


async def test_household_size_age_and_sex_structure(db: asyncpg.Connection) -> None:
    row = await db.fetchrow(
        """SELECT (SELECT count(*) FROM members)::float8 / (SELECT count(*) FROM households)
                    AS mean_size,
                  avg((gender = 'male')::int) AS male,
                  avg((date_part('year', age(h.surveyed_on, m.date_of_birth)) < 18)::int)
                    AS under_18,
                  avg((deceased_on IS NOT NULL)::int) AS deceased
             FROM members m JOIN households h ON h.id = m.household_id"""
    )
    assert 5.8 < row["mean_size"] < 6.8
    assert 0.49 < row["male"] < 0.53
    assert 0.35 < row["under_18"] < 0.6
    assert 0.003 < row["deceased"] < 0.03


async def test_deaths_fall_between_birth_and_today(db: asyncpg.Connection) -> None:
    bad = await db.fetchval(
        """SELECT count(*) FROM members
            WHERE deceased_on IS NOT NULL
              AND (deceased_on < date_of_birth OR deceased_on >= current_date)"""
    )
    assert bad == 0


async def test_missing_by_design_areas(db: asyncpg.Connection) -> None:
    row = await db.fetchrow(
        """WITH hh AS (
             SELECT h.*, (h.province_code = 'PK2' OR NOT d.geo_tagged) AS untagged
               FROM households h JOIN geo_units d ON d.code = h.district_code)
           SELECT count(*) FILTER (WHERE untagged) AS untagged,
                  count(*) FILTER (WHERE untagged AND (lat IS NOT NULL OR lon IS NOT NULL
                                                      OR phone IS NOT NULL)) AS leaked,
                  count(*) FILTER (WHERE NOT untagged AND lat IS NULL) AS tagged_without,
                  avg((phone IS NOT NULL)::int) FILTER (WHERE NOT untagged) AS phones
             FROM hh"""
    )
    assert row["untagged"] > 100
    assert (row["leaked"], row["tagged_without"]) == (0, 0)
    assert row["phones"] > 0.8
    members = await db.fetchrow(
        """SELECT count(*) FILTER (WHERE m.relationship <> 'head'
                                     AND (m.education IS NOT NULL
                                          OR m.disabilities IS NOT NULL)) AS leaked,
                  count(*) FILTER (WHERE m.relationship = 'head' AND m.education IS NULL)
                    AS heads_without
             FROM members m JOIN households h ON h.id = m.household_id
             JOIN geo_units d ON d.code = h.district_code
            WHERE h.province_code = 'PK2' OR NOT d.geo_tagged"""
    )
    assert (members["leaked"], members["heads_without"]) == (0, 0)
    elsewhere = await db.fetchval(
        """SELECT avg((cardinality(m.disabilities) > 0)::int)
             FROM members m JOIN households h ON h.id = m.household_id
             JOIN geo_units d ON d.code = h.district_code
            WHERE h.province_code <> 'PK2' AND d.geo_tagged"""
    )
    assert 0.015 < elsewhere < 0.05


async def test_geography_codes_nest_in_geo_units(db: asyncpg.Connection) -> None:
    bad = await db.fetchval(
        """SELECT count(*) FROM households h
             LEFT JOIN geo_units v ON v.code = h.village_code AND v.level = 'village'
             LEFT JOIN geo_units u ON u.code = v.parent_code AND u.level = 'union_council'
             LEFT JOIN geo_units t ON t.code = u.parent_code AND t.level = 'tehsil'
             LEFT JOIN geo_units d ON d.code = t.parent_code AND d.level = 'district'
             LEFT JOIN geo_units dv ON dv.code = d.parent_code AND dv.level = 'division'
            WHERE u.code IS DISTINCT FROM h.union_council_code
               OR t.code IS DISTINCT FROM h.tehsil_code
               OR d.code IS DISTINCT FROM h.district_code
               OR dv.code IS DISTINCT FROM h.division_code
               OR dv.parent_code IS DISTINCT FROM h.province_code
               OR v.province_code IS DISTINCT FROM h.province_code"""
    )
    assert bad == 0
    per_tehsil = await db.fetchrow(
        """SELECT min(n) AS lo, max(n) AS hi FROM (
             SELECT count(*) AS n FROM geo_units WHERE level = 'union_council'
              GROUP BY parent_code) x"""
    )
    assert (per_tehsil["lo"], per_tehsil["hi"]) == (8, 12)


async def test_provinces_spread_roughly_by_population(db: asyncpg.Connection) -> None:
    shares = dict(
        await db.fetch(
            """SELECT province_code, count(*)::float8 / sum(count(*)) OVER ()
                 FROM households GROUP BY 1"""
        )
    )
    assert shares["PK6"] == pytest.approx(0.53, abs=0.04)
    assert shares["PK7"] == pytest.approx(0.23, abs=0.03)
    assert shares["PK5"] == pytest.approx(0.15, abs=0.03)
    assert shares["PK2"] == pytest.approx(0.06, abs=0.02)


async def test_bands_agree_with_scores_and_all_five_are_present(db: asyncpg.Connection) -> None:
    model = await pmt.current_model(db)
    rows = await db.fetch("SELECT pmt_score, poverty_band, pmt_version FROM households")
    assert all(r["pmt_version"] == model.version for r in rows)
    assert all(pmt.band_of(model, float(r["pmt_score"])) == r["poverty_band"] for r in rows)
    counts = dict.fromkeys(pmt.BANDS, 0)
    for r in rows:
        counts[r["poverty_band"]] += 1
    assert all(0.05 < n / len(rows) < 0.45 for n in counts.values()), counts


_SCHEMA = """
SELECT 'constraint ' || conname || ' ' || contype::text || ' validated ' || convalidated
  FROM pg_constraint WHERE conrelid IN ('households'::regclass, 'members'::regclass)
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes WHERE tablename IN ('households', 'members')
ORDER BY 1
"""


async def _rows(url: str, sql: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def test_a_seeded_registry_keeps_every_index_check_and_key(own_seeded_url: str) -> None:
    """The seed drops indexes, checks and foreign keys to load; all come back, validated.
    (A re-added check's text is PostgreSQL's re-parse of the same expression, so the
    constraints are compared by name, kind and validation; indexes by definition.)"""
    empty = create_database()
    try:
        expected = asyncio.run(_rows(empty, _SCHEMA))
    finally:
        drop_database(empty)
    assert any(" c validated true" in row for row in expected)
    assert asyncio.run(_rows(own_seeded_url, _SCHEMA)) == expected


def test_scores_written_while_loading_are_the_sql_scores(own_seeded_url: str) -> None:
    """The seed scores each household as it generates it (the model's Python twin); the
    bulk SQL re-score must then find nothing to change, to the cent and the band."""
    out = run_cli(["pmt", "recompute"], own_seeded_url).stdout
    assert ": 0 households changed" in out, out


async def test_form_numbers_unique_and_surveys_in_2019_2021(db: asyncpg.Connection) -> None:
    row = await db.fetchrow(
        """SELECT count(DISTINCT form_number) AS forms, count(*) AS n,
                  min(surveyed_on) AS first, max(surveyed_on) AS last FROM households"""
    )
    assert row["forms"] == row["n"]
    assert row["first"].year >= 2019
    assert row["last"].year <= 2021


_CHECKSUM = "SELECT md5(string_agg(coalesce(cnic, '-'), ',' ORDER BY id)) FROM members"


async def _fetch(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_same_seed_gives_the_same_registry_and_appends_continue() -> None:
    first, second = create_database(), create_database()
    try:
        for url in (first, second):
            run_cli(["seed", "--households", "500", "--seed", "11"], url)
        sums = [asyncio.run(_fetch(url, _CHECKSUM)) for url in (first, second)]
        assert sums[0] == sums[1]
        # An append continues the ids and keeps CNICs unique.
        out = run_cli(["seed", "--households", "300", "--seed", "11"], first).stdout
        assert "(501..800)" in out
        dupes = asyncio.run(_fetch(first, "SELECT count(cnic) - count(DISTINCT cnic) FROM members"))
        assert dupes == 0
        assert asyncio.run(_fetch(first, "SELECT count(*) FROM households")) == 800
    finally:
        drop_database(first)
        drop_database(second)


def test_seed_rejects_a_non_positive_count(database_url: str) -> None:
    result = run_cli(["seed", "--households", "0"], database_url, check=False)
    assert result.returncode != 0
    assert "at least 1" in result.stderr
