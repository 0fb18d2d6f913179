r"""The public cube: what the public summaries and maps are built from, refreshed by the worker.

No visitor's request counts the registry. The worker (``nser worker``, or the service's
in-process workers) keeps a small cube in PostgreSQL and refreshes it at most every
``NSER_PUBLIC_REFRESH_SECONDS`` after a change; every public answer is a sum over its rows
(app.services.products.public). Its size follows the geography, not the registry:

- ``public_cube`` (summaries): per district (with the division and province the households
  carry) x poverty band x member group, for the four member subsets ``{}``, ``{gender}``,
  ``{age_bracket}``, ``{gender, age_bracket}`` (``''`` where a row does not split), the
  households and the living members. A household lies in exactly one district and one band,
  so households add up across them, and every public table (its geography level,
  ``poverty_band`` and member dimensions, filtered by province/division/district codes) is
  a sum of rows of one subset: the counts today's GROUP BY gives, cell for cell.
- ``public_map_cube`` (maps): per district and H3 cell at each public resolution 0-5 (each
  household's own cell at that resolution: H3 cells do not nest exactly, so a coarse map
  is not the parents of the fine one), the located households, those without a score, the
  sum of the scores in hundredths (exact) and a histogram of whole-number scores (101
  bins, ``floor(score)``): the households below a whole-number cut-off ``c`` are the bins
  under ``c``.
- ``public_districts``: per district, its households and those without a location.

**A refresh** runs in one ``REPEATABLE READ`` transaction, so it counts one snapshot of
the registry: it first deletes the ``public_products_dirty`` rows that snapshot sees (the
triggers of migration 0016 append one per statement that changed what the cube counts,
naming its districts; rows committed later stay for the next refresh), then recounts only
those districts (``full``: all of them, also after a ``{*}`` row, on a new day since age
brackets move with the date, when no refresh exists, and from an eighth of the districts
on: then one pass over the registry, :data:`_PACKED`, costs less), records the refresh (its id, the
registry data version and the instant of the snapshot), pre-renders the answers the
website and most visitors ask for (:func:`app.services.products.public.prerender`), drops
the previous refreshes' answers and commits: visitors see the new cube and its answers at
the same instant. One refresh runs at a time across every process (an advisory lock).

**The refresher** (:func:`run_refresher`) polls cheaply (is a dirty row there, is the
date new) and refreshes at most every ``interval`` seconds, and never sooner after the
last refresh than that refresh took, so the worker spends at most about half its time on
it however large the registry.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from app.db import server_settings
from app.services.disclosure.policy import Policy
from app.services.products import aggregate, copystream
from app.services.products.maps import PUBLIC_MAX_RESOLUTION, cells_of
from app.services.registry import version as registry_version
from app.services.sharing.beneficiaries_sql import AGE_BRACKETS

log = logging.getLogger("nser.products")

RESOLUTIONS = tuple(range(PUBLIC_MAX_RESOLUTION + 1))
BINS = 101  # floor(score) = 0 ... 100
REFRESH_LOCK = (0x6E737071, 0x63756265)  # ("nspq", "cube"): one refresh at a time
DEFAULT_INTERVAL = 60.0
WORK_MEM = "256MB"
# Touched districts from this share of those counted on: the refresh counts everything.
FULL_SHARE = 0.125

# (stage, done, total): "districts" (summaries counted), "households" (maps), "answers".
Progress = Callable[[str, int, int], None]


def _quiet(_stage: str, _done: int, _total: int) -> None:
    return None


# -- the summaries' cube ----------------------------------------------------------------------

# A living member's group: gender (female 0-9, male 10-19) and age bracket (the position
# of AGE_BRACKET's bracket). Age k or more is a birth on or before today less k years (the
# same as ``age()``, Feb 29 included), so the bracket is how many of the brackets' lower
# bounds the birth date is on or before: $1 holds those dates, oldest first (``_BOUNDS``).
_GROUP = (
    "(CASE m.gender WHEN 'female' THEN 0 ELSE 10 END + 9 "
    "- width_bucket(m.date_of_birth - 1, $1::date[]))"
)
_BOUNDS = (
    "SELECT array_agg((current_date - make_interval(years => k))::date ORDER BY k DESC) "
    "FROM unnest(ARRAY[5, 10, 15, 18, 25, 35, 45, 55, 65]) k"
)
GENDERS = ("female", "male")  # the members' check constraint allows these two
BRACKETS = AGE_BRACKETS
# Living members per unit, band and group: one pass over the join, a few thousand groups.
_MEMBERS = f"""
SELECT h.province_code AS p, h.division_code AS dv, h.district_code AS d,
       coalesce(h.poverty_band, 'unscored') AS b, {_GROUP} AS grp, count(*) AS n
  FROM households h JOIN members m ON m.household_id = h.id AND m.deceased_on IS NULL
 WHERE {{scope}}
 GROUP BY 1, 2, 3, 4, 5
