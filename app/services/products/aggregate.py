r"""Shared SQL of the published aggregates (summaries, analysis): dimensions, counting, protecting.

**Counting.** One statement groups the households matching the filters by the requested
dimensions and gives the interior cells of the table; ``with_margins`` adds every margin in
Python and ``protect`` withholds and rounds (app.services.disclosure). Household dimensions
(geography, poverty band, the PMT indicators) put each household in one group. Member
dimensions (gender, age bracket, ...) may put a household in several: a group's
``households`` is the number of distinct households with at least one living member in the
group, and its ``members`` the living members in the group. So that the table stays
additive (what disclosure control reasons with), a margin that totals over a member
dimension adds up its groups: a household with a woman and a man counts once under
``female`` and once under ``male``, and twice in their total. The distinct count is what
the same query without that dimension gives. Members are always every living member of a
selected household (``member_type`` selects households, as in the beneficiary lists).

The statement reads each selected household once, with its living members found through
``members.household_id`` (a lateral subquery per household, so PostgreSQL can only probe
the members of the households it selected, never read the members table whole): it costs
what the selected households cost, whatever the registry holds. A selection by place (a
filter, or the agreement's geography: every geography column is indexed) is read through
the indexes. With household dimensions only, one row per household: its dimensions, its
score and its living members counted (``LIVING``, which the household composition reads
too), then grouped by the dimensions. With a member dimension it is a two-level GROUP BY:
per household, its living members grouped by the member dimensions (one row per group,
its members counted), then grouped by all the dimensions::

    SELECT d0, d1, count(*) AS households, sum(n) AS members, ...
      FROM (SELECT h.pmt_score AS score, <household dim> AS d0, g.d1, g.n
              FROM households h
              CROSS JOIN LATERAL (SELECT <member dim> AS d1, count(*) AS n
                                    FROM members m WHERE m.household_id = h.id
                                                     AND m.deceased_on IS NULL
                                   GROUP BY 1) g
             WHERE <filters and the agreement's geography>) x
     GROUP BY d0, d1

On a 1M-household registry a table over the largest district (41,000 households) costs
about half a second of PostgreSQL time, ten times what it costs over 4,000 households
(``bench/partner_products.py``). Public answers are not counted here but summed from the
public cube the worker refreshes (app.services.products.cube, app.services.products.public).

**Differencing** (two tables whose populations differ by a few households) is controlled
before any partner table is counted: app.services.products.differencing.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.errors import Forbidden, ValidationFailed
from app.models.registry import (
    EDUCATION_LEVELS,
    EMPLOYMENT,
    MARITAL,
    RELATIONSHIPS,
    TOILET_TYPES,
)
from app.services.disclosure.policy import Policy
from app.services.disclosure.protect import Disclosure, Published, protect
from app.services.disclosure.table import Cell, with_margins
from app.services.sharing import rules as sharing
from app.services.sharing.beneficiaries_sql import (
    AGE_BRACKET,
    AGE_BRACKETS,
    GEO_LEVELS,
    Filters,
    Query,
    household_where,
)

BANDS = ("ultra_poor", "very_poor", "poor", "non_poor", "well_off")
MEASURES = ("households", "members", "mean_pmt_score", "share_below")

# At most this many dimensions in one table, and this many cells (margins included):
# complementary suppression of a large sparse table takes the linear programs seconds to
# minutes (2,000 cells: about a second); a larger table is 422, narrow the geography.
MAX_DIMS = 4
MAX_CELLS = 2_000
PROTECTING_AT_ONCE = 2


@dataclass(frozen=True)
class Dimension:
    """A grouping dimension: its SQL (text), whether members carry it, its usual values."""

    name: str
    sql: str
    member: bool = False
    levels: tuple[str, ...] = ()
    # The agreement dimension (protocol §4.2.1) whose grant it needs; None for geography.
    sharing: str | None = None

    @property
    def geographic(self) -> bool:
        return self.sharing is None


def _bucket(expr: str, edges: Sequence[tuple[int, str]], top: str) -> str:
    """CASE mapping an integer expression to labels: the first ``(below, label)`` it is under."""
    whens = " ".join(f"WHEN {expr} < {below} THEN '{label}'" for below, label in edges)
    return f"(CASE {whens} ELSE '{top}' END)"


# A household's living members: counted once per household by the counting statement
# (``interior_sql`` joins the count as ``lm``), never once per member row.
LIVING = "lm.n"
_ANIMALS = "(h.cows + h.goats + h.buffaloes + h.bullocks + h.lambs)"
_ACRES = "(h.land_muraba * 25 + h.land_acre + h.land_kanal / 8 + h.land_marla / 160)"  # §4.2.1 xvii

_ALL: tuple[Dimension, ...] = (
    *(Dimension(level, f"h.{level}_code") for level in GEO_LEVELS),
    Dimension(
        "poverty_band", "coalesce(h.poverty_band, 'unscored')", False, BANDS, "poverty_level"
    ),
    Dimension(
        "household_composition",
        _bucket(LIVING, [(i + 1, str(i)) for i in range(9)], "9+"),
        False,
        ("1", "2", "3", "4", "5", "6", "7", "8", "9+"),
        "household_composition",
    ),
    Dimension("gender", "m.gender", True, ("female", "male"), "gender"),
    Dimension("relationship", "m.relationship", True, RELATIONSHIPS, "relationship"),
    Dimension("age_bracket", AGE_BRACKET, True, AGE_BRACKETS, "age_bracket"),
    Dimension("marital_status", "m.marital_status", True, MARITAL, "marital_status"),
    Dimension(
        "disability",
        "(CASE WHEN m.disabilities IS NULL THEN 'not_collected' "
        "WHEN cardinality(m.disabilities) = 0 THEN 'none' ELSE 'disabled' END)",
        True,
        ("none", "disabled"),
        "disability",
    ),
    Dimension(
        "employment", "coalesce(m.employment, 'not_recorded')", True, EMPLOYMENT, "employment"
    ),
    Dimension(
        "education", "coalesce(m.education, 'not_recorded')", True, EDUCATION_LEVELS, "education"
    ),
    Dimension(
        "room_count",
        "(CASE WHEN h.rooms IS NULL THEN 'not_recorded' WHEN h.rooms >= 5 THEN '5+' "
        "ELSE h.rooms::text END)",
        False,
        ("0", "1", "2", "3", "4", "5+"),
        "room_count",
    ),
    Dimension(
        "toilet_type", "coalesce(h.toilet_type, 'not_recorded')", False, TOILET_TYPES, "toilet_type"
    ),
    Dimension(
        "electrical_equipment",
        _bucket("cardinality(h.electrical)", [(1, "0"), (2, "1"), (3, "2")], "3+"),
        False,
        ("0", "1", "2", "3+"),
        "electrical_equipment",
    ),
    Dimension(
        "gas_equipment",
        _bucket("cardinality(h.gas)", [(1, "0"), (2, "1")], "2+"),
        False,
        ("0", "1", "2+"),
        "gas_equipment",
    ),
    Dimension(
        "kitchen_assets",
        _bucket("cardinality(h.kitchen)", [(1, "0"), (2, "1")], "2+"),
        False,
        ("0", "1", "2+"),
        "kitchen_assets",
    ),
    Dimension(
        "livestock",
        _bucket(_ANIMALS, [(1, "0"), (3, "1-2"), (6, "3-5"), (11, "6-10")], "11+"),
        False,
        ("0", "1-2", "3-5", "6-10", "11+"),
        "livestock",
    ),
    Dimension(
        "land",
        f"(CASE WHEN {_ACRES} = 0 THEN 'none' WHEN {_ACRES} < 1 THEN 'under_1_acre' "
        f"WHEN {_ACRES} < 5 THEN '1_to_5_acres' WHEN {_ACRES} < 12.5 THEN '5_to_12.5_acres' "
        "ELSE '12.5_acres_or_more' END)",
        False,
        ("none", "under_1_acre", "1_to_5_acres", "5_to_12.5_acres", "12.5_acres_or_more"),
        "land",
    ),
)
DIMENSIONS: dict[str, Dimension] = {d.name: d for d in _ALL}
# The agreement's name of the band is accepted too.
ALIASES = {"poverty_level": "poverty_band"}
PUBLIC_DIMENSIONS = ("province", "division", "district", "poverty_band", "gender", "age_bracket")
PUBLIC_TOO_FINE = ("tehsil", "union_council", "village")


def split_values(values: Sequence[str]) -> list[str]:
    """Repeated and comma-separated values as one list, stripped, blanks dropped."""
    return [part for value in values for part in sharing.split_list(value)]


def parse_group_by(values: Sequence[str], *, granted: frozenset[str] | None) -> list[str]:
    """The dimensions of a table, checked. ``granted`` is the agreement's dimensions, or
    None for the public: then only PUBLIC_DIMENSIONS, nothing finer than district.

    Unknown, repeated, too many, or two geography levels: 422. A locked dimension the
    agreement does not grant: 403.
    """
    names = split_values(values)
    if not names:
        raise ValidationFailed("group_by: name at least one dimension")
    out: list[str] = []
    for raw in names:
        name = ALIASES.get(raw, raw)
        if granted is None:
            if name in PUBLIC_TOO_FINE:
                raise ValidationFailed(
                    f"group_by: {raw!r} is finer than district; the public summaries go down "
                    "to districts (partners with category i may group by tehsil and union "
                    "council)"
                )
            if name not in PUBLIC_DIMENSIONS:
                raise ValidationFailed(
                    f"group_by: unknown dimension {raw!r} (one of {', '.join(PUBLIC_DIMENSIONS)})"
                )
        elif name in ("village", "area_location"):
            raise ValidationFailed(
                f"group_by: {raw!r} is finer than union council; group by a geography level "
                f"({', '.join(GEO_LEVELS)})"
            )
        elif name not in DIMENSIONS:
            raise ValidationFailed(f"group_by: unknown dimension {raw!r}")
        if name in out:
            raise ValidationFailed(f"group_by: {raw!r} is named twice")
        out.append(name)
    if len(out) > MAX_DIMS:
        raise ValidationFailed(f"group_by: at most {MAX_DIMS} dimensions in one table")
    geographic = [n for n in out if DIMENSIONS[n].geographic]
    if len(geographic) > 1:
        raise ValidationFailed(
            f"group_by: one geography level per table (the levels nest): {', '.join(geographic)}"
        )
    if granted is not None:
        wanted = [s for s in (DIMENSIONS[n].sharing for n in out) if s is not None]
        denied = sharing.denied_dimensions(wanted, granted)
        if denied:
            raise Forbidden(f"dimension not granted by the agreement: {', '.join(denied)}")
    return out


# -- counting ------------------------------------------------------------------------------


def interior_sql(
    q: Query, dims: Sequence[str], f: Filters, scope: tuple[str, ...], cut_off: float | None
) -> str:
    """The GROUP BY of the interior cells (see the module docstring)."""
    cut = q.param(cut_off)
    where = household_where(q, f, scope, None)
    spec = [DIMENSIONS[d] for d in dims]
    keys = ", ".join(f"d{i}" for i in range(len(spec)))
    score = (
        "CASE WHEN count(score) = count(*) THEN sum(score)::float8 END AS score_sum, "
        f"CASE WHEN {cut}::numeric IS NOT NULL AND count(score) = count(*) "
        f"THEN count(*) FILTER (WHERE score < {cut}::numeric) END AS below"
    )
    living = "FROM members m WHERE m.household_id = h.id AND m.deceased_on IS NULL"
    # The living members of each household, counted once (``LIVING``).
    counted = f"CROSS JOIN LATERAL (SELECT count(*) AS n {living}) lm"
    household = [f"({d.sql})::text AS d{i}" for i, d in enumerate(spec) if not d.member]
    if not any(d.member for d in spec):
        # One row per household: its dimensions, its score and its living members.
        rows = f"""SELECT h.pmt_score AS score, lm.n, {", ".join(household)}
                     FROM households h {counted}
                    WHERE {where}"""
    else:
        # One row per household and member group (its living members in the group
        # counted), so that each household counts once in each of its groups.
        inner = [f"({d.sql})::text AS d{i}" for i, d in enumerate(spec) if d.member]
        positions = ", ".join(str(n + 1) for n in range(len(inner)))
        outer = [*household, *(f"g.d{i}" for i, d in enumerate(spec) if d.member)]
        composition = counted if any(LIVING in d.sql for d in spec) else ""
        rows = f"""SELECT h.pmt_score AS score, g.n, {", ".join(outer)}
                     FROM households h {composition}
                     CROSS JOIN LATERAL (SELECT {", ".join(inner)}, count(*) AS n {living}
                                          GROUP BY {positions}) g
                    WHERE {where}"""
    return f"""
        SELECT {keys}, count(*)::bigint AS households, sum(n)::bigint AS members, {score}
          FROM ({rows}) x
         GROUP BY {keys}
         ORDER BY {keys}"""


async def interior_cells(
    conn: asyncpg.Connection | asyncpg.Pool,
    dims: Sequence[str],
    f: Filters,
    scope: tuple[str, ...] = (),
    cut_off: float | None = None,
) -> list[Cell]:
    """The table's interior cells (groups without a household are absent)."""
    q = Query()
    sql = interior_sql(q, dims, f, scope, cut_off)
    rows = await conn.fetch(sql, *q.params)
    return [
        Cell(
            {d: row[f"d{i}"] for i, d in enumerate(dims)},
            row["households"],
            row["members"],
            row["score_sum"],
            row["below"],
        )
        for row in rows
    ]


