"""The adversary of disclosure_attack, on hand-made answers: it must catch a table whose
complementary suppression is missing or too thin, or it would let such a table through
in the checks of protect and of the HTTP answers."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from disclosure_attack import (
    Key,
    Narrow,
    feasible_ranges,
    lattice_keys,
    listed_units,
    map_answer,
    narrow_cells,
    published_or_withheld,
    rounded,
    rounding_interval,
    table_answer,
    true_counts,
)

THRESHOLD = 10


def primary_only(interior: dict[Key, int], base: int) -> dict[Key, int | None]:
    """What a table would publish with primary suppression and rounding alone."""
    levels = [sorted({k[i] for k in interior}) for i in range(len(next(iter(interior))))]
    keys = lattice_keys(levels)
    truth = true_counts(interior, keys)
    return {key: published_or_withheld(truth[key], THRESHOLD, base) for key in keys}


@pytest.mark.parametrize(
    ("count", "base", "shown"),
    [(12, 5, 10), (13, 5, 15), (2137, 5, 2135), (2, 5, 0), (3, 5, 5), (15, 10, 20),
     (14, 10, 10), (25, 10, 30), (7, 1, 7), (0, 5, 0)],
)  # fmt: skip
def test_rounding_follows_the_documented_examples(count: int, base: int, shown: int) -> None:
    assert rounded(count, base) == shown


@pytest.mark.parametrize("base", [1, 2, 5, 10])
def test_the_rounding_interval_is_exactly_what_rounds_to_the_value(base: int) -> None:
    for shown in range(0, 300, base):
        low, high = rounding_interval(shown, base)
        assert [n for n in range(400) if rounded(n, base) == shown] == list(range(low, high + 1))


def test_one_withheld_interior_cell_with_its_margins_is_pinned() -> None:
    # The table protect would publish if it did primary suppression only.
    answer: dict[Key, int | None] = {
        ("P1", "f"): None,
        ("P1", "m"): 50,
        ("P2", "f"): 40,
        ("P2", "m"): 60,
        ("P1", None): 55,
        ("P2", None): 100,
        (None, "f"): 45,
        (None, "m"): 110,
        (None, None): 155,
    }
    truth = {("P1", "f"): 3, ("P1", "m"): 52, ("P2", "f"): 40, ("P2", "m"): 58}
    assert narrow_cells(answer, threshold=THRESHOLD, base=5, truth=truth) == [
        Narrow(("P1", "f"), 3, 3)
    ]
    # From the rounded answer alone: the row gives 55 - 50, each give or take 2 (the
    # integers that round to them: [53, 57] - [48, 52]), the column 45 - 40 the same.
    assert feasible_ranges(answer, threshold=THRESHOLD, base=5) == {("P1", "f"): (1, 9)}
    assert narrow_cells(answer, threshold=THRESHOLD, base=5) == [Narrow(("P1", "f"), 1, 9)]
    # Four withheld cells (what protect publishes): open.
    protected = {**answer, ("P1", "m"): None, ("P2", "f"): None, ("P2", "m"): None}
    assert narrow_cells(protected, threshold=THRESHOLD, base=5, truth=truth) == []
    assert feasible_ranges(protected, threshold=THRESHOLD, base=5, truth=truth)[("P1", "f")] == (
        0,
        43,
    )  # at most its row (55) and its column (43)


def test_primary_suppression_alone_is_caught_on_a_larger_table() -> None:
    rng = random.Random(3)
    dims = [["PB", "SD", "KP", "BA"], ["1", "2", "3", "4", "5"], ["f", "m"]]
    interior = {
        key: rng.randint(0, 9) if rng.random() < 0.2 else rng.randint(10, 300)
        for key in itertools.product(*dims)
    }
    answer = primary_only(interior, base=5)
    assert any(shown is None for shown in answer.values())
    narrow = narrow_cells(answer, threshold=THRESHOLD, base=5, truth=interior)
    assert narrow
    # The true count of a pinned cell lies in the range the adversary found.
    exact = true_counts(interior, answer)
    for cell in narrow:
        assert cell.low <= exact[cell.key] <= cell.high


def test_a_withheld_pair_too_small_together_is_caught() -> None:
    # Two withheld cells in one row adding up to 8: each is at most 8.
    answer: dict[Key, int | None] = {("a",): None, ("b",): None, ("c",): 200, (None,): 208}
    truth = {("a",): 3, ("b",): 5, ("c",): 200}
    assert narrow_cells(answer, threshold=THRESHOLD, base=1, truth=truth) == [
        Narrow(("a",), 0, 8),
        Narrow(("b",), 0, 8),
    ]
    truth = {("a",): 3, ("b",): 9, ("c",): 200}
    answer[(None,)] = 212
    assert narrow_cells(answer, threshold=THRESHOLD, base=1, truth=truth) == []


def test_a_map_lists_only_hexagons_with_households() -> None:
    body = {
        "total": {"households": 100, "value": 100},
        "features": [
            {"properties": {"h3": "a", "households": None, "value": None}},
            {"properties": {"h3": "b", "households": None, "value": None}},
            {"properties": {"h3": "c", "households": 89, "value": 89}},
        ],
    }
    answer, lower = map_answer(body)
    truth = {("a",): 3, ("b",): 8, ("c",): 89}
    # Counted from zero the pair is [0, 11]; but each listed hexagon holds one at least.
    assert narrow_cells(answer, threshold=THRESHOLD, base=1, truth=truth) == []
    assert narrow_cells(answer, threshold=THRESHOLD, base=1, truth=truth, lower=lower) == [
        Narrow(("a",), 1, 10),
        Narrow(("b",), 1, 10),
    ]


def test_a_listed_geography_unit_holds_a_household() -> None:
    answer: dict[Key, int | None] = {
        ("d1", "f"): None,
        ("d1", "m"): None,
        ("d1", None): None,
        ("d2", "f"): None,
        ("d2", "m"): None,
        ("d2", None): None,
        (None, "f"): 15,
        (None, "m"): 16,
        (None, None): 31,
    }
    lower = listed_units(answer, [0])
    assert lower == {("d1", None): 1, ("d2", None): 1}
    ranges = feasible_ranges(answer, threshold=THRESHOLD, base=1, lower=lower)
    assert ranges[("d1", None)] == (1, 30)
    assert ranges[("d1", "f")] == (0, 15)


def test_an_unbounded_cell_is_open() -> None:
    answer: dict[Key, int | None] = {("a",): None, ("b",): None, (None,): None}
    ranges = feasible_ranges(answer, threshold=THRESHOLD, base=5)
    assert ranges == dict.fromkeys(answer, (0, math.inf))


def test_an_empty_selection_is_empty_by_its_shape() -> None:
    answer: dict[Key, int | None] = {(None, "f"): None, (None, "m"): None, (None, None): None}
    assert narrow_cells(answer, threshold=THRESHOLD, base=5) == []
    with pytest.raises(AssertionError):
        narrow_cells({**answer, (None, None): 10}, threshold=THRESHOLD, base=5)


def test_answers_that_break_the_rules_are_refused() -> None:
    answer: dict[Key, int | None] = {("a",): 10, ("b",): 20, (None,): 30}
    truth = {("a",): 11, ("b",): 19}
    narrow_cells(answer, threshold=THRESHOLD, base=5, truth=truth)
    with pytest.raises(AssertionError, match="published as"):  # 19 is shown as 20, not 15
        narrow_cells({**answer, ("b",): 15}, threshold=THRESHOLD, base=5, truth=truth)
    with pytest.raises(AssertionError, match="published as"):  # below the threshold
        narrow_cells(answer, threshold=THRESHOLD, base=5, truth={("a",): 8, ("b",): 19})
    with pytest.raises(AssertionError, match="full table"):
        narrow_cells({("a",): None, ("b",): 20}, threshold=THRESHOLD, base=5)
    with pytest.raises(AssertionError, match="withheld cell shows"):
        table_answer([{"d": "a", "households": None, "members": 5}], ["d"])
    with pytest.raises(AssertionError, match="twice"):
        table_answer([{"d": "a", "households": 10}, {"d": "a", "households": 10}], ["d"])


@pytest.mark.parametrize("seed", range(12))
def test_the_verdict_shortcut_agrees_with_the_exact_ranges(seed: int) -> None:
    # narrow_cells skips the cells seen wide enough on the way; feasible_ranges solves
    # every one. Random tables, random withheld cells, exact and rounded knowledge.
    rng = random.Random(seed)
    levels = [[f"v{i}" for i in range(rng.randint(1, 5))] for _ in range(rng.randint(1, 3))]
    interior = {key: rng.choice([0, 1, 4, 9, 12, 40, 300]) for key in itertools.product(*levels)}
    keys = lattice_keys(levels)
    exact = true_counts(interior, keys)
    answer = {
        key: None if exact[key] < THRESHOLD or rng.random() < 0.2 else rounded(exact[key], 5)
        for key in keys
    }
    lower = {key: 1 for key in keys if exact[key] and rng.random() < 0.3}
    for truth in (interior, None):
        ranges = feasible_ranges(answer, threshold=THRESHOLD, base=5, truth=truth, lower=lower)
        assert set(ranges) == {key for key, shown in answer.items() if shown is None}
        for key, (low, high) in ranges.items():
            assert low <= exact[key] <= high
        narrow = narrow_cells(answer, threshold=THRESHOLD, base=5, truth=truth, lower=lower)
        assert narrow == [
            Narrow(key, low, high) for key, (low, high) in ranges.items() if high - low < THRESHOLD
        ]