"""
# Households per unit, band and the set of groups their living members are in (a 20-bit
# mask; 0: none living), each household once: for the whole registry from one aggregate of
# the members by household; for a few districts through the members' household index.
_HOUSEHOLDS_ALL = f"""
SELECT h.province_code AS p, h.division_code AS dv, h.district_code AS d,
       coalesce(h.poverty_band, 'unscored') AS b, coalesce(x.mask, 0) AS mask, count(*) AS n
  FROM households h
  LEFT JOIN (SELECT m.household_id, bit_or(1 << {_GROUP}) AS mask
               FROM members m WHERE m.deceased_on IS NULL GROUP BY 1) x
         ON x.household_id = h.id
 GROUP BY 1, 2, 3, 4, 5
"""
_HOUSEHOLDS_SOME = f"""
SELECT p, dv, d, b, mask, count(*) AS n
  FROM (SELECT h.province_code AS p, h.division_code AS dv, h.district_code AS d,
               coalesce(h.poverty_band, 'unscored') AS b,
               coalesce((SELECT bit_or(1 << {_GROUP}) FROM members m
                          WHERE m.household_id = h.id AND m.deceased_on IS NULL), 0) AS mask
          FROM households h WHERE h.district_code = ANY($2::text[])) x
 GROUP BY 1, 2, 3, 4, 5
"""

# Every household once, with its living members' groups folded in: one pass over the
# members (aggregated by household, in parallel) joined to the households, streamed as
# binary COPY and rolled up per (district, band) in numpy. $1 the bracket bounds, then the
# units (index, province, division, district) and the bands ('unscored' first); a
# household whose unit or band is not among them gets -1. Per household: the 20-bit group
# mask, its living members, and their count per group packed 12 bits a group, five groups
# a word (exact below 4,096 living members of one group in one household; checked).
_PACKED = f"""
SELECT coalesce(u.i, -1)::int4,
       coalesce(array_position($6::text[], coalesce(h.poverty_band, 'unscored')::text), 0)::int4
           - 1,
       coalesce(x.mask, 0)::int4, coalesce(x.n, 0)::int4,
       coalesce(x.w0, 0)::int8, coalesce(x.w1, 0)::int8, coalesce(x.w2, 0)::int8,
       coalesce(x.w3, 0)::int8
  FROM households h
  LEFT JOIN (SELECT household_id, bit_or(1 << grp) AS mask, count(*)::int4 AS n,
                    sum(1 << (6 * (grp % 5))) FILTER (WHERE grp < 5) AS w0,
                    sum(1 << (6 * (grp % 5))) FILTER (WHERE grp / 5 = 1) AS w1,
                    sum(1 << (6 * (grp % 5))) FILTER (WHERE grp / 5 = 2) AS w2,
                    sum(1 << (6 * (grp % 5))) FILTER (WHERE grp >= 15) AS w3
               FROM (SELECT m.household_id, {_GROUP} AS grp FROM members m
                      WHERE m.deceased_on IS NULL) m
              GROUP BY 1) x ON x.household_id = h.id
  LEFT JOIN unnest($2::int4[], $3::text[], $4::text[], $5::text[]) u(i, p, dv, d)
         ON u.p = h.province_code AND u.dv = h.division_code AND u.d = h.district_code