def levels(dims: Sequence[str], interior: Sequence[Cell]) -> dict[str, list[str]]:
    """Each dimension's values in table order: its usual values (present or not, so the
    shape of a table never says which are empty), then any other value seen, sorted."""
    out: dict[str, list[str]] = {}
    for d in dims:
        usual = list(DIMENSIONS[d].levels)
        seen = {v for c in interior if (v := c.key[d]) is not None and v not in usual}
        out[d] = usual + sorted(seen)
    return out


def present(dims: Sequence[str], cells: Sequence[Cell]) -> dict[str, list[str]]:
    """The values a table lists only because a household of the selection has them: every
    value beyond its dimension's usual ones (every geography unit). The disclosure audit
    counts each as holding at least one household, as a reader of the table can."""
    out: dict[str, list[str]] = {}
    for d in dims:
        usual = set(DIMENSIONS[d].levels)
        out[d] = sorted({v for c in cells if (v := c.key[d]) is not None and v not in usual})
    return out


def full_table(dims: Sequence[str], interior: Sequence[Cell]) -> list[Cell]:
    """Every cell of the table, margins included; refused (422) above MAX_CELLS."""
    lv = levels(dims, interior)
    size = 1
    for d in dims:
        size *= len(lv[d]) + 1
    if size > MAX_CELLS:
        raise ValidationFailed(
            f"the table would have {size} cells with its margins (at most {MAX_CELLS}): "
            "group by fewer or coarser dimensions, or filter"
        )
    return with_margins(dims, interior, lv)


@dataclass
class Table:
    """A protected table ready to publish."""

    rows: list[dict[str, Any]]
    margins: list[dict[str, Any]]
    disclosure: Disclosure


def _as_json(p: Published, measures: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(p.key)
    for m in dict.fromkeys(measures):
        out[m] = getattr(p, m)
    return out


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _gate() -> asyncio.Semaphore:
    """The event loop's bound on tables protected at once (CPU: linear programs)."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(PROTECTING_AT_ONCE)
    return gate


async def protect_table(
    dims: Sequence[str], cells: Sequence[Cell], policy: Policy, measures: Sequence[str]
) -> Table:
    """protect() over a full table (``full_table``), in a worker thread so the event loop
    keeps serving; at most PROTECTING_AT_ONCE at a time. Interior cells become ``rows``,
    the others ``margins`` (grand total last), each with the measures asked for."""
    async with _gate():
        published, disclosure = await asyncio.to_thread(
            protect, dims, cells, policy, present(dims, cells)
        )
    rows: list[dict[str, Any]] = []
    margins: list[dict[str, Any]] = []
    for p in published:
        is_margin = any(v is None for v in p.key.values())
        (margins if is_margin else rows).append(_as_json(p, measures))
    return Table(rows, margins, disclosure)
