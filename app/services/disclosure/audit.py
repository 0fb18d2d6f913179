"""Checking a protected table the way an adversary would attack it.

The adversary is given more than is published: the exact (unrounded) household count of
every published cell. ``feasible_ranges`` is then what they can learn about each withheld
count from the table's additivity and non-negativity (and, with ``present``, from the
groups the answer's shape shows are not empty); ``violations`` says what fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from app.services.disclosure import solver
from app.services.disclosure.policy import Policy
from app.services.disclosure.protect import WIDTH_TOLERANCE, Published
from app.services.disclosure.table import Cell, KeyTuple, Lattice, key_tuple


def _withheld(
    dims: Sequence[str],
    cells: Sequence[Cell],
    published: Sequence[Published],
    present: Mapping[str, Iterable[str]] | None,
) -> tuple[Lattice, set[int]]:
    lattice = Lattice.build(dims, cells, present)
    shown = {key_tuple(dims, p.key): p for p in published}
    if set(shown) != set(lattice.index) or len(shown) != len(published):
        raise ValueError("published must hold exactly one entry per cell")
    hidden = {
        lattice.index[kt]
        for kt, p in shown.items()
        if p.suppressed is not None or p.households is None
    }
    return lattice, hidden


def feasible_ranges(
    dims: Sequence[str],
    cells: Sequence[Cell],
    published: Sequence[Published],
    present: Mapping[str, Iterable[str]] | None = None,
) -> dict[KeyTuple, tuple[float, float]]:
    """``{key tuple (dims order): (min, max)}`` of every withheld cell's household count over
    the non-negative real tables that agree with the exact values of the published cells
    (``cells`` gives the exact values). ``max`` is inf when nothing bounds it.

    Exact, so two solves per withheld cell at worst: thousands of withheld cells take
    seconds. ``violations`` needs only a verdict and is much cheaper. ``present`` as for
    ``protect``."""
    lattice, hidden = _withheld(dims, cells, published, present)
    ranges = solver.feasible_ranges(lattice, hidden)
    return {lattice.keys[i]: ranges[i] for i in sorted(ranges)}


def violations(
    dims: Sequence[str],
    cells: Sequence[Cell],
    published: Sequence[Published],
    policy: Policy,
    present: Mapping[str, Iterable[str]] | None = None,
) -> list[str]:
    """Empty when every suppressed household count's feasible range is >= threshold wide
    (and, checked too, no published cell has fewer than ``threshold`` households and no
    withheld cell shows a value); otherwise one line per problem. ``present`` as for
    ``protect``."""
    lattice, hidden = _withheld(dims, cells, published, present)
    problems: list[str] = []
    for p in published:
        i = lattice.index[key_tuple(dims, p.key)]
        if i not in hidden and lattice.households[i] < policy.threshold:
            problems.append(
                f"{p.key}: {lattice.households[i]} households published, "
                f"below the threshold of {policy.threshold}"
            )
        if i in hidden and (
            p.households is not None
            or p.members is not None
            or p.mean_pmt_score is not None
            or p.share_below is not None
        ):
            problems.append(f"{p.key}: withheld but still shows a value")
    enough = policy.threshold - WIDTH_TOLERANCE
    for i, (low, high) in sorted(solver.feasible_ranges(lattice, hidden, enough=enough).items()):
        if high - low < policy.threshold - WIDTH_TOLERANCE:
            key = dict(zip(lattice.dims, lattice.keys[i], strict=True))
            problems.append(
                f"{key}: withheld households can be narrowed to [{low:g}, {high:g}], "
                f"less than {policy.threshold} wide"
            )
    return problems
