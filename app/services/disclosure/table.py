"""Additive count tables: cells, their margins, and the equations that tie them together.

A table over dimensions ``dims`` is the full lattice: every interior cell (a value for each
dimension) and every margin (``None`` for the dimensions it totals over), the grand total
included. Each margin equals the sum of its children along any one of its ``None``
dimensions; those equations are what an adversary differences with, and what
``protect`` and ``audit`` reason about.

A table may also say, by its shape alone, that some groups are not empty: a map lists only
the hexagons holding a household, a table only the geography units (and the values beyond
a dimension's usual ones) met in the selection. Such a value is *present*: the margin of
that value alone (``None`` in every other dimension) holds at least one household, and an
adversary knows it (``Lattice.floors``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product

KeyTuple = tuple[str | None, ...]


@dataclass
class Cell:
    """One cell of a count table (interior or margin)."""

    key: dict[str, str | None]  # value per dimension; None = total over that dimension
    households: int
    members: int = 0
    score_sum: float | None = None  # sum of households' PMT scores (for mean_pmt_score)
    below: int | None = None  # households below the cut-off (for share_below)


def key_tuple(dims: Sequence[str], key: Mapping[str, str | None]) -> KeyTuple:
    """The cell's key as a tuple in ``dims`` order; a key must name exactly ``dims``."""
    if set(key) != set(dims):
        raise ValueError(
            f"cell key {dict(key)!r} does not name exactly the dimensions {list(dims)}"
        )
    return tuple(key[d] for d in dims)


def _check_dims(dims: Sequence[str]) -> tuple[str, ...]:
    out = tuple(dims)
    if len(set(out)) != len(out):
        raise ValueError(f"dimensions repeat: {list(out)}")
    return out


def with_margins(
    dims: Sequence[str],
    interior: Iterable[Cell],
    levels: Mapping[str, Sequence[str]] | None = None,
) -> list[Cell]:
    """Every interior cell (each dim has a value) plus every margin: for each subset of dims
    replaced by None, the sums (households, members, score_sum, below) — the full lattice,
    grand total included. Interior cells missing from the input are zero cells.

    A dimension's values are those of ``levels[dim]`` when given (in that order; an input
    value not listed there is an error), else the input's values in order of first
    appearance. Input cells with the same key are added together. ``score_sum`` and
    ``below`` of a sum are None when a contributing cell with households has them None;
    a zero cell contributes nothing. Output order: ``itertools.product`` over each
    dimension's values followed by None, so the grand total comes last.
    """
    dims = _check_dims(dims)
    values: list[list[str]] = [list(levels[d]) if levels and d in levels else [] for d in dims]
    fixed = [bool(levels and d in levels) for d in dims]
    seen: list[set[str]] = [set(v) for v in values]
    sums: dict[KeyTuple, _Sum] = {}
    for cell in interior:
        kt = key_tuple(dims, cell.key)
        for pos, value in enumerate(kt):
            if value is None:
                raise ValueError(f"interior cell {cell.key!r} has a None (margin) value")
            if value not in seen[pos]:
                if fixed[pos]:
                    raise ValueError(f"{dims[pos]}={value!r} is not among the given levels")
                seen[pos].add(value)
                values[pos].append(value)
        sums.setdefault(kt, _Sum()).add(cell)
    margins: dict[KeyTuple, _Sum] = {}
    for kt, total in sums.items():
        for mask in product((False, True), repeat=len(dims)):
            if any(mask):
                mk = tuple(None if m else v for v, m in zip(kt, mask, strict=True))
                margins.setdefault(mk, _Sum()).merge(total)
    sums.update(margins)
    out: list[Cell] = []
    for kt in product(*[[*v, None] for v in values]):
        total = sums.get(kt) or _Sum()
        out.append(total.cell(dict(zip(dims, kt, strict=True))))
    return out


@dataclass
class _Sum:
    households: int = 0
    members: int = 0
    score_sum: float | None = 0.0
    below: int | None = 0

    def add(self, cell: Cell) -> None:
        self.merge(_Sum(cell.households, cell.members, cell.score_sum, cell.below))

    def merge(self, other: _Sum) -> None:
        if other.households < 0 or other.members < 0:
            raise ValueError("counts must not be negative")
        self.households += other.households
        self.members += other.members
        if other.households:
            self.score_sum = (
                None
                if self.score_sum is None or other.score_sum is None
                else self.score_sum + other.score_sum
            )
            self.below = (
                None if self.below is None or other.below is None else self.below + other.below
            )

    def cell(self, key: dict[str, str | None]) -> Cell:
        has = self.households > 0
        return Cell(
            key,
            self.households,
            self.members,
            self.score_sum if has else None,
            self.below if has else None,
        )


