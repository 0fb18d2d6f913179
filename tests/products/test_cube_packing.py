"""The public cube's one-pass count (members' groups packed per household) against the
exact per-group count it replaces for whole refreshes: pure logic, no database."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, cast

import numpy as np

from app.services.products import cube

UNITS = [("P1", "D1", "X1"), ("P1", "D1", "X2"), ("P2", "D2", "X3")]
BANDS = ("unscored", "ultra_poor", "poor", "well_off")


def packed(households: list[tuple[int, int, list[int]]]) -> np.ndarray[Any, Any]:
    """COPY rows as PostgreSQL would send them for (unit, band index, member groups)."""
    rows = np.zeros(len(households), dtype=cube._PACKED_ROW)
    for name, length in cube._PACKED_LAYOUT.items():
        rows[name] = length
    for i, (unit, band, groups) in enumerate(households):
        rows[i]["unit"] = unit
        rows[i]["band"] = cube._UNSCORED_FIRST.index(BANDS[band])
        rows[i]["mask"] = sum(1 << g for g in set(groups))
        rows[i]["n"] = len(groups)
        for k in range(4):
            rows[i][f"w{k}"] = sum(1 << (6 * (g % 5)) for g in groups if g // 5 == k)
    return rows


def exact(households: list[tuple[int, int, list[int]]]) -> dict[cube.CubeKey, tuple[int, int]]:
    members: Counter[tuple[int, int, int]] = Counter()
    masks: Counter[tuple[int, int, int]] = Counter()
    for unit, band, groups in households:
        for g in groups:
            members[(unit, band, g)] += 1
        masks[(unit, band, sum(1 << g for g in set(groups)))] += 1

    def place(unit: int, band: int) -> dict[str, str]:
        p, dv, d = UNITS[unit]
        return {"p": p, "dv": dv, "d": d, "b": BANDS[band]}

    return cube.summary_rows(
        cast(Any, [{**place(u, b), "grp": g, "n": n} for (u, b, g), n in members.items()]),
        cast(Any, [{**place(u, b), "mask": m, "n": n} for (u, b, m), n in masks.items()]),
    )


def registry(seed: int, size: int) -> list[tuple[int, int, list[int]]]:
    rng = random.Random(seed)
    return [
        (
            rng.randrange(len(UNITS)),
            rng.randrange(len(BANDS)),
            [rng.randrange(20) for _ in range(rng.choice([0, 1, 2, 3, 5, 8, 13]))],
        )
        for _ in range(size)
    ]


def test_the_one_pass_count_equals_the_per_group_count() -> None:
    for seed in range(5):
        households = registry(seed, 400)
        # Large households: 63 members in one group still fits its six bits, and the
        # last group of each word has no bound.
        households.append((1, 2, [3] * 63 + [4] * 200 + [19] * 70))
        assert cube.packed_rows(packed(households), UNITS) == exact(households)


def test_an_overflowing_group_or_an_unknown_unit_falls_back_to_the_exact_count() -> None:
    households = registry(7, 50)
    assert cube.packed_rows(packed([*households, (0, 1, [2] * 64)]), UNITS) is None
    rows = packed(households)
    rows[3]["unit"] = -1  # the household's district is not among the geography's
    assert cube.packed_rows(rows, UNITS) is None
    rows = packed(households)
    rows[5]["band"] = -1
    assert cube.packed_rows(rows, UNITS) is None


def test_counts_of_batches_add_up_to_the_count_of_the_whole() -> None:
    households = registry(11, 600)
    rows = packed(households)
    whole = cube.packed_counts(rows, len(UNITS))
    parts = [cube.packed_counts(rows[i : i + 97], len(UNITS)) for i in range(0, len(rows), 97)]
    assert whole is not None
    assert all(p is not None for p in parts)
    summed = np.sum([p for p in parts if p is not None], axis=0)
    assert (summed == whole).all()
    assert cube.cube_rows(summed, UNITS) == exact(households)
