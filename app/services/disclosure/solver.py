"""Feasible ranges of suppressed counts, by linear programming (HiGHS through ``highspy``).

An adversary who sees the published cells of an additive table knows every suppressed
count lies in ``[min, max]`` over the non-negative real solutions of the table's equations
with the published cells fixed, each cell at least its floor (``Lattice.floors``: 1 where
the answer's shape shows a household, else 0). The equations only link suppressed cells
that share one, so the problem splits into independent components; each is one HiGHS
model, built once, whose objective is switched between cells (each solve warm-starts from
the last basis).

Solves are saved two ways. Every solution is a whole feasible table, so the range of each
cell is known to contain every value seen so far: when only a verdict is wanted (is the
range at least ``enough`` wide?), a cell already seen to span that much needs no solve of
its own, and a first bounded solve pushing all open cells up at once settles most of
them. A minimum already seen at the cell's floor is exact. ``check`` also prices, from the
duals of a narrow cell's optimum, which published cells would widen it if released.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import highspy
import numpy as np
from highspy._core import _Highs

from app.services.disclosure.table import Lattice

Range = tuple[float, float]

_DUAL_TOLERANCE = 1e-9

_UNBOUNDED = {
    highspy.HighsModelStatus.kUnbounded,
    highspy.HighsModelStatus.kUnboundedOrInfeasible,
}


def components(lattice: Lattice, suppressed: Collection[int]) -> list[list[int]]:
    """The suppressed cells grouped by shared equations (transitively), each list sorted."""
    parent = {i: i for i in suppressed}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for top, kids in lattice.equations:
        members = [c for c in (top, *kids) if c in parent]
        for other in members[1:]:
            a, b = find(members[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in sorted(parent):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


@dataclass
class Check:
    """What ``check`` found: the ranges, and for each cell narrower than ``enough`` the
    published cells whose release would widen it (by LP pricing; possibly none found)."""

    ranges: dict[int, Range]
    helpers: dict[int, set[int]] = field(default_factory=dict)


def feasible_ranges(
    lattice: Lattice,
    suppressed: Collection[int],
    targets: Iterable[int] | None = None,
    enough: float | None = None,
) -> dict[int, Range]:
    """``{cell: (min, max)}`` of each target's household count (default: every suppressed
    cell), given the exact values of all cells not in ``suppressed``. ``max`` may be inf.

    Every solve yields a whole feasible table, and the true table is one too, so each
    cell's range is known to contain the values seen so far. With ``enough``, a cell whose
    seen values already span ``enough`` is not solved for: its range is returned as seen
    (an inner bound of the true range, at least ``enough`` wide). Cells narrower than
    ``enough``, and every cell without it, get their exact range. Each cell is at least
    its floor (``Lattice.floors``).
    """
    return check(lattice, suppressed, targets, enough).ranges


def check(
    lattice: Lattice,
    suppressed: Collection[int],
    targets: Iterable[int] | None = None,
    enough: float | None = None,
) -> Check:
    """``feasible_ranges``, plus helpers for the cells narrower than ``enough``.

    A helper is a published cell that shares an equation of the LP with the narrow cell's
    optimum and has a non-zero reduced cost there: releasing it (its bound opened to
    ``[0, inf)``) moves that optimum, at least until its own other equations bind.
    """
    hidden = set(suppressed)
    wanted = hidden if targets is None else set(targets)
    if not wanted <= hidden:
        raise ValueError("only a suppressed cell has a feasible range")
    out = Check({})
    for comp in components(lattice, hidden):
        asked = [i for i in comp if i in wanted]
        if asked:
            _solve_component(lattice, comp, hidden, asked, enough, out)
    return out


def _solve_component(
    lattice: Lattice,
    comp: list[int],
    hidden: set[int],
    asked: list[int],
    enough: float | None,
    out: Check,
) -> None:
    col = {cell: j for j, cell in enumerate(comp)}
    rows = sorted({e for cell in comp for e in lattice.of_cell[cell]})
    starts: list[int] = []
    indices: list[int] = []
    values: list[float] = []
    rhs: list[float] = []
    for e in rows:
        top, kids = lattice.equations[e]
        starts.append(len(indices))
        known = 0.0
        for cell, coef in ((top, 1.0), *((k, -1.0) for k in kids)):
            if cell in hidden:
                indices.append(col[cell])
                values.append(coef)
            else:
                known += coef * lattice.households[cell]
        rhs.append(-known)
    # The compiled solver without highspy's Python layer (callbacks, modelling helpers):
    # that layer prints a licence banner to stdout on first use, which would land in the
    # service's JSON logs, and adds nothing here.
    h = _Highs()
    h.setOptionValue("output_flag", False)
    n = len(comp)
    floors = _floors(lattice, comp)
    h.addVars(n, floors, np.full(n, highspy.kHighsInf))
    bounds = np.array(rhs, dtype=np.float64)
    h.addRows(
        len(rows),
        bounds,
        bounds,
        len(indices),
        np.array(starts, dtype=np.int32),
        np.array(indices, dtype=np.int32),
        np.array(values, dtype=np.float64),
    )
    # The lowest and highest value seen for each column, starting from the true table.
    true = np.array([float(lattice.households[c]) for c in comp])
    seen_low, seen_high = true.copy(), true.copy()
    if enough is not None:
        _explore(h, [col[c] for c in asked], floors, true, seen_low, seen_high, enough)
    previous: int | None = None
    for cell in asked:
        j = col[cell]
        if enough is not None and seen_high[j] - seen_low[j] >= enough:
            out.ranges[cell] = (float(seen_low[j]), float(seen_high[j]))
            continue
        if previous is not None:
            h.changeColCost(previous, 0.0)
        h.changeColCost(j, 1.0)
        previous = j
        high = _optimum(h, highspy.ObjSense.kMaximize, seen_low, seen_high)
        if enough is not None and high - seen_low[j] >= enough:
            out.ranges[cell] = (float(seen_low[j]), high)
            continue
        helpers = _priced(h, lattice, rows, hidden) if enough is not None else set()
        floor = float(floors[j])
        if seen_low[j] <= floor:
            low = floor  # a solution already puts it at its bound
        else:
            low = max(_optimum(h, highspy.ObjSense.kMinimize, seen_low, seen_high), floor)
            if enough is not None:
                helpers |= _priced(h, lattice, rows, hidden)
        out.ranges[cell] = (low, high)
        if enough is not None and high - low < enough:
            out.helpers[cell] = helpers


def _floors(lattice: Lattice, comp: list[int]) -> np.ndarray:
    """The lower bound of each column: the cell's floor (0 when the lattice has none)."""
    if not lattice.floors:
        return np.zeros(len(comp))
    return np.array([float(lattice.floors[c]) for c in comp])


