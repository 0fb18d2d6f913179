"""The price of a data-sharing request (Annexes II-III, §4.2.1): pure Decimal arithmetic."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.models.sharing import ORGANIZATION_TYPES
from app.services.requests import pricing
from app.services.requests.pricing import Quote, quote
from app.services.sharing.rules import CATEGORIES, DIMENSIONS

FREE_DIMENSIONS = [name for name in DIMENSIONS if name not in pricing.PRICED_DIMENSIONS]


def _formula(org: str, households: int, dimensions: list[str], category: str = "v") -> Quote:
    return quote(
        organization_type=org, category=category, households=households, dimensions=dimensions
    )


def test_worked_example_donor_10000_households_3_dimensions() -> None:
    q = _formula("donor", 10_000, ["land", "livestock", "education"])
    assert q.basis == "formula"
    assert (q.A, q.B, q.C, q.D, q.E, q.F, q.G) == (
        Decimal(50),
        10_000,
        Decimal(500_000),
        3,
        Decimal("7.5"),
        Decimal(225_000),
        Decimal(725_000),
    )
    assert q.reason is None
    assert q.as_json() == {
        "basis": "formula",
        "A": "50",
        "B": 10_000,
        "C": "500000",
        "D": 3,
        "E": "7.5",
        "F": "225000",
        "G": "725000",
        "currency": "PKR",
        "rounding": pricing.ROUNDING,
        "reason": None,
    }


def test_worked_example_government_a_million_households_no_dimensions() -> None:
    q = _formula("government", 1_000_000, [], category="iv")
    assert q.A == 3
    assert q.C == 3_000_000
    assert q.D == 0
    assert q.F == 0
    assert q.G == 3_000_000
    assert q.as_json()["G"] == "3000000"


@pytest.mark.parametrize(
    ("org", "rate"),
    [
        ("government", "3"),
        ("semi_autonomous", "5"),
        ("academic", "20"),
        ("local_ngo", "25"),
        ("donor", "50"),
        ("private", "100"),
    ],
)
def test_every_organization_type_has_its_annex_ii_rate(org: str, rate: str) -> None:
    assert pricing.RATE_PER_HOUSEHOLD[org] == Decimal(rate)
    q = _formula(org, 1, ["land"])
    assert q.A == Decimal(rate)
    assert q.E == Decimal(rate) * Decimal("0.15")


def test_rates_cover_exactly_the_organization_types() -> None:
    assert set(pricing.RATE_PER_HOUSEHOLD) == set(ORGANIZATION_TYPES)


def test_priced_dimensions_are_annex_iii_v_to_xvi() -> None:
    assert len(pricing.PRICED_DIMENSIONS) == 12
    assert set(pricing.PRICED_DIMENSIONS) <= set(DIMENSIONS)
    assert FREE_DIMENSIONS == [
        "poverty_level",
        "area_location",
        "household_composition",
        "gender",
        "age_bracket",
    ]
    assert pricing.FORMULA_CATEGORIES == {"iii", "iv", "v", "vi"}
    assert pricing.FORMULA_CATEGORIES | pricing.CASE_BY_CASE_CATEGORIES == set(CATEGORIES)


def test_unpriced_dimensions_do_not_count() -> None:
    q = _formula("donor", 10_000, [*FREE_DIMENSIONS, "land"])
    assert q.D == 1
    assert q.F == Decimal(75_000)
    assert _formula("donor", 10_000, FREE_DIMENSIONS).G == Decimal(500_000)


def test_a_dimension_named_twice_counts_once() -> None:
    q = _formula("donor", 10_000, ["land", "land", "room_count", "room_count", "land"])
    assert q.D == 2


@pytest.mark.parametrize("category", ["i", "ii", "vii", "viii"])
def test_case_by_case_categories_without_an_amount_say_so(category: str) -> None:
    q = _formula("private", 5_000, ["land"], category=category)
    assert q.basis == "case_by_case"
    assert (q.A, q.B, q.C, q.D, q.E, q.F, q.G) == (None,) * 7
    assert q.reason is not None
    assert "not set" in q.reason
    doc = q.as_json()
    assert doc["G"] is None
    assert doc["basis"] == "case_by_case"


@pytest.mark.parametrize("category", ["i", "ii", "vii", "viii"])
def test_case_by_case_categories_take_the_officers_amount(category: str) -> None:
    q = quote(
        organization_type="academic",
        category=category,
        households=5_000,
        dimensions=["land"],
        case_by_case_amount=Decimal("120000"),
    )
    assert q.basis == "case_by_case"
    assert (q.A, q.B, q.C, q.D, q.E, q.F) == (None,) * 6
    assert q.G == Decimal(120_000)
    assert q.as_json()["G"] == "120000"


def test_a_fractional_case_by_case_amount_is_rounded_half_up() -> None:
    q = quote(
        organization_type="academic",
        category="ii",
        households=0,
        dimensions=[],
        case_by_case_amount=Decimal("1500.50"),
    )
    assert q.as_json()["G"] == "1501"


def test_a_case_by_case_amount_is_refused_for_a_formula_category() -> None:
    with pytest.raises(ValueError, match="priced by the Annex III formula"):
        quote(
            organization_type="donor",
            category="iv",
            households=10,
            dimensions=[],
            case_by_case_amount=Decimal(100),
        )


@pytest.mark.parametrize("criterion", ["a", "b", "c", "d"])
def test_approved_gratis_costs_nothing_and_says_why(criterion: str) -> None:
    q = quote(
        organization_type="academic",
        category="v",
        households=10_000,
        dimensions=["land", "livestock"],
        gratis_criterion=criterion,
    )
    assert q.basis == "gratis"
    assert q.G == 0
    assert q.as_json()["G"] == "0"
    assert q.reason is not None
    assert f"criterion ({criterion})" in q.reason
    assert pricing.GRATIS_CRITERIA[criterion] in q.reason
    # A..F are kept for information: what was waived.
    assert (q.A, q.C, q.D, q.E, q.F) == (
        Decimal(20),
        Decimal(200_000),
        2,
        Decimal(3),
        Decimal(60_000),
    )
    assert "260000 is waived" in q.reason


def test_gratis_in_a_case_by_case_category_is_zero_too() -> None:
    q = quote(
        organization_type="government",
        category="vii",
        households=10,
        dimensions=[],
        gratis_criterion="d",
        case_by_case_amount=Decimal(5_000),
    )
    assert q.basis == "gratis"
    assert q.G == 0
    assert (q.A, q.B, q.C, q.D, q.E, q.F) == (None,) * 6
    assert q.reason is not None
    assert "government organization" in q.reason


def test_gratis_criteria_are_the_four_grounds_of_4_2_1() -> None:
    assert list(pricing.GRATIS_CRITERIA) == ["a", "b", "c", "d"]
    assert "research" in pricing.GRATIS_CRITERIA["a"]
    assert "collaboration with BISP" in pricing.GRATIS_CRITERIA["b"]
    assert "non-profit" in pricing.GRATIS_CRITERIA["c"]
    assert "government" in pricing.GRATIS_CRITERIA["d"]


def test_a_fractional_total_is_rounded_half_up_to_whole_rupees() -> None:
    # E = 0.45; F = 10 * 1 * 0.45 = 4.5 exactly -> 5 (half-up; half-even would give 4).
    q = _formula("government", 10, ["land"])
    assert q.E == Decimal("0.45")
    assert q.C == 30
    assert q.F == 5
    assert q.G == 35
    assert q.as_json()["G"] == "35"
    # 0.45 -> 0, 1.35 -> 1, 2.25 -> 2: below the half goes down.
    assert _formula("government", 1, ["land"]).G == 3
    assert _formula("government", 3, ["land"]).F == 1
    # E = 0.75; F = 6 * 0.75 = 4.5 -> 5.
    assert _formula("semi_autonomous", 6, ["land"]).F == 5
    assert _formula("semi_autonomous", 6, ["land"]).G == 35


def test_arithmetic_is_exact_for_huge_counts() -> None:
    households = 10**40 + 1
    q = _formula("donor", households, ["land"])
    assert q.C == Decimal(50 * households)
    assert q.F == Decimal(15 * households // 2 + 1)  # 7.5 * odd = x.5 -> up
    # Compared as ints: Decimal + Decimal in the default 28-digit context would round here.
    assert int(str(q.G)) == int(str(q.C)) + int(str(q.F))
    assert q.as_json()["G"] == str(50 * households + 15 * households // 2 + 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"organization_type": "charity"}, "unknown organization type 'charity'"),
        ({"category": "ix"}, "unknown category 'ix'"),
        ({"gratis_criterion": "e"}, "unknown gratis criterion 'e'"),
        ({"households": -1}, "households must not be negative"),
        ({"dimensions": ["shoe_size"]}, "unknown dimension 'shoe_size'"),
        (
            {"category": "i", "case_by_case_amount": Decimal("-1")},
            "case-by-case amount must not be negative",
        ),
        (
            {"category": "i", "case_by_case_amount": Decimal("NaN")},
            "must be a finite amount",
        ),
    ],
)
def test_bad_input_is_a_value_error(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "organization_type": "donor",
        "category": "v",
        "households": 10,
        "dimensions": [],
        **kwargs,
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        quote(**args)


def test_wrong_types_are_type_errors() -> None:
    with pytest.raises(TypeError):
        _formula("donor", True, [])
    with pytest.raises(TypeError):
        _formula("donor", 10, "land")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        quote(
            organization_type="donor",
            category="i",
            households=10,
            dimensions=[],
            case_by_case_amount=1.5,  # type: ignore[arg-type]
        )


def _all_kinds_of_quote() -> list[Quote]:
    return [
        _formula("donor", 10_000, ["land", "livestock", "education"]),
        _formula("government", 10, ["land"]),
        _formula("private", 5, [], category="i"),
        quote(
            organization_type="local_ngo",
            category="viii",
            households=5,
            dimensions=[],
            case_by_case_amount=Decimal("99.5"),
        ),
        quote(
            organization_type="academic",
            category="vi",
            households=7,
            dimensions=["gas_equipment"],
            gratis_criterion="a",
        ),
        quote(
            organization_type="government",
            category="ii",
            households=7,
            dimensions=[],
            gratis_criterion="d",
        ),
    ]


@pytest.mark.parametrize("q", _all_kinds_of_quote(), ids=lambda q: q.basis)
def test_as_json_round_trips_through_json_text(q: Quote) -> None:
    doc = json.loads(json.dumps(q.as_json()))
    again = Quote.from_json(doc)
    assert again == q
    assert again.as_json() == q.as_json()
    for letter in "ACEFG":
        assert doc[letter] is None or isinstance(doc[letter], str)
    for letter in "BD":
        assert doc[letter] is None or isinstance(doc[letter], int)


@pytest.mark.parametrize(
    "change",
    [
        {"basis": "free"},
        {"rounding": None},
        {"G": "lots"},
        {"G": 1.5},
        {"G": "-1"},
        {"B": "10"},
        {"D": True},
        {"reason": 5},
    ],
)
def test_from_json_refuses_a_malformed_quote(change: dict[str, Any]) -> None:
    doc = {**_formula("donor", 10, ["land"]).as_json(), **change}
    with pytest.raises(ValueError):  # noqa: PT011 - each change has its own message
        Quote.from_json(doc)


@settings(deadline=None)
@given(
    org=st.sampled_from(ORGANIZATION_TYPES),
    category=st.sampled_from(sorted(pricing.FORMULA_CATEGORIES)),
    households=st.integers(min_value=0, max_value=10**12),
    dimensions=st.lists(st.sampled_from(DIMENSIONS), max_size=25),
)
def test_formula_quotes_add_up_and_are_never_negative(
    org: str, category: str, households: int, dimensions: list[str]
) -> None:
    q = quote(
        organization_type=org, category=category, households=households, dimensions=dimensions
    )
    assert q.basis == "formula"
    assert q.A is not None
    assert q.C is not None
    assert q.E is not None
    assert q.F is not None
    assert q.G is not None
    assert q.B == households
    assert q.D == len(set(dimensions) & set(pricing.PRICED_DIMENSIONS))
    assert q.G == q.C + q.F
    assert q.E == q.A * Decimal("0.15")
    assert all(value >= 0 for value in (q.A, q.C, q.E, q.F, q.G))
    for value in (q.C, q.F, q.G):
        assert value == value.to_integral_value()
    # Half-up rounding of the exact values, within half a rupee each.
    assert abs(q.C - q.A * households) <= Decimal("0.5")
    assert abs(q.F - households * q.D * q.E) <= Decimal("0.5")
    assert Quote.from_json(json.loads(json.dumps(q.as_json()))) == q


@settings(deadline=None)
@given(
    org=st.sampled_from(ORGANIZATION_TYPES),
    category=st.sampled_from(CATEGORIES),
    households=st.integers(min_value=0, max_value=10**9),
    dimensions=st.lists(st.sampled_from(DIMENSIONS), max_size=5),
    criterion=st.sampled_from(["a", "b", "c", "d"]),
)
def test_approved_gratis_is_always_zero(
    org: str, category: str, households: int, dimensions: list[str], criterion: str
) -> None:
    q = quote(
        organization_type=org,
        category=category,
        households=households,
        dimensions=dimensions,
        gratis_criterion=criterion,
    )
    assert q.basis == "gratis"
    assert q.G == 0
    assert q.reason is not None
