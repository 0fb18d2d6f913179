"""Protecting a count table before it is published: suppression, then rounding.

``protect`` takes the full lattice of a table (``table.with_margins`` output) and applies,
in order:

1. Primary suppression: a cell with fewer than ``policy.threshold`` households is
   withheld. Zero cells are below every threshold, so they are withheld too: publishing
   "0" would say no household of that kind exists, and a structural zero next to a
   withheld small cell narrows it.
2. Dominance (attribute disclosure): for each sensitive dimension of the table, each
   breakdown of a group (a margin with None for that dimension) by that dimension is
   withheld whole when one value holds at least ``policy.dominance`` of the group's
   households; the group's own total stays, and every cell of the breakdown is labelled
   "dominance" (a small one too), so nothing says which value dominated. A
   published share of households below the cut-off at or beyond ``dominance`` (or at or
   below ``1 - dominance``) is withheld while the counts stay.
3. Complementary suppression: the household counts form an additive table (each margin is
   the sum of its children along any one dimension). More cells are withheld until the
   linear-programming audit (``solver.feasible_ranges``) shows every withheld count can
   lie anywhere in an interval at least ``threshold`` wide, given the exact values of
   every published cell, non-negativity, and the groups the answer's shape shows to hold
   a household (``present``: a map's hexagons, a table's geography units). Heuristic,
   in rounds: an equation in which only one cell is withheld pins that cell, so the
   smallest published cell of that equation is withheld next (interior cells before
   margins, the grand total last), until no equation pins a cell; then the LP checks the
   withheld cells not yet shown safe, and each exposed cell gets one more withheld cell:
   among the published cells whose release would move its optimum (non-zero reduced
   cost, read off the LP's duals), interior before margin, smallest first; if pricing
   names none, the nearest published cell by the same order. A cell loosened in a round
   by an earlier choice waits for the next round. Withholding a cell only relaxes the LP,
   so a cell shown safe stays safe: only new and still-exposed cells are solved again.
4. Rounding: published household and member counts are rounded to the nearest multiple of
   ``policy.rounding_base`` (half up), each cell on its own, margins included, so a
   published margin need not equal the sum of its published children. A withheld cell
   publishes nothing (members, mean and share are null too).

Member counts, score sums and counts below the cut-off follow the households' suppression
pattern; only household counts are audited by linear programming.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from app.services.disclosure.policy import Policy
from app.services.disclosure.solver import check
from app.services.disclosure.table import Cell, Lattice

PRIMARY = "primary"
COMPLEMENTARY = "complementary"
DOMINANCE = "dominance"
RULES = (PRIMARY, COMPLEMENTARY, DOMINANCE)

# A feasible range this much narrower than the threshold still passes (LP round-off).
WIDTH_TOLERANCE = 1e-6


@dataclass
class Published:
    """One cell as it may be published."""

    key: dict[str, str | None]
    households: int | None
    members: int | None
    # score_sum / households, 2 decimals; None when suppressed or unknown
    mean_pmt_score: float | None
    # below / households, 3 decimals; None when suppressed, unknown or withheld (dominance)
    share_below: float | None
    # None, "primary", "complementary" or "dominance". For the audit trail and the counts in
    # Disclosure.rules: a public product should say only that a cell is withheld, since
    # "primary" tells a reader the count is below the threshold (and "complementary" that
    # it is not), which narrows what the suppression pattern leaves open.
    suppressed: str | None


@dataclass
class Disclosure:
    """What was done to a table, for the response's ``disclosure`` block."""

    suppressed_below: int
    rounding_base: int
    dominance: float
    suppressed_cells: int
    rules: dict[str, int]  # {"primary": n, "complementary": n, "dominance": n}
    method: str  # one sentence saying what was done
    # Published cells whose share_below alone was withheld (also counted in rules["dominance"]).
    shares_withheld: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "suppressed_below": self.suppressed_below,
            "rounding_base": self.rounding_base,
            "dominance": self.dominance,
            "suppressed_cells": self.suppressed_cells,
            "shares_withheld": self.shares_withheld,
            "rules": {rule: self.rules.get(rule, 0) for rule in RULES},
            "method": self.method,
        }


def round_half_up(value: int, base: int) -> int:
    """``value`` (>= 0) to the nearest multiple of ``base``, a tie going up."""
    return (2 * value + base) // (2 * base) * base