"""


def _scope(districts: Sequence[str] | None) -> str:
    return "true" if districts is None else "h.district_code = ANY($1::text[])"


def _args(districts: Sequence[str] | None) -> list[Any]:
    return [] if districts is None else [list(districts)]


CubeKey = tuple[str, str, str, str, str, str]  # province, division, district, band, g, a


def summary_rows(
    members: Sequence[asyncpg.Record], households: Sequence[asyncpg.Record]
) -> dict[CubeKey, tuple[int, int]]:
    """The cube's rows (households, members) for the four member subsets, from the
    members per group and the households per set of groups. Households count once in
    each group one of their living members is in; members add up."""
    counted: dict[CubeKey, list[int]] = {}

    def add(key: CubeKey, hh: int, mm: int) -> None:
        cell = counted.setdefault(key, [0, 0])
        cell[0] += hh
        cell[1] += mm

    for r in members:
        g, a = GENDERS[r["grp"] // 10], BRACKETS[r["grp"] % 10]
        for gg, aa in ((g, a), (g, ""), ("", a), ("", "")):
            add((r["p"], r["dv"], r["d"], r["b"], gg, aa), 0, r["n"])
    if households:
        units = {(r["p"], r["dv"], r["d"], r["b"]) for r in households}
        index = {u: i for i, u in enumerate(sorted(units))}
        order = list(index)
        where = np.array([index[(r["p"], r["dv"], r["d"], r["b"])] for r in households])
        mask = np.array([r["mask"] for r in households], dtype=np.int64)
        n = np.array([r["n"] for r in households], dtype=np.int64)
        size = len(order)

        def count(selected: npt.NDArray[np.bool_]) -> list[int]:
            counts: list[int] = (
                np.bincount(where, weights=n * selected, minlength=size).astype(int).tolist()
            )
            return counts

        subsets: list[tuple[str, str, npt.NDArray[np.bool_]]] = [("", "", np.ones(len(mask), bool))]
        for gi, g in enumerate(GENDERS):
            subsets.append((g, "", (mask >> (10 * gi)) & 0x3FF != 0))
            for ai, a in enumerate(BRACKETS):
                subsets.append((g, a, (mask >> (10 * gi + ai)) & 1 == 1))
        for ai, a in enumerate(BRACKETS):
            subsets.append(("", a, ((mask >> ai) | (mask >> (10 + ai))) & 1 == 1))
        for g, a, selected in subsets:
            for u, hh in zip(order, count(selected), strict=True):
                if hh:
                    add((*u, g, a), hh, 0)
    return {k: (v[0], v[1]) for k, v in counted.items() if v[0]}


_PACKED_ROW = copystream.row_dtype(
    [
        ("unit", ">i4"),
        ("band", ">i4"),
        ("mask", ">i4"),
        ("n", ">i4"),
        ("w0", ">i8"),
        ("w1", ">i8"),
        ("w2", ">i8"),
        ("w3", ">i8"),
    ]
)
# The field count, then each field's length.
_PACKED_LAYOUT = {
    "fields": 8,
    **{f"{name}_len": 4 for name in ("unit", "band", "mask", "n")},
    **{f"w{k}_len": 8 for k in range(4)},
}
_UNSCORED_FIRST = ("unscored", *aggregate.BANDS)
_Unit = tuple[str, str, str]
# The cube's four member subsets, spelled out: every (gender, age bracket) a row may carry.
_SUBSETS: tuple[tuple[str, str], ...] = (
    ("", ""),
    *((g, "") for g in GENDERS),
    *((g, a) for g in GENDERS for a in BRACKETS),
    *(("", a) for a in BRACKETS),
)
_BATCH_ROWS = 200_000  # about 16 MB of COPY rows: memory follows the batch, not the registry


def packed_counts(rows: npt.NDArray[Any], units: int) -> npt.NDArray[np.int64] | None:
    """Households and living members per (subset of :data:`_SUBSETS`, unit x band) of a
    batch of :data:`_PACKED` rows, shape (subsets, units x bands, 2): batches add up. None
    when a household's unit or band is not among those given, or a group's packed count
    overflowed (then the exact SQL path counts)."""
    if not copystream.layout_ok(rows):
        raise ValueError("unexpected COPY row layout")
    unit = rows["unit"].astype(np.int64)
    band = rows["band"].astype(np.int64)
    if len(rows) and (unit.min() < 0 or band.min() < 0):
        return None
    nb = len(_UNSCORED_FIRST)
    where = unit * nb + band
    size = units * nb
    mask = rows["mask"].astype(np.int64)
    words = [rows[f"w{k}"].astype(np.int64) for k in range(4)]
    per_group = [(words[g // 5] >> (6 * (g % 5))) & (0x3F if g % 5 < 4 else -1) for g in range(20)]
    if len(rows) and not (np.sum(per_group, axis=0) == rows["n"]).all():
        return None
    out = np.zeros((len(_SUBSETS), size, 2), np.int64)
    for i, (g, a) in enumerate(_SUBSETS):
        gi = GENDERS.index(g) if g else -1
        ai = BRACKETS.index(a) if a else -1
        if gi < 0 and ai < 0:
            selected, members = np.ones(len(rows), bool), rows["n"].astype(np.int64)
        elif ai < 0:
            selected = (mask >> (10 * gi)) & 0x3FF != 0
            members = np.sum(per_group[10 * gi : 10 * gi + 10], axis=0)
        elif gi < 0:
            selected = ((mask >> ai) | (mask >> (10 + ai))) & 1 == 1
            members = per_group[ai] + per_group[10 + ai]
        else:
            selected = (mask >> (10 * gi + ai)) & 1 == 1
            members = per_group[10 * gi + ai]
        out[i, :, 0] = np.bincount(where[selected], minlength=size)
        out[i, :, 1] = np.bincount(where, weights=members, minlength=size).astype(np.int64)
    return out


def cube_rows(
    counts: npt.NDArray[np.int64], units: Sequence[_Unit]
) -> dict[CubeKey, tuple[int, int]]:
    """The cube's rows (households, members) from :func:`packed_counts`' sums."""
    nb = len(_UNSCORED_FIRST)
    counted: dict[CubeKey, tuple[int, int]] = {}
    for i, (g, a) in enumerate(_SUBSETS):
        for j in np.flatnonzero(counts[i, :, 0]).tolist():
            u = units[j // nb]
            key = (u[0], u[1], u[2], _UNSCORED_FIRST[j % nb], g, a)
            counted[key] = (int(counts[i, j, 0]), int(counts[i, j, 1]))
    return counted


def packed_rows(
    rows: npt.NDArray[Any], units: Sequence[_Unit]
) -> dict[CubeKey, tuple[int, int]] | None:
    """The cube's rows from :data:`_PACKED` rows (every household once), or None (see
    :func:`packed_counts`)."""
    counts = packed_counts(rows, len(units))
    return None if counts is None else cube_rows(counts, units)


async def _count_all(
    conn: asyncpg.Connection, bounds: Any
) -> dict[CubeKey, tuple[int, int]] | None:
    """The whole registry's cube rows in one pass (:data:`_PACKED`), summed batch by batch
    as the rows stream in, or None (see :func:`packed_counts`)."""
    known = await conn.fetch(
        """SELECT p.code AS p, dv.code AS dv, d.code AS d
             FROM geo_units d JOIN geo_units dv ON dv.code = d.parent_code
             JOIN geo_units p ON p.code = d.province_code
            WHERE d.level = 'district' ORDER BY 1, 2, 3"""
    )
    units: list[_Unit] = [(r["p"], r["dv"], r["d"]) for r in known]
    total = np.zeros((len(_SUBSETS), len(units) * len(_UNSCORED_FIRST), 2), np.int64)
    exact = True

    async def add(rows: npt.NDArray[Any]) -> None:
        nonlocal exact
        if exact:
            counts = await asyncio.to_thread(packed_counts, rows, len(units))
            if counts is None:
                exact = False  # read the rest of the stream, count nothing more
            else:
                np.add(total, counts, out=total)

    reader = copystream.BinaryRows(_PACKED_ROW, add, _BATCH_ROWS)
    # Members in household order through their index, grouped as they come: no hash of
    # every household in memory, nothing spilled, however large the registry.
    await conn.execute("SET LOCAL enable_hashagg = off")
    t0 = time.monotonic()
    await conn.copy_from_query(
        _PACKED,
        bounds,
        list(range(len(units))),
        [u[0] for u in units],
        [u[1] for u in units],
        [u[2] for u in units],
        list(_UNSCORED_FIRST),
        output=reader,
        format="binary",
    )
    await reader.finish()
    await conn.execute("SET LOCAL enable_hashagg = on")
    log.debug("summaries counted", extra={"seconds": time.monotonic() - t0})
    return cube_rows(total, units) if exact else None


async def count_summaries(conn: asyncpg.Connection, districts: Sequence[str] | None) -> None:
    """Replace the summaries' cube rows of ``districts`` (None: every district)."""
    if districts is None:
        await conn.execute("DELETE FROM public_cube")
    else:
        await conn.execute(
            "DELETE FROM public_cube WHERE district_code = ANY($1::text[])", list(districts)
        )
    bounds = await conn.fetchval(_BOUNDS)
    args = [bounds, *_args(districts)]
    scope = _scope(districts).replace("$1", "$2")
    rows = await _count_all(conn, bounds) if districts is None else None
    if rows is None:
        members = await conn.fetch(_MEMBERS.format(scope=scope), *args)
        households = await conn.fetch(
            _HOUSEHOLDS_ALL if districts is None else _HOUSEHOLDS_SOME, *args
        )
        rows = await asyncio.to_thread(summary_rows, members, households)
    await conn.copy_records_to_table(
        "public_cube",
        columns=[
            "province_code",
            "division_code",
            "district_code",
            "poverty_band",
            "gender",
            "age_bracket",
            "households",
            "members",
        ],
        records=[(*key, hh, mm) for key, (hh, mm) in rows.items()],
    )