@dataclass
class Lattice:
    """The cells of a complete table, indexed, and its additivity equations.

    Equation ``j`` is ``parent[j] = sum(children[j])``: a margin and its children along one
    of its None dimensions. ``of_cell[i]`` lists the equations cell ``i`` appears in.
    """

    dims: tuple[str, ...]
    keys: list[KeyTuple]
    index: dict[KeyTuple, int]
    levels: list[list[str]]
    households: list[int]
    equations: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)
    of_cell: list[list[int]] = field(default_factory=list)
    # The least each cell can hold as the published answer shows it: 1 for the margin of a
    # present value (see the module docstring), else 0.
    floors: list[int] = field(default_factory=list)

    @property
    def grand_total(self) -> int:
        return self.index[(None,) * len(self.dims)]

    def is_margin(self, i: int) -> bool:
        return any(v is None for v in self.keys[i])

    def children(self, i: int, pos: int) -> tuple[int, ...]:
        """The cells that margin ``i`` adds up along dimension position ``pos``."""
        kt = self.keys[i]
        return tuple(self.index[(*kt[:pos], value, *kt[pos + 1 :])] for value in self.levels[pos])

    @classmethod
    def build(
        cls,
        dims: Sequence[str],
        cells: Sequence[Cell],
        present: Mapping[str, Iterable[str]] | None = None,
    ) -> Lattice:
        """Index ``cells`` (``with_margins`` output); refuse an incomplete or non-additive table.

        ``present``: per dimension, the values the answer lists only because a household
        has them; the margin of each holds at least one household (``floors``).
        """
        dims = _check_dims(dims)
        keys = [key_tuple(dims, c.key) for c in cells]
        index: dict[KeyTuple, int] = {}
        for i, kt in enumerate(keys):
            if kt in index:
                raise ValueError(f"cell {cells[i].key!r} appears twice")
            index[kt] = i
        levels: list[list[str]] = [[] for _ in dims]
        seen: list[set[str]] = [set() for _ in dims]
        for kt in keys:
            for pos, value in enumerate(kt):
                if value is not None and value not in seen[pos]:
                    seen[pos].add(value)
                    levels[pos].append(value)
        households = [c.households for c in cells]
        if any(h < 0 for h in households):
            raise ValueError("household counts must not be negative")
        lattice = cls(dims, keys, index, levels, households)
        expected = 1
        for lv in levels:
            expected *= len(lv) + 1
        if len(keys) != expected:
            raise ValueError(
                f"the table has {len(keys)} cells, not the full lattice of {expected}: "
                "pass with_margins(...) output"
            )
        lattice.of_cell = [[] for _ in keys]
        for i, kt in enumerate(keys):
            for pos, value in enumerate(kt):
                if value is not None:
                    continue
                try:
                    kids = lattice.children(i, pos)
                except KeyError:
                    raise ValueError(
                        "the table is not a full lattice: pass with_margins(...) output"
                    ) from None
                if households[i] != sum(households[k] for k in kids):
                    raise ValueError(
                        f"cell {cells[i].key!r} is not the sum of its {dims[pos]} breakdown"
                    )
                j = len(lattice.equations)
                lattice.equations.append((i, kids))
                lattice.of_cell[i].append(j)
                for k in kids:
                    lattice.of_cell[k].append(j)
        lattice.floors = [0] * len(keys)
        for dim, values in (present or {}).items():
            if dim not in dims:
                raise ValueError(f"present names {dim!r}, not a dimension of the table")
            pos = dims.index(dim)
            for value in values:
                at = index.get(tuple(value if p == pos else None for p in range(len(dims))))
                if at is None:
                    raise ValueError(f"present {dim}={value!r} is not a value of the table")
                if households[at] < 1:
                    raise ValueError(f"present {dim}={value!r} holds no household")
                lattice.floors[at] = 1
        return lattice