def _priced(h: _Highs, lattice: Lattice, rows: list[int], hidden: set[int]) -> set[int]:
    """Published cells with a non-zero reduced cost at the current optimum, were they
    columns: sum over the model's equations they appear in of coefficient * row dual."""
    solution = h.getSolution()
    if not solution.dual_valid:
        return set()
    duals = solution.row_dual
    priced: dict[int, float] = {}
    for r, e in enumerate(rows):
        y = duals[r]
        if abs(y) <= _DUAL_TOLERANCE:
            continue
        top, kids = lattice.equations[e]
        if top not in hidden:
            priced[top] = priced.get(top, 0.0) + y
        for k in kids:
            if k not in hidden:
                priced[k] = priced.get(k, 0.0) - y
    return {c for c, v in priced.items() if abs(v) > _DUAL_TOLERANCE}


def _explore(
    h: _Highs,
    cols: list[int],
    floors: np.ndarray,
    true: np.ndarray,
    seen_low: np.ndarray,
    seen_high: np.ndarray,
    enough: float,
) -> None:
    """Widen the seen ranges cheaply: maximize the sum of the columns still narrower than
    ``enough``, every column capped at ``2 * enough`` above its true value (so the LP is
    bounded and still feasible), while that settles more columns.

    A capped solution is a solution of the uncapped problem too, so what it shows is true.
    The caps and costs are cleared afterwards.
    """
    n = len(seen_low)
    every = np.arange(n, dtype=np.int32)
    open_cols = [j for j in cols if seen_high[j] - seen_low[j] < enough]
    if len(open_cols) < 2:
        return
    h.changeColsBounds(n, every, floors, true + 2 * enough)
    while len(open_cols) >= 2:
        costs = np.zeros(n)
        costs[open_cols] = 1.0
        h.changeColsCost(n, every, costs)
        _optimum(h, highspy.ObjSense.kMaximize, seen_low, seen_high)
        still = [j for j in open_cols if seen_high[j] - seen_low[j] < enough]
        if len(still) == len(open_cols):
            break
        open_cols = still
    h.changeColsBounds(n, every, floors, np.full(n, highspy.kHighsInf))
    h.changeColsCost(n, every, np.zeros(n))


def _optimum(
    h: _Highs, sense: highspy.ObjSense, seen_low: np.ndarray, seen_high: np.ndarray
) -> float:
    """Solve; fold the solution into the values seen; the optimum (inf if unbounded)."""
    h.changeObjectiveSense(sense)
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kUnknown:
        # Rarely, simplex warm-started from the kept basis ends undecided: solve again from
        # scratch, without presolve, before giving up.
        h.clearSolver()
        h.setOptionValue("presolve", "off")
        h.run()
        h.setOptionValue("presolve", "choose")
        status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kOptimal:
        x = np.asarray(h.getSolution().col_value, dtype=np.float64)
        np.minimum(seen_low, x, out=seen_low)
        np.maximum(seen_high, x, out=seen_high)
        return float(h.getInfo().objective_function_value)
    if status in _UNBOUNDED and sense == highspy.ObjSense.kMaximize:
        return float("inf")
    raise RuntimeError(f"HiGHS could not bound a suppressed cell: {h.modelStatusToString(status)}")
