"""PMT: the in-memory score, model validation, Python == SQL, and `nser pmt recompute`."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import pytest
from conftest import fresh_database, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from app.services.pmt import model as pmt
from app.services.pmt.features import MemberSummary, member_aggregate
from app.services.pmt.model import ILLUSTRATIVE, InvalidModel, PmtModel, band_of, clamp, score

BANDS = [
    ("ultra_poor", 16.17),
    ("very_poor", 24.0),
    ("poor", 32.0),
    ("non_poor", 50.0),
    ("well_off", None),
]
SURVEYED = date(2020, 6, 15)


def _model(intercept: float = 10.0, **weights: float) -> PmtModel:
    return PmtModel(version="t-1", intercept=intercept, weights=weights, bands=BANDS)


def _member(born: date, relationship: str = "son", **extra: Any) -> dict[str, Any]:
    return {"date_of_birth": born, "relationship": relationship, **extra}


HOUSEHOLD = {
    "surveyed_on": SURVEYED,
    "rooms": 3,
    "toilet_type": "flush_septic",
    "electrical": ["refrigerator", "television"],
    "gas": [],
    "kitchen": ["cooking_stove"],
    "cows": 2,
    "buffaloes": 1,
    "bullocks": 0,
    "goats": 3,
    "lambs": 0,
    "land_muraba": Decimal("0"),
    "land_acre": Decimal("2"),
    "land_kanal": Decimal("4"),
    "land_marla": Decimal("0"),
}
MEMBERS = [
    _member(date(1980, 1, 1), "head", education="matric"),
    _member(date(1985, 1, 1), "spouse", education="primary", disabilities=["visual"]),
    _member(date(2010, 6, 16), "son"),  # 9 at the survey: a dependent
    _member(date(1950, 1, 1), "father", deceased_on=date(2022, 1, 1)),  # not counted
]


def test_score_of_a_hand_computed_household() -> None:
    model = _model(
        10.0,
        household_size=-1.0,  # 3 living members: -3
        dependency_ratio=-6.0,  # 1 of 3: -2
        rooms_per_member=3.0,  # 3 rooms / 3: +3
        head_education_years=0.5,  # matric = 10 years: +5
        has_disabled_member=-1.5,  # -1.5
        toilet_flush=2.0,  # +2
        refrigerator=4.0,  # +4
        large_livestock=0.5,  # 3 head of cattle: +1.5
        small_livestock=0.25,  # 3 goats: +0.75
        log_land_acres=2.0,  # ln(1 + 2.5 acres) * 2 = 2.5055...
    )
    value, band = score(model, HOUSEHOLD, MEMBERS)
    assert value == 22.26  # 10 - 3 - 2 + 3 + 5 - 1.5 + 2 + 4 + 1.5 + 0.75 + 2.5055
    assert band == "very_poor"


def test_member_summary_scores_like_the_member_rows() -> None:
    """Surveys score from a summary of the members (birth dates, heads, the first head's
    education, the disabled), counted at whatever survey date the household ends with."""
    living = [m for m in MEMBERS if m.get("deceased_on") is None]
    summary = MemberSummary(
        born=[m["date_of_birth"] for m in living],
        heads=1,
        head_education="matric",
        disabled=1,
    )
    for surveyed_on in (SURVEYED, date(2025, 6, 16), date(2024, 2, 29)):
        household = {**HOUSEHOLD, "surveyed_on": surveyed_on}
        assert summary.aggregate(surveyed_on) == member_aggregate(MEMBERS, surveyed_on)
        assert pmt.score_aggregate(ILLUSTRATIVE, household, summary.aggregate(surveyed_on)) == (
            score(ILLUSTRATIVE, household, MEMBERS)
        )


def test_clamp_rounds_like_postgres_numeric() -> None:
    assert clamp(-5) == 0.0
    assert clamp(250) == 100.0
    assert clamp(16.165) == 16.17  # the binary value is 16.16499..., numeric sees 16.165
    assert clamp(0.005) == 0.01
    assert clamp(2.675) == 2.68  # binary 2.67499999..., numeric 2.675
    assert clamp(0.00004) == 0.0
    assert clamp(99.995) == 100.0


def _numeric_round(value: float) -> float:
    bounded = min(100.0, max(0.0, value))
    return float(Decimal(f"{bounded:.15g}").quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def test_clamp_rounds_every_tie_like_numeric() -> None:
    for thousandths in range(0, 100_001, 5):  # every value that sits on a tie, 0.005 apart
        assert clamp(thousandths / 1000) == _numeric_round(thousandths / 1000), thousandths


@settings(deadline=None)
@given(st.floats(min_value=-1, max_value=101, allow_nan=False))
def test_clamp_matches_numeric_rounding_of_the_15_digit_cast(value: float) -> None:
    assert clamp(value) == _numeric_round(value)


@settings(deadline=None)
@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_scores_are_clamped_to_0_100(intercept: float) -> None:
    value, band = score(_model(intercept, rooms_per_member=1.0), HOUSEHOLD, MEMBERS)
    assert 0.0 <= value <= 100.0
    assert band == band_of(ILLUSTRATIVE, value)


@settings(deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=2))
def test_bands_are_monotonic_in_the_score(values: list[float]) -> None:
    order = [name for name, _ in ILLUSTRATIVE.bands]
    ranks = [order.index(band_of(ILLUSTRATIVE, v)) for v in sorted(values)]
    assert ranks == sorted(ranks)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"weights": {"shoe_size": 1.0}}, "unknown PMT features"),
        ({"bands": [("a", 30.0), ("b", 20.0), ("c", None)]}, "must increase"),
        ({"bands": [("a", 30.0), ("b", 40.0)]}, "upper bound"),
        ({"bands": [("a", None), ("b", None)]}, "upper bound"),
        ({"bands": []}, "upper bound"),
        ({"weights": {"household_size": float("nan")}}, "finite"),
        ({"intercept": float("inf")}, "finite"),
        ({"version": "x'; DROP TABLE households; --"}, "invalid model version"),
        ({"bands": [("a b", 30.0), ("c", None)]}, "plain words"),
        ({"bands": [("a", 30.0), ("a", None)]}, "plain words"),
    ],
)
def test_invalid_models_are_refused(changes: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "version": "t-1",
        "intercept": 1.0,
        "weights": {},
        "bands": BANDS,
        **changes,
    }
    with pytest.raises(InvalidModel, match=message):
        PmtModel(**fields)


def test_model_from_a_row_with_json_text() -> None:
    row = {
        "version": "v2",
        "intercept": 3,
        "weights": json.dumps({"household_size": -1}),
        "bands": json.dumps(ILLUSTRATIVE.bands_json()),
        "illustrative": False,
    }
    model = PmtModel.from_row(row)
    assert model.weights == {"household_size": -1.0}
    assert model.bands == ILLUSTRATIVE.bands
    assert not model.illustrative


async def test_python_and_sql_scores_agree_on_seeded_households(db: asyncpg.Connection) -> None:
    model = await pmt.current_model(db)
    assert model == ILLUSTRATIVE  # the migration ships the same model as the code
    households = await db.fetch("SELECT * FROM households ORDER BY id LIMIT 600")
    assert len(households) == 600
    members = await db.fetch(
        "SELECT * FROM members WHERE household_id = ANY($1::bigint[])",
        [h["id"] for h in households],
    )
    by_household: dict[int, list[asyncpg.Record]] = {}
    for m in members:
        by_household.setdefault(m["household_id"], []).append(m)
    for h in households:
        value, band = score(model, h, by_household[h["id"]])
        assert (value, band) == (float(h["pmt_score"]), h["poverty_band"]), h["id"]


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


async def _install_model(url: str, version: str, **weights: float) -> None:
    conn = await _connect(url)
    try:
        async with conn.transaction():
            await conn.execute("UPDATE pmt_models SET is_current = false WHERE is_current")
            await conn.execute(
                """INSERT INTO pmt_models (version, description, intercept, weights, bands,
                                           illustrative, is_current)
                   VALUES ($1, 'test', 30, $2::jsonb, $3::jsonb, true, true)""",
                version,
                json.dumps(weights),
                json.dumps(ILLUSTRATIVE.bands_json()),
            )
    finally:
        await conn.close()


async def _history(url: str) -> tuple[int, int, int]:
    conn = await _connect(url)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) AS n,
                      count(*) FILTER (WHERE source = 'pmt_recompute'
                                         AND after->>'pmt_version' = 'test-2') AS ours,
                      (SELECT count(*) FROM households WHERE pmt_version <> 'test-2') AS stale
                 FROM household_history"""
        )
        return row["n"], row["ours"], row["stale"]
    finally:
        await conn.close()