# -- the maps' cube ---------------------------------------------------------------------------

_ROW = copystream.row_dtype([("unit", ">i4"), ("lat", ">f8"), ("lon", ">f8"), ("score", ">f8")])
# A cell of resolution 5 or coarser has its ten finest digits unused (all ones): the
# unit's index rides in those 30 bits, so (resolution, unit, cell) is one uint64 key.
_LOW = np.uint64((1 << 30) - 1)


def pack(cells: npt.NDArray[np.uint64], unit: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
    return (cells & ~_LOW) | unit.astype(np.uint64)


def unpack(keys: npt.NDArray[np.uint64]) -> tuple[list[int], list[int], list[int]]:
    """(resolution, unit, cell) of each key."""
    cells = keys | _LOW
    return (
        ((cells >> np.uint64(52)) & np.uint64(0xF)).astype(np.int64).tolist(),
        (keys & _LOW).astype(np.int64).tolist(),
        cells.tolist(),
    )


@dataclass
class Sums:
    """Per (resolution, unit, cell): households, without a score, score hundredths, bins."""

    keys: npt.NDArray[Any]
    households: npt.NDArray[np.int64]
    unscored: npt.NDArray[np.int64]
    cents: npt.NDArray[np.int64]
    bins: npt.NDArray[np.int64]  # (len(keys), BINS)

    @classmethod
    def empty(cls) -> Sums:
        z = np.zeros(0, np.int64)
        return cls(np.zeros(0, np.uint64), z, z, z, np.zeros((0, BINS), np.int64))


def _group(
    keys: npt.NDArray[Any],
    households: npt.NDArray[Any],
    unscored: npt.NDArray[Any],
    cents: npt.NDArray[Any],
    bins: npt.NDArray[Any],
) -> Sums:
    """Rows with the same key added up (integers throughout: exact)."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    n = len(uniq)
    return Sums(
        uniq,
        np.bincount(inverse, weights=households, minlength=n).astype(np.int64),
        np.bincount(inverse, weights=unscored, minlength=n).astype(np.int64),
        np.bincount(inverse, weights=cents, minlength=n).astype(np.int64),
        np.add.reduceat(bins[order], starts, axis=0) if n else np.zeros((0, BINS), np.int64),
    )


def locate_batch(rows: npt.NDArray[Any]) -> tuple[Sums, npt.NDArray[np.int32], npt.NDArray[Any]]:
    """One batch of COPY rows: their sums per (resolution, unit, cell), and the unit of
    every household and of every located one (for the per-district counts)."""
    if not copystream.layout_ok(rows):
        raise ValueError("unexpected COPY row layout")
    unit = rows["unit"].astype(np.int32)
    lat = rows["lat"].astype(np.float64)
    lon = rows["lon"].astype(np.float64)
    located = ~(np.isnan(lat) | np.isnan(lon))
    unit_l, lat_l, lon_l = unit[located], lat[located], lon[located]
    score = rows["score"].astype(np.float64)[located]
    scored = ~np.isnan(score)
    known = np.where(scored, score, 0.0)
    cents = np.where(scored, np.rint(known * 100), 0).astype(np.int64)
    which = np.clip(np.floor(known), 0, BINS - 1).astype(np.int64)
    k = len(RESOLUTIONS)
    keys = np.concatenate(
        [pack(cells_of(lat_l, lon_l, res), unit_l) for res in RESOLUTIONS]
        or [np.zeros(0, np.uint64)]
    )
    uniq, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = len(uniq)
    bins = np.bincount(
        inverse * BINS + np.tile(which, k), weights=np.tile(scored, k), minlength=n * BINS
    )
    sums = Sums(
        uniq,
        np.bincount(inverse, minlength=n).astype(np.int64),
        np.bincount(inverse, weights=np.tile(~scored, k), minlength=n).astype(np.int64),
        np.bincount(inverse, weights=np.tile(cents, k), minlength=n).astype(np.int64),
        bins.astype(np.int64).reshape(n, BINS),
    )
    return sums, unit, unit_l


def merge(parts: Sequence[Sums]) -> Sums:
    if len(parts) == 1:
        return parts[0]
    return _group(
        np.concatenate([p.keys for p in parts]),
        np.concatenate([p.households for p in parts]),
        np.concatenate([p.unscored for p in parts]),
        np.concatenate([p.cents for p in parts]),
        np.concatenate([p.bins for p in parts]),
    )


class _MapReader:
    """Sums ``COPY ... (FORMAT binary)`` rows of (unit int4, lat, lon, score float8) as
    they arrive: each batch in a worker thread, folded into the running sums."""

    def __init__(self, units: int, progress: Progress, total: int) -> None:
        self.rows = copystream.BinaryRows(_ROW, self._batch)
        self.parts: list[Sums] = [Sums.empty()]
        self.households = np.zeros(units, np.int64)
        self.located = np.zeros(units, np.int64)
        self.progress = progress
        self.total = total

    async def _batch(self, rows: npt.NDArray[Any]) -> None:
        self.parts.append(await asyncio.to_thread(self._fold, rows))
        if len(self.parts) >= 8:  # keep the running sums small: fold them together
            self.parts = [await asyncio.to_thread(merge, self.parts)]
        self.progress("households", self.rows.rows, self.total)

    def _fold(self, rows: npt.NDArray[Any]) -> Sums:
        sums, unit, unit_l = locate_batch(rows)
        # array_position is 1-based
        self.households += np.bincount(unit - 1, minlength=len(self.households))
        self.located += np.bincount(unit_l - 1, minlength=len(self.located))
        return sums

    async def finish(self) -> Sums:
        await self.rows.finish()
        return await asyncio.to_thread(merge, self.parts)


async def count_maps(
    conn: asyncpg.Connection, districts: Sequence[str] | None, progress: Progress = _quiet
) -> None:
    """Replace the maps' cube rows and the per-district counts of ``districts`` (None:
    every district). The units (province, division, district as the households carry
    them) come from the summaries' cube just counted in the same snapshot."""
    where = "" if districts is None else "WHERE district_code = ANY($1::text[])"
    args = _args(districts)
    for table in ("public_map_cube", "public_districts"):
        await conn.execute(f"DELETE FROM {table} {where}", *args)
    units = await conn.fetch(
        f"""SELECT province_code, division_code, district_code, sum(households)::bigint AS n
              FROM public_cube {where} {"AND" if where else "WHERE"} gender = ''
               AND age_bracket = ''
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        *args,
    )
    if not units:
        return
    # The unit's position (1-based) through a hash join on the few units: a search of
    # their list for every household cost more than the rest of the scan.
    sql = (
        "SELECT u.i::int4, coalesce(h.lat, 'NaN'::float8), "
        "coalesce(h.lon, 'NaN'::float8), coalesce(h.pmt_score::float8, 'NaN'::float8) "
        "FROM households h LEFT JOIN unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY "
        "u(p, dv, d, i) ON u.p = h.province_code AND u.dv = h.division_code "
        f"AND u.d = h.district_code WHERE {_scope(districts).replace('$1', '$4')}"
    )
    reader = _MapReader(len(units), progress, sum(int(u["n"]) for u in units))
    await conn.copy_from_query(
        sql,
        [u["province_code"] for u in units],
        [u["division_code"] for u in units],
        [u["district_code"] for u in units],
        *args,
        output=reader.rows,
        format="binary",
    )
    sums = await reader.finish()
    await conn.copy_records_to_table(
        "public_map_cube",
        columns=[
            "province_code",
            "division_code",
            "district_code",
            "resolution",
            "h3",
            "households",
            "unscored",
            "score_cents",
            "bins",
        ],
        records=[
            (
                units[u - 1]["province_code"],
                units[u - 1]["division_code"],
                units[u - 1]["district_code"],
                int(res),
                int(cell),  # an H3 index fits in 63 bits
                int(hh),
                int(un),
                int(ce),
                bins.astype("<i4").tobytes(),
            )
            for res, u, cell, hh, un, ce, bins in zip(
                *unpack(sums.keys),
                sums.households.tolist(),
                sums.unscored.tolist(),
                sums.cents.tolist(),
                sums.bins,
                strict=True,
            )
        ],
    )
    await conn.copy_records_to_table(
        "public_districts",
        columns=["province_code", "division_code", "district_code", "households", "unlocated"],
        records=[
            (
                u["province_code"],
                u["division_code"],
                u["district_code"],
                int(reader.households[i]),
                int(reader.households[i] - reader.located[i]),
            )
            for i, u in enumerate(units)
        ],
    )


# -- a refresh --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refreshed:
    id: int
    registry_version: int
    full: bool
    districts: int
    answers: int
    seconds: float


async def refresh(
    conn: asyncpg.Connection,
    policy: Policy,
    *,
    full: bool = False,
    progress: Progress = _quiet,
) -> Refreshed | None:
    """One refresh if anything changed (or ``full``): None when there was nothing to do.
    The caller holds the refresh lock (:func:`locked`)."""
    from app.services.products import public

    started = time.monotonic()
    async with conn.transaction(isolation="repeatable_read"):
        # The first statement takes the snapshot (as_of is its instant); every dirty row
        # the snapshot sees is deleted and counted below, later ones stay for the next.
        snapshot = await conn.fetchrow(
            """SELECT statement_timestamp() AS as_of, current_date AS today,
                      (SELECT as_of_date FROM public_refreshes ORDER BY id DESC LIMIT 1)
                          AS last_date"""
        )
        assert snapshot is not None
        dirty = await conn.fetch("DELETE FROM public_products_dirty RETURNING districts")
        # Whole-registry aggregates fit in memory (and compiling them costs more than it saves).
        await conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'; SET LOCAL jit = off")
        version = await registry_version.data_version(conn)
        touched = sorted({d for row in dirty for d in row["districts"]})
        today: date = snapshot["today"]
        full = full or "*" in touched or snapshot["last_date"] != today
        if not full and not touched:
            return None
        if not full:
            # Counting a few districts looks their households up; past a share of them one
            # pass over the whole registry costs less (and is what spread updates need).
            counted = await conn.fetchval("SELECT count(*) FROM public_districts")
            full = len(touched) >= max(FULL_SHARE * counted, 1)
        scope: list[str] | None = None if full else touched
        progress("districts", 0, len(touched) if scope is not None else 1)
        await count_summaries(conn, scope)
        progress("districts", 1, 1)
        await count_maps(conn, scope, progress)
        districts = await conn.fetchval(
            "SELECT count(*) FROM public_districts"
            + ("" if scope is None else " WHERE district_code = ANY($1::text[])"),
            *_args(scope),
        )
        refresh_id = await conn.fetchval(
            """INSERT INTO public_refreshes (registry_version, as_of, as_of_date, "full",
                                             districts, answers, seconds)
               VALUES ($1, $2, $3, $4, $5, 0, 0) RETURNING id""",
            version,
            snapshot["as_of"],
            today,
            full,
            districts,
        )
        answers = await public.prerender(conn, policy, progress)
        seconds = time.monotonic() - started
        await conn.execute(
            """UPDATE public_refreshes
                  SET answers = $2, seconds = $3, finished_at = clock_timestamp()
                WHERE id = $1""",
            refresh_id,
            answers,
            seconds,
        )
        await conn.execute("DELETE FROM public_answers WHERE refresh_id < $1", refresh_id)
    done = Refreshed(refresh_id, version, full, int(districts), answers, seconds)
    log.info(
        "public products refreshed",
        extra={
            "refresh_id": done.id,
            "registry_version": version,
            "full": full,
            "districts": done.districts,
            "answers": answers,
            "seconds": round(seconds, 3),
        },
    )
    return done


async def locked(conn: asyncpg.Connection, *, wait: bool) -> bool:
    """Take the refresh lock on this session (wait for it, or only try)."""
    if wait:
        await conn.execute("SELECT pg_advisory_lock($1, $2)", *REFRESH_LOCK)
        return True
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *REFRESH_LOCK))


async def unlock(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1, $2)", *REFRESH_LOCK)


async def refresh_now(
    conn: asyncpg.Connection, policy: Policy, *, full: bool, progress: Progress = _quiet
) -> Refreshed | None:
    """``nser products refresh``: wait for any refresh running, then refresh."""
    await locked(conn, wait=True)
    try:
        return await refresh(conn, policy, full=full, progress=progress)
    finally:
        await unlock(conn)


_DUE = """
SELECT EXISTS (SELECT 1 FROM public_products_dirty) AS dirty, current_date AS today,
       clock_timestamp() AS now, r.as_of_date, r.finished_at, r.seconds
  FROM (SELECT 1) one
  LEFT JOIN LATERAL (SELECT as_of_date, finished_at, seconds FROM public_refreshes
                      ORDER BY id DESC LIMIT 1) r ON true
"""


async def due(conn: asyncpg.Connection, interval: float) -> bool:
    """Whether a refresh is wanted now: something changed (or the day did, or none
    exists), and the last one finished at least ``interval`` seconds ago and at least as
    long ago as it took."""
    row = await conn.fetchrow(_DUE)
    assert row is not None
    if row["finished_at"] is None:
        return True
    if not row["dirty"] and row["as_of_date"] == row["today"]:
        return False
    waited: float = (row["now"] - row["finished_at"]).total_seconds()
    return waited >= max(interval, float(row["seconds"]))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None
    return trim


def release_freed_memory() -> None:
    """Give the memory a refresh freed back to the system (glibc's ``malloc_trim``; nothing
    elsewhere). A refresh allocates and frees hundreds of MB (NumPy arrays, rendered
    answers) in several threads, and glibc keeps what was freed in its arenas: without
    this the worker's resident memory rose with every refresh (bench/soak.py, 100k
    households: 206 to 281 MB in eight minutes; six full refreshes in one process: 192 to
    238 MB, trimmed after each 155 to 177 MB and flat)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


