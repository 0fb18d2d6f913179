"""Worked examples of the disclosure layer: small tables whose protection is checked by hand."""

from __future__ import annotations

import pytest
from disclosure_attack import Narrow, assert_open
from disclosure_attack import narrow_cells as narrow_cells_of
from disclosure_oracle import key_of, narrow_cells

from app.services.disclosure import (
    Cell,
    Disclosure,
    Policy,
    Published,
    protect,
    violations,
    with_margins,
)
from app.services.disclosure.protect import round_half_up

NO_ROUNDING = Policy(rounding_base=1)


def cells_2d(dims: tuple[str, str], counts: dict[tuple[str, str], int]) -> list[Cell]:
    return [
        Cell({dims[0]: a, dims[1]: b}, n, members=4 * n, score_sum=30.0 * n, below=n // 2)
        for (a, b), n in counts.items()
    ]


def by_key(dims: tuple[str, ...], published: list[Published]) -> dict[tuple, Published]:
    return {tuple(p.key[d] for d in dims): p for p in published}


def run(
    dims: tuple[str, ...], interior: list[Cell], policy: Policy = NO_ROUNDING
) -> tuple[dict[tuple, Published], Disclosure, list[Cell], list[Published]]:
    cells = with_margins(dims, interior)
    published, disclosure = protect(dims, cells, policy)
    assert narrow_cells(dims, cells, published, policy) == []
    assert violations(dims, cells, published, policy) == []
    return by_key(dims, published), disclosure, cells, published


DIMS = ("province", "gender")


def test_a_small_cell_in_a_2x2_forces_suppression_in_its_row_and_column() -> None:
    counts = {("P1", "f"): 3, ("P1", "m"): 50, ("P2", "f"): 40, ("P2", "m"): 60}
    out, disclosure, _, _ = run(DIMS, cells_2d(DIMS, counts))
    assert out[("P1", "f")].suppressed == "primary"
    assert out[("P1", "m")].suppressed == "complementary"  # its row
    assert out[("P2", "f")].suppressed == "complementary"  # its column
    # In a 2x2 the row and column partners pin the diagonal cell in turn.
    assert out[("P2", "m")].suppressed == "complementary"
    for key in [("P1", None), ("P2", None), (None, "f"), (None, "m"), (None, None)]:
        assert out[key].suppressed is None
    assert out[(None, None)].households == 153
    assert disclosure.suppressed_cells == 4
    assert disclosure.rules == {"primary": 1, "complementary": 3, "dominance": 0}


def test_a_withheld_cell_publishes_nothing() -> None:
    counts = {("P1", "f"): 3, ("P1", "m"): 50, ("P2", "f"): 40, ("P2", "m"): 60}
    out, _, _, _ = run(DIMS, cells_2d(DIMS, counts))
    for key in [("P1", "f"), ("P1", "m")]:
        p = out[key]
        assert (p.households, p.members, p.mean_pmt_score, p.share_below) == (None,) * 4
    shown = out[("P1", None)]
    assert shown.households == 53
    assert shown.members == 4 * 53
    assert shown.mean_pmt_score == 30.0
    assert shown.share_below == round((1 + 25) / 53, 3)


def test_one_dimension_the_partner_is_the_smallest_interior_cell_not_the_total() -> None:
    interior = [Cell({"province": p}, n) for p, n in [("A", 4), ("B", 120), ("C", 80)]]
    out, _, _, _ = run(("province",), interior)
    assert out[("A",)].suppressed == "primary"
    assert out[("C",)].suppressed == "complementary"
    assert out[("B",)].suppressed is None
    assert out[(None,)].suppressed is None
    assert out[(None,)].households == 204


def test_a_margin_below_the_threshold_is_suppressed_and_protected() -> None:
    counts = {
        ("P1", "f"): 40,
        ("P1", "m"): 45,
        ("P2", "f"): 30,
        ("P2", "m"): 35,
        ("P3", "f"): 4,
        ("P3", "m"): 3,
    }
    out, _, _, _ = run(DIMS, cells_2d(DIMS, counts))
    assert out[("P3", None)].suppressed == "primary"
    assert out[("P3", "f")].suppressed == "primary"
    assert out[("P3", "m")].suppressed == "primary"
    # The province total of 7 must not come back as grand total minus the other two.
    assert any(out[(p, None)].suppressed == "complementary" for p in ("P1", "P2"))
    assert out[(None, None)].suppressed is None


def test_zero_cells_are_suppressed_and_protected() -> None:
    counts = {("P1", "f"): 40, ("P1", "m"): 45, ("P2", "m"): 35}  # (P2, f) is missing
    out, disclosure, cells, _ = run(DIMS, cells_2d(DIMS, counts))
    zero = next(c for c in cells if c.key == {"province": "P2", "gender": "f"})
    assert zero.households == 0
    assert out[("P2", "f")].suppressed == "primary"
    assert out[("P2", "f")].households is None
    assert disclosure.rules["primary"] == 1
    assert disclosure.rules["complementary"] >= 2


def test_dominance_withholds_the_whole_poverty_band_breakdown_without_saying_which() -> None:
    dims = ("province", "poverty_band")
    counts = {
        ("P1", "poor"): 95,
        ("P1", "nonpoor"): 5,
        ("P2", "poor"): 60,
        ("P2", "nonpoor"): 70,
        ("P3", "poor"): 50,
        ("P3", "nonpoor"): 80,
    }
    out, disclosure, _, _ = run(dims, cells_2d(dims, counts))
    # Both P1 cells carry the same label: "primary" on the 5 would give the 95 away.
    assert out[("P1", "poor")].suppressed == "dominance"
    assert out[("P1", "nonpoor")].suppressed == "dominance"
    assert out[("P1", None)].suppressed is None
    assert out[("P1", None)].households == 100
    assert disclosure.rules["dominance"] >= 2
    assert disclosure.rules["primary"] == 0
    assert "poverty_band" in disclosure.method


def test_dominance_ignores_dimensions_that_are_not_sensitive() -> None:
    counts = {("P1", "f"): 95, ("P1", "m"): 12, ("P2", "f"): 60, ("P2", "m"): 70}
    out, disclosure, _, _ = run(DIMS, cells_2d(DIMS, counts), Policy(rounding_base=1))
    assert all(p.suppressed is None for p in out.values())
    assert disclosure.suppressed_cells == 0


def test_dominance_on_the_national_breakdown() -> None:
    dims = ("poverty_band",)
    interior = [Cell({"poverty_band": "poor"}, 950), Cell({"poverty_band": "nonpoor"}, 50)]
    out, disclosure, _, _ = run(dims, interior)
    assert out[("poor",)].suppressed == out[("nonpoor",)].suppressed == "dominance"
    assert out[(None,)].households == 1000
    assert disclosure.rules == {"primary": 0, "complementary": 0, "dominance": 2}


def test_a_share_below_beyond_the_dominance_share_is_withheld_but_counts_stay() -> None:
    interior = [
        Cell({"province": "A"}, 100, 400, 2000.0, below=95),  # 0.95: nearly all below
        Cell({"province": "B"}, 100, 400, 2000.0, below=10),  # 0.10: nearly none below
        Cell({"province": "C"}, 100, 400, 2000.0, below=50),
    ]
    out, disclosure, _, _ = run(("province",), interior)
    assert out[("A",)].share_below is None
    assert out[("B",)].share_below is None
    assert out[("C",)].share_below == 0.5
    assert out[(None,)].share_below == round(155 / 300, 3)
    for key in [("A",), ("B",)]:
        assert out[key].suppressed is None
        assert out[key].households == 100
        assert out[key].mean_pmt_score == 20.0
    assert disclosure.rules == {"primary": 0, "complementary": 0, "dominance": 2}
    assert disclosure.shares_withheld == 2
    assert disclosure.suppressed_cells == 0


def test_a_share_that_rounds_onto_the_dominance_share_is_withheld() -> None:
    interior = [Cell({"province": "A"}, 10000, 0, None, below=8996)]  # shown as 0.9
    out, _, _, _ = run(("province",), interior)
    assert out[("A",)].share_below is None
    assert out[("A",)].mean_pmt_score is None  # no score_sum: unknown


@pytest.mark.parametrize(
    ("value", "base", "expected"),
    [(12, 5, 10), (13, 5, 15), (15, 5, 15), (17, 5, 15), (18, 5, 20), (15, 10, 20),
     (14, 10, 10), (7, 1, 7), (0, 5, 0)],
)  # fmt: skip
def test_round_half_up(value: int, base: int, expected: int) -> None:
    assert round_half_up(value, base) == expected


def test_rounding_rounds_margins_on_their_own() -> None:
    interior = [
        Cell({"province": "A"}, 12, members=51),
        Cell({"province": "B"}, 12, members=52),
    ]
    out, disclosure, _, _ = run(("province",), interior, Policy())
    assert (out[("A",)].households, out[("B",)].households) == (10, 10)
    assert out[(None,)].households == 25  # 24 rounded: not 10 + 10
    assert (out[("A",)].members, out[("B",)].members, out[(None,)].members) == (50, 50, 105)
    assert disclosure.rounding_base == 5
    assert "rounded to the nearest 5" in disclosure.method


def test_rounding_never_publishes_a_withheld_cell() -> None:
    counts = {("P1", "f"): 8, ("P1", "m"): 50, ("P2", "f"): 40, ("P2", "m"): 60}
    cells = with_margins(DIMS, cells_2d(DIMS, counts))
    policy = Policy(rounding_base=10)
    published, _ = protect(DIMS, cells, policy)
    # 8 rounds to 10: were it published after rounding, it would pass for a legal count.
    out = by_key(DIMS, published)
    assert out[("P1", "f")].suppressed == "primary"
    assert out[("P1", "f")].households is None
    assert out[("P1", "f")].members is None
    for p in published:
        assert (p.households is None) == (p.suppressed is not None)
        assert p.households is None or p.households % 10 == 0
    assert any(p.households is not None for p in published)
    assert narrow_cells(DIMS, cells, published, policy) == []


def test_disclosure_as_json() -> None:
    counts = {("P1", "f"): 3, ("P1", "m"): 50, ("P2", "f"): 40, ("P2", "m"): 60}
    cells = with_margins(DIMS, cells_2d(DIMS, counts))
    _, disclosure = protect(DIMS, cells, Policy())
    body = disclosure.as_json()
    assert body == {
        "suppressed_below": 10,
        "rounding_base": 5,
        "dominance": 0.9,
        "suppressed_cells": 4,
        "shares_withheld": 0,
        "rules": {"primary": 1, "complementary": 3, "dominance": 0},
        "method": disclosure.method,
    }
    assert body["method"].endswith(".")
    assert body["method"].count(".") == 1  # one sentence


def test_the_grand_total_is_published_when_nothing_forces_it() -> None:
    interior = [Cell({"province": p}, n) for p, n in [("A", 3), ("B", 4), ("C", 9)]]
    out, _, _, _ = run(("province",), interior)
    assert out[(None,)].suppressed is None
    assert out[(None,)].households == 16
    tiny = [Cell({"province": p}, n) for p, n in [("A", 3), ("B", 4)]]
    out, _, _, _ = run(("province",), tiny)
    assert out[(None,)].suppressed == "primary"


def test_a_table_with_no_dimensions_is_its_grand_total() -> None:
    out, _, _, _ = run((), [Cell({}, 42)])
    assert out[()].households == 42
    out, _, _, _ = run((), [Cell({}, 4)])
    assert out[()].suppressed == "primary"


def test_a_listed_hexagon_holds_a_household_and_the_audit_counts_it() -> None:
    # A map lists only the hexagons holding a household, so a reader knows each withheld
    # one holds at least one: the withheld pair (3 + 8 = 11) is then [1, 10] each, not
    # [0, 11], and a third hexagon must be withheld.
    dims = ("h3",)
    interior = [Cell({"h3": h}, n) for h, n in [("a", 3), ("b", 8), ("c", 89), ("d", 120)]]
    cells = with_margins(dims, interior)
    listed = {"h3": ["a", "b", "c", "d"]}
    published, disclosure = protect(dims, cells, NO_ROUNDING, listed)
    answer = {key_of(dims, p.key): p.households for p in published}
    truth = {key_of(dims, c.key): c.households for c in interior}
    lower = {(h,): 1 for h in listed["h3"]}
    assert assert_open(answer, threshold=10, base=1, truth=truth, lower=lower) == [
        ("a",),
        ("b",),
        ("c",),
    ]
    assert disclosure.rules == {"primary": 2, "complementary": 1, "dominance": 0}
    assert violations(dims, cells, published, NO_ROUNDING, listed) == []
    # Without the listing, protect stops at the pair, which the reader pins.
    published, _ = protect(dims, cells, NO_ROUNDING)
    answer = {key_of(dims, p.key): p.households for p in published}
    assert narrow_cells_of(answer, threshold=10, base=1, truth=truth, lower=lower) == [
        Narrow(("a",), 1, 10),
        Narrow(("b",), 1, 10),
    ]
    assert violations(dims, cells, published, NO_ROUNDING, listed) != []


def test_a_listed_geography_unit_holds_a_household_and_the_audit_counts_it() -> None:
    # Tehsils by poverty band of one district of the test registry. A table lists only
    # the tehsils holding a household, so T3's total (4) is at least 1; with only
    # protect's non-negativity, T1 and T3 were left withheld beside T1's published 10
    # with T1 + T3 = 20, so T1 lay in [10, 19] and T3 in [1, 10] for a reader.
    dims = ("tehsil", "poverty_band")
    bands = ["ultra_poor", "very_poor", "poor", "non_poor", "well_off"]
    rows = {
        "T1": [1, 1, 3, 10, 1],
        "T2": [4, 6, 4, 7, 1],
        "T3": [1, 2, 1, 0, 0],
        "T4": [1, 3, 7, 9, 2],
        "T5": [4, 3, 6, 6, 3],
        "T6": [2, 3, 5, 12, 5],
        "T7": [0, 2, 6, 6, 2],
    }
    truth = {(t, b): n for t, row in rows.items() for b, n in zip(bands, row, strict=True)}
    interior = [Cell({"tehsil": t, "poverty_band": b}, n) for (t, b), n in truth.items() if n]
    cells = with_margins(dims, interior, {"tehsil": list(rows), "poverty_band": bands})
    listed = {"tehsil": list(rows)}
    lower = {(t, None): 1 for t in rows}
    policy = Policy()

    published, _ = protect(dims, cells, policy)
    answer = {key_of(dims, p.key): p.households for p in published}
    assert {
        n.key for n in narrow_cells_of(answer, threshold=10, base=5, truth=truth, lower=lower)
    } >= {
        ("T1", None),
        ("T3", None),
    }

    published, _ = protect(dims, cells, policy, listed)
    answer = {key_of(dims, p.key): p.households for p in published}
    assert answer[("T1", "non_poor")] is None
    assert assert_open(answer, threshold=10, base=5, truth=truth, lower=lower)
    assert violations(dims, cells, published, policy, listed) == []


def test_present_values_must_be_values_of_the_table_with_a_household() -> None:
    dims = ("tehsil", "gender")
    counts = {("T1", "f"): 10, ("T1", "m"): 6, ("T2", "f"): 60, ("T2", "m"): 70}
    cells = with_margins(dims, cells_2d(dims, counts))
    with pytest.raises(ValueError, match="not a value"):
        protect(dims, cells, NO_ROUNDING, {"tehsil": ["T9"]})
    with pytest.raises(ValueError, match="not a dimension"):
        protect(dims, cells, NO_ROUNDING, {"district": ["T1"]})
    empty = with_margins(dims, cells_2d(dims, counts), {"tehsil": ["T1", "T2", "T3"]})
    with pytest.raises(ValueError, match="holds no household"):
        protect(dims, empty, NO_ROUNDING, {"tehsil": ["T3"]})
