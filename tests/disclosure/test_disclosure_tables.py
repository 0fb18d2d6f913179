"""Count tables for the disclosure layer: the lattice of margins, and what protect refuses."""

from __future__ import annotations

import pytest

from app.services.disclosure import Cell, Policy, protect, with_margins

DIMS = ("province", "gender")


def test_with_margins_builds_the_full_lattice_with_sums() -> None:
    interior = [
        Cell({"province": "P1", "gender": "f"}, 10, 40, 300.0, 4),
        Cell({"province": "P1", "gender": "m"}, 20, 70, 500.0, 5),
        Cell({"province": "P2", "gender": "f"}, 30, 90, 600.0, 6),
    ]
    cells = with_margins(DIMS, interior)
    assert len(cells) == 3 * 3
    got = {(c.key["province"], c.key["gender"]): c for c in cells}
    missing = got[("P2", "m")]
    assert (missing.households, missing.members, missing.score_sum, missing.below) == (
        0,
        0,
        None,
        None,
    )
    p1 = got[("P1", None)]
    assert (p1.households, p1.members, p1.score_sum, p1.below) == (30, 110, 800.0, 9)
    f = got[(None, "f")]
    assert (f.households, f.members, f.score_sum, f.below) == (40, 130, 900.0, 10)
    total = got[(None, None)]
    assert (total.households, total.members, total.score_sum, total.below) == (
        60,
        200,
        1400.0,
        15,
    )
    assert cells[-1] is total  # the grand total comes last


def test_with_margins_unknown_sums_stay_unknown() -> None:
    interior = [
        Cell({"province": "P1", "gender": "f"}, 10, 40, 300.0, 4),
        Cell({"province": "P1", "gender": "m"}, 20, 70, None, None),
    ]
    got = {(c.key["province"], c.key["gender"]): c for c in with_margins(DIMS, interior)}
    assert got[("P1", None)].score_sum is None
    assert got[("P1", None)].below is None
    assert got[(None, "f")].score_sum == 300.0


def test_with_margins_levels_add_values_with_no_rows_and_fix_the_order() -> None:
    interior = [Cell({"province": "P2", "gender": "f"}, 12)]
    cells = with_margins(DIMS, interior, levels={"province": ["P1", "P2", "P3"]})
    assert len(cells) == 4 * 2
    assert [c.key["province"] for c in cells[::2]] == ["P1", "P2", "P3", None]
    with pytest.raises(ValueError, match="not among the given levels"):
        with_margins(DIMS, [Cell({"province": "P9", "gender": "f"}, 1)], {"province": ["P1"]})


def test_with_margins_adds_repeated_keys_and_refuses_bad_keys() -> None:
    interior = [Cell({"province": "P1"}, 10), Cell({"province": "P1"}, 5)]
    cells = with_margins(("province",), interior)
    assert [c.households for c in cells] == [15, 15]
    with pytest.raises(ValueError, match="does not name exactly"):
        with_margins(DIMS, [Cell({"province": "P1"}, 3)])
    with pytest.raises(ValueError, match="None"):
        with_margins(("province",), [Cell({"province": None}, 3)])


def test_protect_refuses_a_table_that_is_not_a_full_additive_lattice() -> None:
    cells = with_margins(DIMS, [Cell({"province": "P1", "gender": "f"}, 12)])
    with pytest.raises(ValueError, match="full lattice"):
        protect(DIMS, cells[:-1], Policy())
    cells[-1].households += 1
    with pytest.raises(ValueError, match="not the sum"):
        protect(DIMS, cells, Policy())
    with pytest.raises(ValueError, match="twice"):
        protect(DIMS, [*cells, cells[0]], Policy())


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="threshold"):
        Policy(threshold=0)
    with pytest.raises(ValueError, match="rounding_base"):
        Policy(rounding_base=0)
    with pytest.raises(ValueError, match="dominance"):
        Policy(dominance=0.5)
    assert Policy().dominance_fraction.as_integer_ratio() == (9, 10)