async def _rescore_one(url: str) -> tuple[int, int, int]:
    """Change one household's rooms and re-score it inside a caller's transaction."""
    conn = await _connect(url)
    try:
        async with conn.transaction():
            hid = await conn.fetchval("SELECT min(id) FROM households")
            await conn.execute("UPDATE households SET rooms = rooms + 5 WHERE id = $1", hid)
            changed = await pmt.rescore_households(conn, [hid])
            again = await pmt.rescore_households(conn, [hid])
        return changed, again, await pmt.rescore_households(conn, [])
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def fresh_url() -> Any:
    with fresh_database(households=400, seed=3) as url:
        yield url


def test_recompute_is_idempotent_and_writes_history_on_a_new_model(fresh_url: str) -> None:
    out = run_cli(["pmt", "recompute"], fresh_url).stdout
    assert "0 households changed" in out
    assert asyncio.run(_history(fresh_url))[0] == 0

    asyncio.run(_install_model(fresh_url, "test-2", household_size=-2.0, rooms_per_member=9.0))
    out = run_cli(["pmt", "recompute"], fresh_url).stdout
    assert "re-scored under test-2: 400 households changed" in out
    assert asyncio.run(_history(fresh_url)) == (400, 400, 0)
    assert "0 households changed" in run_cli(["pmt", "recompute"], fresh_url).stdout

    shown = json.loads(run_cli(["pmt", "show"], fresh_url).stdout)
    assert shown["version"] == "test-2"
    assert shown["weights"] == {"household_size": -2.0, "rooms_per_member": 9.0}


def test_rescore_households_for_one_changed_household(fresh_url: str) -> None:
    changed, again, none = asyncio.run(_rescore_one(fresh_url))
    assert (changed, again, none) == (1, 0, 0)
