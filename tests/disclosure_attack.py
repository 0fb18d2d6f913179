"""An adversary of published count tables, for the tests of every aggregate the service
publishes (summaries, analyses, maps) and of ``protect`` itself.

It is written from the documented rules (docs/api.md, "Tables: cells, margins and
dimensions" and "Disclosure control") and imports nothing from the application, so a
defect in ``app.services.disclosure`` (its lattice, its equations, its solver, its
rounding) cannot hide itself: the answer is read as JSON would be, the equations are
rebuilt here from the keys, the true margins are summed here from the interior cells, and
the linear programs are this module's own (HiGHS through its modelling API).

What the adversary knows about a table:

- its shape: one cell for every combination of the values listed, ``None`` meaning "all
  values" of that dimension; each margin is the sum of its children along any one
  dimension (so along every dimension at once);
- every published household count: either its exact, unrounded value (what the
  disclosure rules promise to withstand) or only the published, rounded value: the true
  count then lies in the integers that round to it, halves up (``rounding_interval``),
  and is at least the threshold, since smaller counts are never published;
- that counts are non-negative integers, and any lower bound the answer gives away (a
  map lists only the hexagons holding a household; a table lists only the geography units
  holding one).

For every withheld cell it solves the minimum and the maximum of its count over all the
tables that agree with all of that (a linear program each way, the bounds then rounded
inwards to integers) and reports the cells whose range is narrower than the threshold.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

import highspy
import numpy as np

Key = tuple[str | None, ...]

# An LP optimum this close to an integer is that integer (solver round-off).
_EPS = 1e-6

_UNBOUNDED = {
    highspy.HighsModelStatus.kUnbounded,
    highspy.HighsModelStatus.kUnboundedOrInfeasible,
}


def rounded(count: int, base: int) -> int:
    """The documented rounding: to the nearest multiple of ``base``, halves up."""
    steps = (Decimal(count) / Decimal(base)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(steps) * base


def rounding_interval(shown: int, base: int) -> tuple[int, int]:
    """The non-negative integers that publish as ``shown``: ``[shown - base/2, shown + base/2)``."""
    low = math.ceil(Fraction(shown) - Fraction(base, 2))
    high = math.ceil(Fraction(shown) + Fraction(base, 2)) - 1
    return max(low, 0), high


def published_or_withheld(count: int, threshold: int, base: int) -> int | None:
    """A lone count as documented: withheld below the threshold (zero included), else rounded."""
    return None if count < threshold else rounded(count, base)


@dataclass(frozen=True)
class Narrow:
    """A withheld cell the adversary pins to fewer than ``threshold`` values apart."""

    key: Key
    low: int
    high: float  # math.inf when nothing bounds it from above


def levels_of(keys: Iterable[Key]) -> list[list[str]]:
    """Each dimension's values as listed by the table's keys (order of first appearance)."""
    keys = list(keys)
    n = len(keys[0]) if keys else 0
    out: list[list[str]] = [[] for _ in range(n)]
    for key in keys:
        assert len(key) == n, f"key {key!r} does not have {n} dimensions"
        for pos, value in enumerate(key):
            if value is not None and value not in out[pos]:
                out[pos].append(value)
    return out


def lattice_keys(levels: Sequence[Sequence[str]]) -> set[Key]:
    """Every key of the full table over ``levels``: each value or ``None`` in each dimension."""
    return set(itertools.product(*[[*values, None] for values in levels]))


def equations(keys: set[Key], levels: Sequence[Sequence[str]]) -> list[tuple[Key, list[Key]]]:
    """``(margin, children)``: each margin equals the sum of its children along one of its
    ``None`` dimensions."""
    out = []
    for key in sorted(keys, key=repr):
        for pos, value in enumerate(key):
            if value is None:
                out.append((key, [(*key[:pos], v, *key[pos + 1 :]) for v in levels[pos]]))
    return out


def true_counts(interior: Mapping[Key, int], keys: Iterable[Key]) -> dict[Key, int]:
    """The exact count of every cell of ``keys`` from the interior cells alone (a cell not
    in ``interior`` holds none): a margin is the sum of the interior cells it covers."""
    sums: dict[Key, int] = {}
    for cell, n in interior.items():
        for mask in itertools.product((False, True), repeat=len(cell)):
            margin = tuple(None if hide else v for hide, v in zip(mask, cell, strict=True))
            sums[margin] = sums.get(margin, 0) + n
    return {key: sums.get(key, 0) for key in keys}


def _bounds(
    answer: Mapping[Key, int | None],
    keys: set[Key],
    threshold: int,
    base: int,
    truth: Mapping[Key, int] | None,
    lower: Mapping[Key, int],
) -> tuple[dict[Key, tuple[float, float]], dict[Key, int] | None]:
    """What the adversary knows of each cell: ``(low, high)``, equal when it is exact."""
    exact = true_counts(truth, keys) if truth is not None else None
    bounds: dict[Key, tuple[float, float]] = {}
    for key, shown in answer.items():
        floor = lower.get(key, 0)
        if exact is not None:
            assert exact[key] >= floor, f"{key}: {exact[key]} households, below {floor}"
        if shown is None:
            bounds[key] = (floor, math.inf)
        elif exact is not None:
            n = exact[key]
            assert n >= threshold, f"{key}: {n} households published as {shown}"
            assert shown == rounded(n, base), f"{key}: {n} households published as {shown}"
            bounds[key] = (n, n)
        else:
            assert shown >= threshold, f"{key}: {shown} households published"
            low, high = rounding_interval(shown, base)
            bounds[key] = (max(low, floor, threshold), high)
    return bounds, exact


def _components(free: list[Key], eqs: list[list[tuple[Key, float]]]) -> list[list[Key]]:
    """The cells whose values are not known, grouped by the equations that link them."""
    parent = {key: key for key in free}

    def find(key: Key) -> Key:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for terms in eqs:
        linked = [find(k) for k, _ in terms if k in parent]
        for other in linked[1:]:
            parent[find(other)] = find(linked[0])
    groups: dict[Key, list[Key]] = {}
    for key in free:
        groups.setdefault(find(key), []).append(key)
    return list(groups.values())


def _ranges(
    answer: Mapping[Key, int | None],
    *,
    threshold: int,
    base: int,
    truth: Mapping[Key, int] | None,
    lower: Mapping[Key, int] | None,
    enough: float | None,
) -> dict[Key, tuple[int, float]]:
    levels = levels_of(answer)
    keys = lattice_keys(levels)
    assert set(answer) == keys, (
        f"not a full table: missing {sorted(keys - set(answer), key=repr)[:5]}, "
        f"extra {sorted(set(answer) - keys, key=repr)[:5]}"
    )
    bounds, exact = _bounds(answer, keys, threshold, base, truth, lower or {})
    # Each equation as terms (cell, coefficient) = 0: margin - children.
    eqs = [
        [(margin, 1.0), *((c, -1.0) for c in children)]
        for margin, children in equations(keys, levels)
    ]
    free = sorted((k for k, (lo, hi) in bounds.items() if lo != hi), key=repr)
    withheld = {k for k, shown in answer.items() if shown is None}
    out: dict[Key, tuple[int, float]] = {}
    for comp in _components(free, eqs):
        targets = [k for k in comp if k in withheld]
        if targets:
            out.update(_solve(comp, targets, bounds, eqs, exact, enough))
    return dict(sorted(out.items(), key=lambda item: repr(item[0])))


def _solve(
    comp: list[Key],
    targets: list[Key],
    bounds: Mapping[Key, tuple[float, float]],
    eqs: list[list[tuple[Key, float]]],
    exact: Mapping[Key, int] | None,
    enough: float | None,
) -> dict[Key, tuple[int, float]]:
    """Min and max of each target over one component's linear program (the known cells
    moved to the right-hand side), rounded inwards to whole households.

    With ``enough`` only a verdict is wanted, and solves are saved: every solution is a
    whole table that agrees with the answer (the true table is one), so a target seen to
    take values ``enough`` apart needs no solve of its own (its range is then reported as
    seen: inner bounds, already wide enough). A few solves that push all open targets up
    at once, each capped a little above the values seen so the push spreads, settle most.
    """
    col = {key: j for j, key in enumerate(comp)}
    n = len(comp)
    every = np.arange(n, dtype=np.int32)
    lb = np.array([bounds[k][0] for k in comp], dtype=np.float64)
    ub = np.array([bounds[k][1] for k in comp], dtype=np.float64)
    h = highspy.Highs()
    h.silent()
    h.addVars(n, lb, np.where(np.isinf(ub), highspy.kHighsInf, ub))
    for terms in eqs:
        if any(k in col for k, _ in terms):
            known = sum(coef * bounds[k][0] for k, coef in terms if k not in col)
            idx = np.array([col[k] for k, _ in terms if k in col], dtype=np.int32)
            val = np.array([coef for k, coef in terms if k in col], dtype=np.float64)
            h.addRow(-known, -known, len(idx), idx, val)
    seen_low = np.full(n, math.inf)
    seen_high = np.full(n, -math.inf)

    def optimum(sense: highspy.ObjSense) -> float:
        h.changeObjectiveSense(sense)
        h.run()
        status = h.getModelStatus()
        if status == highspy.HighsModelStatus.kUnknown:
            # Rarely, simplex from the kept basis ends undecided: solve again from scratch,
            # without presolve, before drawing any conclusion.
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
        assert status in _UNBOUNDED, f"no table agrees with the answer ({status}): {comp[:5]}"
        assert sense == highspy.ObjSense.kMaximize, status
        return math.inf

    if exact is not None:  # the true table is one solution
        seen_low = np.array([float(exact[k]) for k in comp])
        seen_high = seen_low.copy()
    else:
        optimum(highspy.ObjSense.kMinimize)  # any solution (no costs yet)
    wanted = [col[k] for k in targets]
    if enough is not None:
        h.changeColsBounds(n, every, lb, np.minimum(ub, seen_high + 2 * enough))
        pushed = [j for j in wanted if seen_high[j] - seen_low[j] < enough]
        while len(pushed) > 1:
            costs = np.zeros(n)
            costs[pushed] = 1.0
            h.changeColsCost(n, every, costs)
            optimum(highspy.ObjSense.kMaximize)
            still = [j for j in pushed if seen_high[j] - seen_low[j] < enough]
            if len(still) == len(pushed):
                break
            pushed = still
        h.changeColsBounds(n, every, lb, np.where(np.isinf(ub), highspy.kHighsInf, ub))
        h.changeColsCost(n, every, np.zeros(n))

    def settled(j: int) -> bool:
        return enough is not None and seen_high[j] - seen_low[j] >= enough

    out: dict[Key, tuple[int, float]] = {}
    previous: int | None = None
    for key, j in zip(targets, wanted, strict=True):
        high, low = float(seen_high[j]), float(seen_low[j])
        if not settled(j):
            if previous is not None:
                h.changeColCost(previous, 0.0)
            h.changeColCost(j, 1.0)
            previous = j
            high = optimum(highspy.ObjSense.kMaximize)
            low = float(seen_low[j]) if settled(j) else optimum(highspy.ObjSense.kMinimize)
        out[key] = (math.ceil(low - _EPS), high if math.isinf(high) else math.floor(high + _EPS))
    return out


def feasible_ranges(
    answer: Mapping[Key, int | None],
    *,
    threshold: int,
    base: int,
    truth: Mapping[Key, int] | None = None,
    lower: Mapping[Key, int] | None = None,
) -> dict[Key, tuple[int, float]]:
    """The smallest and largest count every withheld cell (``None`` in ``answer``) can hold.

    ``answer`` maps every key of one table to its published household count. With
    ``truth`` (the exact interior counts) the adversary knows every published cell's exact
    value, as the disclosure rules assume; without it, only what is published (rounded by
    ``base``). ``lower``: counts the answer shows to be at least some value. The table
    must be complete (every key of its lattice present) and, with ``truth``, each
    published count the true one rounded, never below the threshold.
    """
    return _ranges(answer, threshold=threshold, base=base, truth=truth, lower=lower, enough=None)


def narrow_cells(
    answer: Mapping[Key, int | None],
    *,
    threshold: int,
    base: int,
    truth: Mapping[Key, int] | None = None,
    lower: Mapping[Key, int] | None = None,
) -> list[Narrow]:
    """The withheld cells whose feasible range (``feasible_ranges``) is narrower than
    ``threshold``: empty when the answer keeps every withheld count open enough. A cell
    seen to span ``threshold`` in the solutions met on the way is not solved for (the
    range reported for a narrow cell is always its exact one)."""
    if any(not values for values in levels_of(answer)):
        # A dimension listing no value: the table's shape already says it is empty (no
        # geography unit holds a household of the selection), and every cell is withheld.
        assert all(shown is None for shown in answer.values()), answer
        return []
    ranges = _ranges(
        answer, threshold=threshold, base=base, truth=truth, lower=lower, enough=threshold
    )
    return [Narrow(k, low, high) for k, (low, high) in ranges.items() if high - low < threshold]


# -- reading the HTTP answers --------------------------------------------------------------


def _withheld_publish_nothing(cell: Mapping[str, Any], measures: Sequence[str]) -> None:
    if cell.get("households") is None:
        for m in measures:
            assert cell.get(m) is None, f"withheld cell shows {m}: {cell}"


def table_answer(cells: Iterable[Mapping[str, Any]], dims: Sequence[str]) -> dict[Key, int | None]:
    """``{key: households}`` of a summary (``rows`` + ``margins``) or an analysis
    (``cells`` + ``margins``); each key once, a withheld cell showing nothing else."""
    out: dict[Key, int | None] = {}
    for cell in cells:
        key = tuple(cell[d] for d in dims)
        assert key not in out, f"{key} listed twice"
        _withheld_publish_nothing(cell, ("members", "mean_pmt_score", "share_below"))
        out[key] = cell["households"]
    return out


def listed_units(answer: Mapping[Key, int | None], positions: Iterable[int]) -> dict[Key, int]:
    """Lower bounds the shape of a table gives away: a geography dimension (at
    ``positions``) lists only the units holding at least one household, so each unit's
    margin over every other dimension holds at least one."""
    levels = levels_of(answer)
    n = len(levels)
    out = {}
    for pos in positions:
        for value in levels[pos]:
            out[tuple(value if i == pos else None for i in range(n))] = 1
    return out


def map_answer(body: Mapping[str, Any]) -> tuple[dict[Key, int | None], dict[Key, int]]:
    """A map as a one-dimension table (each hexagon a cell, the total its margin), and the
    lower bounds it gives away: a hexagon is listed only when it holds a household."""
    answer: dict[Key, int | None] = {}
    for feature in body["features"]:
        props = feature["properties"]
        key = (props["h3"],)
        assert key not in answer, f"hexagon {key} listed twice"
        _withheld_publish_nothing(props, ("value",))
        answer[key] = props["households"]
    answer[(None,)] = body["total"]["households"]
    if body["total"]["households"] is None:
        assert body["total"]["value"] is None, body["total"]
    return answer, {key: 1 for key in answer if key != (None,)}


def assert_open(
    answer: Mapping[Key, int | None],
    *,
    threshold: int,
    base: int,
    truth: Mapping[Key, int] | None = None,
    lower: Mapping[Key, int] | None = None,
) -> list[Key]:
    """Assert that the adversary pins no withheld cell of ``answer`` (``narrow_cells``);
    return the withheld cells it attacked, so that a caller can tell it was not nothing."""
    narrow = narrow_cells(answer, threshold=threshold, base=base, truth=truth, lower=lower)
    assert narrow == [], f"withheld counts narrowed to less than {threshold}: {narrow[:10]}"
    return sorted((key for key, shown in answer.items() if shown is None), key=repr)
