"""Test helpers for the disclosure layer: random tables, and an adversary written apart
from ``app.services.disclosure`` (its own equations, HiGHS's modelling API, every cell a
variable, published cells fixed by their bounds) to audit what ``protect`` publishes."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

import highspy

from app.services.disclosure import Cell, Published

Key = tuple[str | None, ...]


def key_of(dims: Sequence[str], key: dict[str, str | None]) -> Key:
    return tuple(key[d] for d in dims)


def adversary_ranges(
    dims: Sequence[str], cells: Sequence[Cell], published: Sequence[Published]
) -> dict[Key, tuple[float, float]]:
    """Min and max of every withheld cell's household count over the non-negative real
    tables that keep every published cell at its exact (unrounded) count and add up."""
    exact = {key_of(dims, c.key): c.households for c in cells}
    withheld = {key_of(dims, p.key) for p in published if p.households is None}
    values: list[set[str]] = [set() for _ in dims]
    for key in exact:
        for pos, value in enumerate(key):
            if value is not None:
                values[pos].add(value)
    h = highspy.Highs()
    h.silent()
    x = {
        key: h.addVariable(lb=0.0) if key in withheld else h.addVariable(lb=count, ub=count)
        for key, count in exact.items()
    }
    for key in exact:
        for pos, value in enumerate(key):
            if value is None:
                parts = [x[(*key[:pos], v, *key[pos + 1 :])] for v in sorted(values[pos])]
                h.addConstr(x[key] - sum(parts[1:], parts[0]) == 0)
    out: dict[Key, tuple[float, float]] = {}
    for key in sorted(withheld, key=repr):
        h.minimize(x[key])
        assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
        low = h.getInfo().objective_function_value
        h.maximize(x[key])
        status = h.getModelStatus()
        if status == highspy.HighsModelStatus.kOptimal:
            high = h.getInfo().objective_function_value
        else:
            assert status in (
                highspy.HighsModelStatus.kUnbounded,
                highspy.HighsModelStatus.kUnboundedOrInfeasible,
            ), status
            high = math.inf
        out[key] = (low, high)
    return out


def narrow_cells(
    dims: Sequence[str], cells: Sequence[Cell], published: Sequence[Published], threshold: int
) -> list[tuple[Key, float, float]]:
    """The withheld cells the adversary pins to an interval narrower than ``threshold``."""
    return [
        (key, low, high)
        for key, (low, high) in adversary_ranges(dims, cells, published).items()
        if high - low < threshold - 1e-6
    ]


DIM_NAMES = ("province", "poverty_band", "gender")


def random_interior(
    rng: random.Random, n_dims: int, small_rate: float = 0.25
) -> tuple[tuple[str, ...], list[Cell]]:
    """A random table of 1-3 dims with 2-6 values each; about ``small_rate`` of the
    interior cells are planted below 10 (zero included, sometimes left out entirely)."""
    dims = tuple(rng.sample(DIM_NAMES, n_dims))
    levels = [[f"{d[0]}{i}" for i in range(rng.randint(2, 6))] for d in dims]
    interior: list[Cell] = []
    for combo in itertools.product(*levels):
        small = rng.random() < small_rate
        households = rng.randint(0, 9) if small else rng.randint(10, 400)
        if households == 0 and rng.random() < 0.5:
            continue  # a missing cell: with_margins makes it a zero cell
        below = rng.randint(0, households)
        interior.append(
            Cell(
                dict(zip(dims, combo, strict=True)),
                households,
                households * rng.randint(3, 8),
                round(households * rng.uniform(10, 60), 3),
                below,
            )
        )
    return dims, interior
