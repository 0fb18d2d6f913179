"""A partner's score explanation (pure): nothing in it is a function of a locked weight.

The HTTP side (the issue's reproduction, granted values shown) is in test_targeting_api.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.services.pmt.features import PY_FEATURES
from app.services.pmt.model import ILLUSTRATIVE, PmtModel, band_of, clamp
from app.services.sharing.rules import DIMENSIONS, LOCKED, UNLOCKED
from app.services.targeting import partner_view
from app.services.targeting.explanation import build, build_for_partner, raw_score

NAMES = sorted(ILLUSTRATIVE.weights)
UNLOCKED_INDICATORS = ("dependency_ratio", "household_size")
LOCKED_INDICATORS = [n for n in NAMES if n not in UNLOCKED_INDICATORS]
BINARY = [n for n in LOCKED_INDICATORS if n not in ("rooms_per_member", "head_education_years")]
BINARY = [n for n in BINARY if not n.endswith(("_livestock", "_acres"))]


def test_every_indicator_reads_one_sharing_dimension() -> None:
    assert set(partner_view.INDICATOR_DIMENSIONS) == set(PY_FEATURES)
    assert set(partner_view.INDICATOR_DIMENSIONS.values()) <= set(DIMENSIONS)
    unlocked = {n for n, d in partner_view.INDICATOR_DIMENSIONS.items() if d in UNLOCKED}
    assert unlocked == set(UNLOCKED_INDICATORS)
    assert set(partner_view.INDICATOR_DIMENSIONS.values()) - UNLOCKED <= LOCKED


values_st = st.fixed_dictionaries(
    {
        "household_size": st.integers(1, 14).map(float),
        "dependency_ratio": st.floats(0, 1),
        "rooms_per_member": st.floats(0.05, 3),
        "head_education_years": st.sampled_from([0.0, 5.0, 8.0, 10.0, 12.0, 14.0, 16.0]),
        "large_livestock": st.integers(0, 8).map(float),
        "small_livestock": st.integers(0, 12).map(float),
        "log_land_acres": st.floats(0, 4),
        **{name: st.sampled_from([0.0, 1.0]) for name in BINARY},
    }
)
weights_st = st.fixed_dictionaries(
    {name: st.floats(-10, 10, allow_nan=False) for name in LOCKED_INDICATORS}
)
granted_st = st.sets(st.sampled_from(sorted(LOCKED)), max_size=len(LOCKED) - 1)


def _model(version: str, intercept: float, locked: dict[str, float]) -> PmtModel:
    weights = {name: ILLUSTRATIVE.weights[name] for name in UNLOCKED_INDICATORS}
    return PmtModel(version, intercept, {**weights, **locked}, ILLUSTRATIVE.bands)


def _household(values: dict[str, float], score: float) -> dict[str, Any]:
    band = band_of(ILLUSTRATIVE, score)
    return {**values, "id": 42, "pmt_score": score, "poverty_band": band, "pmt_version": "a"}


def _row(change: str, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 2,
        "change": change,
        "member_id": 7,
        "source": "partner_batch",
        "batch_id": "b1",
        "ref": "r1",
        "actor": "client-1",
        "changed_at": datetime(2026, 11, 30, tzinfo=UTC),
        "before": before,
        "after": after,
    }


HISTORY = [
    _row("member_update", {"disabilities": None}, {"disabilities": ["visual"]}),
    _row(
        "update_assets",
        {"rooms": 1, "phone": "1", "pmt_score": 20.5, "poverty_band": "very_poor"},
        {"rooms": 2, "phone": "2", "pmt_score": 22.0, "poverty_band": "very_poor"},
    ),
]


@settings(deadline=None, max_examples=200)
@given(
    values_st,
    st.integers(0, 10_000).map(lambda cents: cents / 100),
    st.floats(-50, 80, allow_nan=False),
    weights_st,
    st.floats(-50, 80, allow_nan=False),
    weights_st,
    granted_st,
)
def test_two_models_differing_only_in_locked_weights_explain_alike_to_a_partner(
    values: dict[str, float],
    score: float,
    intercept_a: float,
    locked_a: dict[str, float],
    intercept_b: float,
    locked_b: dict[str, float],
    granted: set[str],
) -> None:
    """The household's score is what the agreement grants; the intercept and the locked
    weights are the secret. Whatever they are, the partner's answer is the same, so no
    field of it (nor any combination of fields, over any number of households) can be
    solved for them."""
    household = _household(values, score)
    a = build_for_partner(_model("a", intercept_a, locked_a), household, HISTORY, granted)
    b = build_for_partner(_model("a", intercept_b, locked_b), household, HISTORY, granted)
    assert a == b
    shown = {c["indicator"] for c in a["contributions"]}
    dims = UNLOCKED | granted
    assert shown == {n for n in NAMES if partner_view.INDICATOR_DIMENSIONS[n] in dims}
    for c in a["contributions"]:
        assert ("weight" in c) == (c["indicator"] in UNLOCKED_INDICATORS)
        assert c["value"] == values[c["indicator"]]
    changed = {ch["indicator"] for e in a["band_crossings"] for ch in e["changes"]}
    assert changed <= set(UNLOCKED_INDICATORS)


def test_the_staff_explanation_does_depend_on_them() -> None:
    """The control for the test above: the same change of locked weights moves the full
    explanation (so the partner's sameness is not an accident of the set-up)."""
    values = dict.fromkeys(NAMES, 0.0)
    values.update(household_size=5.0, rooms_per_member=0.4, refrigerator=1.0)
    locked = {name: ILLUSTRATIVE.weights[name] for name in LOCKED_INDICATORS}
    a = _model("a", 22.0, locked)
    b = _model("a", 18.0, {**locked, "refrigerator": 8.0})
    assert raw_score(a, values) == raw_score(b, values)  # the very same score
    household = _household(values, clamp(raw_score(a, values)))
    assert build(a, household, HISTORY, staff=True) != build(b, household, HISTORY, staff=True)
    assert build_for_partner(a, household, HISTORY, {"electrical_equipment"}) == (
        build_for_partner(b, household, HISTORY, {"electrical_equipment"})
    )


@settings(deadline=None, max_examples=300)
@given(values_st)
def test_every_change_a_partner_is_shown_crosses_its_edge(values: dict[str, float]) -> None:
    """Computed from the published score, each listed change still crosses for the real
    raw score, and its new score is the real one within a cent."""
    raw = raw_score(ILLUSTRATIVE, values)
    score = clamp(raw)
    answer = build_for_partner(ILLUSTRATIVE, _household(values, score), [], set())
    assert [e["edge"] for e in answer["band_crossings"]] == [16.17, 24.0, 32.0, 50.0]
    for edge in answer["band_crossings"]:
        if score in (0.0, 100.0):
            assert edge["changes"] == []  # how far past the bound the raw score is: unknown
        for change in edge["changes"]:
            moved = dict(values, **{change["indicator"]: change["to"]})
            real = clamp(raw_score(ILLUSTRATIVE, moved))
            if edge["direction"] == "up":
                assert real >= edge["edge"]
                assert change["new_score"] >= edge["edge"]
            else:
                assert real < edge["edge"]
                assert change["new_score"] < edge["edge"]
            assert abs(real - change["new_score"]) <= 0.011
            assert change["new_band"] == band_of(ILLUSTRATIVE, change["new_score"])


def test_a_partner_is_shown_the_unlocked_changes_that_cross() -> None:
    """One member fewer lifts this household across 16.17 (-1.1 a member); the locked
    indicators that would too (a cooking stove, +0.75) are offered to staff only."""
    values = dict.fromkeys(NAMES, 0.0)
    values.update(household_size=6.0, dependency_ratio=0.5, rooms_per_member=0.5)
    score = clamp(raw_score(ILLUSTRATIVE, values))
    assert score == 15.9
    answer = build_for_partner(ILLUSTRATIVE, _household(values, score), [], set())
    edge = answer["band_crossings"][0]
    assert (edge["edge"], edge["direction"], edge["points_needed"]) == (16.17, "up", 0.27)
    assert {c["indicator"] for c in edge["changes"]} == {"dependency_ratio", "household_size"}
    assert next(c for c in edge["changes"] if c["indicator"] == "household_size") == {
        "indicator": "household_size",
        "from": 6.0,
        "to": 5.0,
        "points": 1.1,
        "new_score": 17.0,
        "new_band": "very_poor",
    }
    staff = build(ILLUSTRATIVE, _household(values, score), [], staff=True)
    offered = {c["indicator"] for c in staff["band_crossings"][0]["changes"]}
    assert offered - set(UNLOCKED_INDICATORS)  # staff are offered locked ones too


def test_a_held_score_lists_no_change_but_its_distance_to_each_edge() -> None:
    values = dict.fromkeys(NAMES, 0.0)
    values.update(household_size=14.0, dependency_ratio=1.0, toilet_none=1.0)
    assert raw_score(ILLUSTRATIVE, values) < 0
    answer = build_for_partner(ILLUSTRATIVE, _household(values, 0.0), [], set())
    assert [e["changes"] for e in answer["band_crossings"]] == [[], [], [], []]
    assert [e["points_needed"] for e in answer["band_crossings"]] == [16.17, 24.0, 32.0, 50.0]


def test_history_names_only_fields_of_dimensions_the_agreement_covers() -> None:
    none = build_for_partner(ILLUSTRATIVE, _household(dict.fromkeys(NAMES, 0.0), 22.0), HISTORY, ())
    causes = none["history"][0]["moved_by"]
    assert [(c["change"], c["fields"]) for c in causes] == [
        ("member_update", []),
        ("update_assets", ["phone"]),
    ]
    assert all("actor" not in c and "member_id" not in c for c in causes)
    granted = {"disability", "room_count"}
    some = build_for_partner(
        ILLUSTRATIVE, _household(dict.fromkeys(NAMES, 0.0), 22.0), HISTORY, granted
    )
    assert [c["fields"] for c in some["history"][0]["moved_by"]] == [
        ["disabilities"],
        ["phone", "rooms"],
    ]