def suppression(
    dims: Sequence[str],
    cells: Sequence[Cell],
    policy: Policy,
    present: Mapping[str, Iterable[str]] | None = None,
) -> dict[int, str]:
    """``{index into cells: rule}`` for every cell to withhold (steps 1-3 of ``protect``)."""
    lattice = Lattice.build(dims, cells, present)
    reason: dict[int, str] = {
        i: PRIMARY for i, h in enumerate(lattice.households) if h < policy.threshold
    }
    _dominance(lattice, policy, reason)
    _complementary(lattice, policy.threshold, reason)
    return reason


def protect(
    dims: Sequence[str],
    cells: Sequence[Cell],
    policy: Policy,
    present: Mapping[str, Iterable[str]] | None = None,
) -> tuple[list[Published], Disclosure]:
    """cells = with_margins(...) output. Apply, in order: primary suppression, dominance,
    complementary suppression (LP-checked), then rounding of what is published.

    ``present``: per dimension, the values the published answer lists only because a
    household of the selection has them (a map's hexagons; a table's geography units and
    values beyond a dimension's usual ones). The adversary knows each of them holds at
    least one household, so the audit counts that too (``table.Lattice.floors``).

    Returns one ``Published`` per input cell, in input order. Raises ValueError when
    ``cells`` is not a full, additive lattice over ``dims``.
    """
    for cell in cells:
        if cell.below is not None and not 0 <= cell.below <= cell.households:
            raise ValueError(f"cell {cell.key!r}: below must lie between 0 and households")
    reason = suppression(dims, cells, policy, present)
    dominance = policy.dominance_fraction
    base = policy.rounding_base
    published: list[Published] = []
    withheld_shares = 0
    for i, cell in enumerate(cells):
        why = reason.get(i)
        if why is not None:
            published.append(Published(dict(cell.key), None, None, None, None, why))
            continue
        h = cell.households
        mean = None if cell.score_sum is None else round(cell.score_sum / h, 2)
        share = None
        if cell.below is not None:
            share = round(cell.below / h, 3)
            if _share_dominated(cell.below, h, share, dominance):
                share = None
                withheld_shares += 1
        published.append(
            Published(
                dict(cell.key),
                round_half_up(h, base),
                round_half_up(cell.members, base),
                mean,
                share,
                None,
            )
        )
    rules = {rule: sum(1 for r in reason.values() if r == rule) for rule in RULES}
    rules[DOMINANCE] += withheld_shares
    disclosure = Disclosure(
        suppressed_below=policy.threshold,
        rounding_base=base,
        dominance=policy.dominance,
        suppressed_cells=len(reason),
        rules=rules,
        method=_method(dims, policy),
        shares_withheld=withheld_shares,
    )
    return published, disclosure


def _share_dominated(below: int, households: int, shown: float, dominance: Fraction) -> bool:
    """Whether the share below (exact, or as shown to 3 decimals) is at or beyond the
    dominance share on either side: nearly everyone, or nearly no one, is below."""
    p, q = dominance.numerator, dominance.denominator
    thousandths = round(shown * 1000)
    return (
        below * q >= p * households
        or (households - below) * q >= p * households
        or thousandths * q >= p * 1000
        or (1000 - thousandths) * q >= p * 1000
    )


def _dominance(lattice: Lattice, policy: Policy, reason: dict[int, str]) -> None:
    """Withhold each breakdown by a sensitive dimension that one value dominates.

    Every cell of such a breakdown is labelled "dominance", a small one too: a "primary"
    label next to a "dominance" one would say which value dominated. A group below the
    threshold is skipped (its cells are all below it, so all withheld as primary).
    """
    dominance = policy.dominance_fraction
    households = lattice.households
    for pos, dim in enumerate(lattice.dims):
        if dim not in policy.sensitive:
            continue
        for group, kt in enumerate(lattice.keys):
            total = households[group]
            if kt[pos] is not None or total < policy.threshold:
                continue
            kids = lattice.children(group, pos)
            if max(households[k] for k in kids) * dominance.denominator >= (
                dominance.numerator * total
            ):
                for k in kids:
                    reason[k] = DOMINANCE


