"""The pure parts of targeting: apportioned points, band crossings, history, the report."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.services.pmt.model import ILLUSTRATIVE, PmtModel, band_of, clamp
from app.services.programmes.rules import parse_rule
from app.services.targeting.explanation import (
    apportion,
    band_crossings,
    raw_score,
    score_history,
)
from app.services.targeting.simulation import SimulationSpec, summarize

NAMES = sorted(ILLUSTRATIVE.weights)


def _d(x: float) -> Decimal:
    return Decimal(repr(x))


@settings(deadline=None)
@given(
    st.floats(-50, 150, allow_nan=False),
    st.lists(st.floats(-40, 40, allow_nan=False), max_size=25),
)
def test_apportioned_points_add_up_to_the_score_exactly(
    intercept: float, points: list[float]
) -> None:
    raw = intercept
    for p in points:
        raw += p
    score = clamp(raw)
    parts = apportion(intercept, points, score)
    assert parts.intercept + sum(parts.points, Decimal(0)) + parts.bound_adjustment == _d(score)
    for rounded, exact in zip(parts.points, points, strict=True):
        assert abs(rounded - Decimal(exact)) < Decimal("0.02")
    if 0 <= raw <= 100:
        assert parts.bound_adjustment == 0


def test_a_clamped_score_carries_its_bound_adjustment() -> None:
    parts = apportion(-10.0, [3.25, 1.5], 0.0)
    assert parts.points == [Decimal("3.25"), Decimal("1.50")]
    assert parts.bound_adjustment == Decimal("5.25")


def _values(**overrides: float) -> dict[str, float]:
    values = dict.fromkeys(NAMES, 0.0)
    values.update(household_size=6.0, dependency_ratio=0.5, rooms_per_member=0.5)
    values.update(head_education_years=5.0, toilet_none=1.0, small_livestock=2.0)
    values.update(overrides)
    return values


@settings(deadline=None)
@given(
    st.floats(1, 12),
    st.floats(0, 1),
    st.floats(0, 3),
    st.sampled_from([0.0, 5.0, 10.0, 16.0]),
    st.integers(0, 6),
    st.floats(0, 3),
)
def test_every_band_crossing_lands_across_its_edge(
    size: float, ratio: float, rooms: float, education: float, cows: int, land: float
) -> None:
    values = _values(
        household_size=float(round(size)),
        dependency_ratio=ratio,
        rooms_per_member=rooms,
        head_education_years=education,
        large_livestock=float(cows),
        log_land_acres=land,
    )
    score = clamp(raw_score(ILLUSTRATIVE, values))
    crossings = band_crossings(ILLUSTRATIVE, values, score)
    assert [c["edge"] for c in crossings] == [16.17, 24.0, 32.0, 50.0]
    for crossing in crossings:
        assert crossing["direction"] == ("up" if score < crossing["edge"] else "down")
        for change in crossing["changes"]:
            moved = dict(values, **{change["indicator"]: change["to"]})
            for other in change.get("with", []):
                moved[other["indicator"]] = other["to"]
            new = clamp(raw_score(ILLUSTRATIVE, moved))
            assert abs(new - change["new_score"]) <= 0.011
            if crossing["direction"] == "up":
                assert change["new_score"] >= crossing["edge"]
            else:
                assert change["new_score"] < crossing["edge"]
            assert change["new_band"] == band_of(ILLUSTRATIVE, change["new_score"])
        points = [abs(c["points"]) for c in crossing["changes"]]
        assert points == sorted(points)


def test_the_nearest_change_of_a_poor_household_upwards() -> None:
    values = _values()
    score = clamp(raw_score(ILLUSTRATIVE, values))
    edge = next(c for c in band_crossings(ILLUSTRATIVE, values, score) if c["edge"] == 32.0)
    assert edge["direction"] == "up"
    assert score < 32
    assert edge["changes"]


def test_a_flush_toilet_replaces_no_toilet_and_both_terms_move() -> None:
    # Five members: 17.5, so a flush toilet (+3.5, and +3.0 for no longer "none") is one
    # of the nearest ways up to 24; reported as one change, with the term it replaces.
    values = _values(household_size=5.0)
    score = clamp(raw_score(ILLUSTRATIVE, values))
    assert score == 17.5
    edge = next(c for c in band_crossings(ILLUSTRATIVE, values, score) if c["edge"] == 24.0)
    assert edge["direction"] == "up"
    flush = [c for c in edge["changes"] if c["indicator"] == "toilet_flush"]
    assert len(flush) == 1, edge["changes"]
    assert flush[0]["with"] == [{"indicator": "toilet_none", "from": 1.0, "to": 0.0}]
    assert (flush[0]["from"], flush[0]["to"]) == (0.0, 1.0)
    assert flush[0]["points"] == 6.5
    assert flush[0]["new_score"] == 24.0
    assert flush[0]["new_band"] == "poor"


def _row(change: str, before: Any, after: Any, source: str = "partner_batch") -> dict[str, Any]:
    return {
        "version": 2,
        "change": change,
        "member_id": 7,
        "source": source,
        "batch_id": "b1",
        "ref": "r1",
        "actor": "client-1",
        "changed_at": datetime(2026, 11, 30, tzinfo=UTC),
        "before": before,
        "after": after,
    }


def test_history_names_what_moved_the_score() -> None:
    pmt_a = {"pmt_score": 20.5, "poverty_band": "very_poor", "pmt_version": "a"}
    pmt_b = {"pmt_score": 25.0, "poverty_band": "poor", "pmt_version": "a"}
    pmt_c = {"pmt_score": 23.0, "poverty_band": "very_poor", "pmt_version": "b"}
    rows = [
        _row("member_death", {"deceased_on": None}, {"deceased_on": "2026-01-01"}),
        _row("update_assets", {"rooms": 1, **pmt_a}, {"rooms": 2, **pmt_b}),
        _row("pmt_rescore", pmt_b, pmt_c, source="pmt_recompute"),
    ]
    partner = score_history(rows, staff=False)
    assert [h["points"] for h in partner] == [4.5, -2.0]
    assert [c["change"] for c in partner[0]["moved_by"]] == ["member_death", "update_assets"]
    assert partner[0]["moved_by"][1]["fields"] == ["rooms"]
    assert "actor" not in partner[0]["moved_by"][0]
    assert not partner[0]["model_changed"]
    assert partner[1]["model_changed"]
    assert [c["change"] for c in partner[1]["moved_by"]] == ["pmt_rescore"]
    staff = score_history(rows, staff=True)
    assert staff[0]["moved_by"][0]["actor"] == "client-1"


def test_report_counts_entering_and_leaving_with_families_and_cost() -> None:
    spec = SimulationSpec(
        live_rule=parse_rule({"cut_off": 32}),
        candidate_rule=parse_rule({"cut_off": 30, "unit": "family"}),
        candidate_model=None,
        transfer_amount=Decimal("1000.00"),
    )

    def row(band: str, live: bool, cand: bool, hh: int, members: int, rec: int) -> dict[str, Any]:
        return {
            "province_code": "PK6",
            "district_code": "PK617",
            "live_band": band,
            "cand_band": band,
            "live_e": live,
            "cand_e": cand,
            "households": hh,
            "members": members,
            "recipients": rec,
        }

    report = summarize(
        spec,
        [
            row("poor", True, False, 3, 15, 4),
            row("very_poor", True, True, 10, 60, 12),
            row("non_poor", False, False, 5, 20, 5),
        ],
    )
    assert report["leaving"] == {"households": 3, "members": 15, "families": 3}
    assert report["entering"] == {"households": 0, "members": 0, "families": 0}
    assert report["caseload"]["live"]["families"] == 13  # household unit: one each
    assert report["caseload"]["candidate"]["families"] == 12  # family unit: recipients
    assert report["cost"]["change"] == "-1000.00"
    ie = report["inclusion_exclusion"]
    assert ie["exclusion_error"] == {"live": 0, "candidate": 3, "shift": 3}
    assert ie["newly_excluded"] == {"poor": 3, "not_poor": 0}
    assert report["by_district"][0]["leaving"]["households"] == 3


def test_a_model_without_weights_explains_its_intercept() -> None:
    model = PmtModel("flat-1", 12.345, {}, ILLUSTRATIVE.bands)
    parts = apportion(model.intercept, [], clamp(model.intercept))
    assert parts.intercept + parts.bound_adjustment == _d(clamp(model.intercept))
