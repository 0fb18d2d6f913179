"""Geography units by level, under a parent and by name: the codes every other endpoint takes.

Provinces, divisions, districts and tehsils come from the migration (app/data/geography.csv);
union councils are registry-assigned and exist once the registry is seeded. The answer is
serialized straight from the rows (like the public look-up): the row types are the table's.

Rules (the router documents them to callers):

* ``parent`` may be any coarser unit: the answer is every unit of ``level`` below it, at any
  depth (the districts of a province, the tehsils of a division).
* A parent that is unknown is 404; one that exists but is not coarser than ``level`` is 422.
* Union councils and villages are listed only under a parent (the whole country's would
  be thousands).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from app.errors import NotFound, ValidationFailed
from app.models.geography import LEVELS
from app.replicas import Reads

_COLUMNS = "code, name_en, name_ur, level, parent_code, lat, lon"
# Case-insensitive substring on the English name, or on the Urdu name. strpos, not LIKE:
# a '%' or '_' typed by the caller is a character, not a wildcard.
_NAME_MATCH = """($2::text IS NULL
        OR strpos(lower(name_en), lower($2)) > 0
        OR strpos(lower(coalesce(name_ur, '')), lower($2)) > 0)"""

UNITS_SQL = f"""
SELECT {_COLUMNS} FROM geo_units
 WHERE level = $1 AND {_NAME_MATCH}
 ORDER BY code COLLATE "C"
"""

# Walks down from the parent through the levels in $4 only (those between the parent's and
# the one asked, inclusive), so each step is an index read on (level, parent_code) and the
# walk never goes below the level asked.
UNITS_BELOW_SQL = f"""
WITH RECURSIVE below AS (
    SELECT {_COLUMNS} FROM geo_units
     WHERE parent_code = $3 AND level = ANY($4::text[])
    UNION ALL
    SELECT g.code, g.name_en, g.name_ur, g.level, g.parent_code, g.lat, g.lon
      FROM geo_units g JOIN below b ON g.parent_code = b.code
     WHERE g.level = ANY($4::text[])
)
SELECT {_COLUMNS} FROM below
 WHERE level = $1 AND {_NAME_MATCH}
 ORDER BY code COLLATE "C"
"""


def _invalid(field: str, message: str, type_: str = "value_error") -> ValidationFailed:
    return ValidationFailed(
        f"{field}: {message}",
        errors=[{"loc": ["query", field], "field": field, "message": message, "type": type_}],
    )


async def _levels_below(conn: asyncpg.Connection, parent: str, level: str) -> list[str]:
    """The levels from just under ``parent`` down to ``level``; 404/422 if it cannot be one."""
    parent_level: str | None = await conn.fetchval(
        "SELECT level FROM geo_units WHERE code = $1", parent
    )
    if parent_level is None:
        raise NotFound(f"no geography unit has the code {parent}")
    top, bottom = LEVELS.index(parent_level), LEVELS.index(level)
    if top >= bottom:
        coarser = ", ".join(LEVELS[:bottom])
        raise _invalid(
            "parent", f"{parent} is a {parent_level}; a {level}'s parent must be a {coarser}"
        )
    return list(LEVELS[top + 1 : bottom + 1])


def _item(row: asyncpg.Record) -> dict[str, Any]:
    lat, lon = row["lat"], row["lon"]
    return {
        "code": row["code"],
        "name": row["name_en"],
        "name_ur": row["name_ur"],
        "level": row["level"],
        "parent": row["parent_code"],
        "centroid": None if lat is None or lon is None else {"lat": lat, "lon": lon},
    }


PARENT_HINT = {"union_council": "tehsil", "village": "union council"}


async def units(
    reads: Reads | asyncpg.Pool, level: str, parent: str | None, q: str | None
) -> bytes:
    """The JSON answer ``{"items": [...]}`` (``GeoUnits``), sorted by code.

    ``parent`` and ``q`` must already be checked for shape (the router's query rules).
    """
    if level in ("union_council", "village") and parent is None:
        raise _invalid(
            "parent",
            f"required for level {level} (a {PARENT_HINT[level]} or coarser code)",
            "missing",
        )

    async def read(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        if parent is None:
            rows: list[asyncpg.Record] = await conn.fetch(UNITS_SQL, level, q)
            return rows
        levels = await _levels_below(conn, parent, level)
        rows = await conn.fetch(UNITS_BELOW_SQL, level, q, parent, levels)
        return rows

    # Reference data: on a read replica when the service has one.
    rows = await Reads.of(reads).run(read)
    return orjson.dumps({"items": [_item(r) for r in rows]})