def _complementary(lattice: Lattice, threshold: int, reason: dict[int, str]) -> None:
    """Withhold more cells until no withheld count is narrower than ``threshold``."""
    hidden = set(reason)
    equations = lattice.equations
    count = [sum(1 for c in (top, *kids) if c in hidden) for top, kids in equations]
    pinning = deque(j for j, n in enumerate(count) if n == 1)
    pending = set(hidden)  # withheld cells not yet shown safe

    def hide(cell: int) -> None:
        reason[cell] = COMPLEMENTARY
        hidden.add(cell)
        pending.add(cell)
        for j in lattice.of_cell[cell]:
            count[j] += 1
            if count[j] == 1:
                pinning.append(j)

    while True:
        # An equation with one withheld cell gives its value away exactly: no LP needed.
        while pinning:
            j = pinning.popleft()
            if count[j] == 1:
                top, kids = equations[j]
                open_cells = [c for c in (top, *kids) if c not in hidden]
                if open_cells:  # none: an empty table, whose withheld total is 0 anyway
                    hide(_pick(lattice, open_cells))
        if not pending:
            return
        found = check(lattice, hidden, pending, enough=threshold - WIDTH_TOLERANCE)
        exposed = sorted(
            (hi - lo, cell)
            for cell, (lo, hi) in found.ranges.items()
            if hi - lo < threshold - WIDTH_TOLERANCE
        )
        pending = {cell for _, cell in exposed}
        if not exposed:
            return
        chosen: set[int] = set()  # withheld in this round
        touched: set[int] = set()  # equations given a new withheld cell in this round
        for _, cell in exposed:
            helpers = found.helpers.get(cell)
            if helpers:
                if chosen & helpers:
                    continue  # already loosened this round; re-solved next round
                choice = _pick(lattice, sorted(helpers))
            else:
                if touched.intersection(lattice.of_cell[cell]):
                    continue
                nearest = _neighbours(lattice, cell, hidden)
                if not nearest:
                    return  # everything is withheld: nothing more can be hidden
                choice = _pick(lattice, nearest)
            hide(choice)
            chosen.add(choice)
            touched.update(lattice.of_cell[choice])


def _neighbours(lattice: Lattice, cell: int, hidden: set[int]) -> list[int]:
    """The nearest published cells to ``cell``: those sharing an equation with it; failing
    that, those sharing an equation with a withheld cell that does, and so on outwards."""
    equations = lattice.equations
    seen_eq: set[int] = set()
    seen_cell = {cell}
    frontier = [cell]
    while frontier:
        found: set[int] = set()
        step: list[int] = []
        for member in frontier:
            for j in lattice.of_cell[member]:
                if j in seen_eq:
                    continue
                seen_eq.add(j)
                for c in (equations[j][0], *equations[j][1]):
                    if c in seen_cell:
                        continue
                    seen_cell.add(c)
                    if c in hidden:
                        step.append(c)
                    else:
                        found.add(c)
        if found:
            return sorted(found)
        frontier = step
    return [c for c in range(len(lattice.keys)) if c not in hidden]


def _pick(lattice: Lattice, candidates: list[int]) -> int:
    """The cell to withhold next: interior before margin, the grand total last, smallest first."""
    if not candidates:
        raise RuntimeError("no published cell is left to withhold")
    grand = lattice.grand_total
    return min(
        candidates,
        key=lambda c: (c == grand, lattice.is_margin(c), lattice.households[c], c),
    )


def _method(dims: Sequence[str], policy: Policy) -> str:
    d = policy.dominance_fraction
    high, low = f"{float(d * 100):g}%", f"{float((1 - d) * 100):g}%"
    sensitive = [dim for dim in dims if dim in policy.sensitive]
    dominance = (
        f"every breakdown by {' or '.join(sensitive)} in which one value held at least {high} "
        "of its group was withheld without saying which, "
        if sensitive
        else ""
    )
    rounding = (
        f"published household and member counts were rounded to the nearest "
        f"{policy.rounding_base}, each margin on its own, so margins need not add up"
        if policy.rounding_base > 1
        else "published counts were not rounded"
    )
    return (
        f"Counts of fewer than {policy.threshold} households (zero included) were withheld, "
        f"{dominance}shares below the cut-off of at least {high} or at most {low} were withheld, "
        "further cells were withheld until a linear-programming audit showed that no withheld "
        f"count can be narrowed to an interval less than {policy.threshold} wide, and {rounding}."
    )