async def run_refresher(
    dsn: str,
    *,
    host: str | None = None,
    policy: Policy,
    interval: float = DEFAULT_INTERVAL,
    stop: asyncio.Event | None = None,
) -> None:
    """Refresh the public products whenever :func:`due`, until ``stop``; survives the
    database going away by reconnecting. Any number of these may run (one per worker
    process): the lock lets one refresh at a time, the others skip."""
    stop = stop or asyncio.Event()
    poll = min(1.0, max(interval / 4, 0.05))
    conn: asyncpg.Connection | None = None
    while not stop.is_set():
        try:
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(
                    dsn, host=host, server_settings=server_settings("nser-products")
                )
            if await due(conn, interval) and await locked(conn, wait=False):
                try:
                    await refresh(conn, policy)
                finally:
                    await unlock(conn)
                    release_freed_memory()
        except (
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
            asyncpg.AdminShutdownError,
            OSError,
        ) as exc:
            log.warning("database unavailable; refresh retried", extra={"error": str(exc)})
            if conn is not None:
                conn.terminate()
            conn = None
            wait = poll
        except Exception:
            # Rolled back: the dirty rows are still there. Retry after an interval, not at
            # the next poll, so a refresh that keeps failing does not keep the worker busy.
            log.exception("public products refresh failed; retrying")
            if conn is not None:
                conn.terminate()
            conn = None
            wait = max(interval, poll)
        else:
            wait = poll
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except TimeoutError:
            pass
    if conn is not None:
        await conn.close()
