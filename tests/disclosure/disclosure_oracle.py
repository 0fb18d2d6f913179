"""Test helpers for the disclosure layer: random tables, and the adversary of
``disclosure_attack`` (written apart from ``app.services.disclosure``: it imports nothing
from it) applied to what ``protect`` publishes.

The adversary is given only the interior cells' true counts (it sums every margin itself)
and the published answer (it rebuilds the equations from the keys), so neither the
lattice of ``with_margins`` nor the solver of ``protect`` takes part in the check."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

from disclosure_attack import Key, Narrow, feasible_ranges
from disclosure_attack import narrow_cells as attack

from app.services.disclosure import Cell


def key_of(dims: Sequence[str], key: dict[str, str | None]) -> Key:
    return tuple(key[d] for d in dims)


def answer_of(dims: Sequence[str], published: Sequence[Any]) -> dict[Key, int | None]:
    """What ``protect`` publishes, as a reader of the answer sees it: each key's households
    (``None`` when withheld)."""
    return {key_of(dims, p.key): p.households for p in published}


def interior_truth(dims: Sequence[str], cells: Sequence[Any]) -> dict[Key, int]:
    """The true households of the interior cells only (no ``None`` in the key)."""
    out = {}
    for c in cells:
        key = key_of(dims, c.key)
        if None not in key:
            out[key] = c.households
    return out


def adversary_ranges(
    dims: Sequence[str], cells: Sequence[Any], published: Sequence[Any], policy: Any
) -> dict[Key, tuple[int, float]]:
    """Min and max of every withheld cell's household count over the non-negative tables
    that keep every published cell at its exact (unrounded) count and add up; the
    published counts are checked to be the true ones rounded, never below the threshold."""
    return feasible_ranges(
        answer_of(dims, published),
        threshold=policy.threshold,
        base=policy.rounding_base,
        truth=interior_truth(dims, cells),
    )


def narrow_cells(
    dims: Sequence[str], cells: Sequence[Any], published: Sequence[Any], policy: Any
) -> list[Narrow]:
    """The withheld cells the adversary pins to an interval narrower than the threshold."""
    return attack(
        answer_of(dims, published),
        threshold=policy.threshold,
        base=policy.rounding_base,
        truth=interior_truth(dims, cells),
    )


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
