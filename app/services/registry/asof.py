"""The registry as it stood at an instant ``T``, rebuilt from ``household_history``.

What history records. Every change writes one ``household_history`` row per household it
touches, holding only the fields it changed: ``before`` (their values before) and ``after``.
A member's change carries ``member_id`` and the member's fields (a move writes a row under
each household, both with the member's old ``household_id`` and ``relationship``); the
household's re-score rides in the row of the change that caused it (``pmt_score``,
``poverty_band``, ``pmt_version``) or in a ``pmt_rescore`` row of its own. Creations
(``new_household``, ``member_birth``) have no ``before``. Nothing is ever deleted. Rows
loaded by ``nser seed`` have no history: they are as they were created.

The rebuild. For a household or a member, and each of its fields, the value at ``T`` is the
``before`` of the *first* change after ``T`` that touched the field; a field no change after
``T`` touched has its current value. A row created after ``T`` (``created_at``) did not
exist. In SQL, per entity: the befores of its history rows after ``T`` merged into one
object by ``jsonb_object_agg`` in descending row order (the last key written wins, so the
earliest change's value is kept), laid over the current row by ``jsonb_populate_record``
(keys that are not columns of the table, such as a member's fields on a household's row,
are ignored). Entities with no change after ``T`` are read as they are, by the same indexes
as today's lists: only what changed since ``T`` costs more, so a recent ``T`` is nearly as
fast as a plain read and a distant one is honestly slower.

- ``households_sql(t)``: households at ``T``, a derived table (unchanged ones UNION ALL the
  rebuilt ones, which come from the history rows after ``T`` by ``ix_household_history_changed``).
  ``households_sql(t, where, limit)``: a page of them, the first ``limit`` satisfying
  ``where`` in id order, each half cut on its own so a page walks ``households.id`` (and
  the changed households' history by ``ix_household_history_household``) from the cursor
  and stops, whatever the registry's size or the number of changes since ``T``.
- ``members_sql(t)``: the members of household ``h`` at ``T``, correlated to ``h.id``: the
  current members of ``h`` unchanged since ``T``, and every member with a change after
  ``T`` under ``h`` (a member of ``h`` at ``T`` has its first later change there, a move
  out included), rebuilt from all its rows (``ix_household_history_member``), kept if it
  was in ``h`` at ``T``.
- ``rewrite(sql, bind, at)``: a list query over ``households h`` and ``members m`` (every
  ``members m`` correlated by ``m.household_id = h.id``) read at ``T`` instead: the tables
  replaced by those derived tables, ``current_date`` by ``T``'s date (ages as they were).
- ``check(conn, at)``: the instant must be neither in the future nor before the registry's
  first row, nor later than the start of a write transaction still in progress (its
  changes will be dated before ``T``: until it ends, ``T`` is not final); returns the last
  history row at or before ``T`` (the registry's version then).

Instants are transaction start times (``now()`` fills ``changed_at`` and ``created_at``): a
change belongs to ``T`` when its transaction began at or before ``T``. The
``registry_version`` sequence cannot say what the version was at a past instant, so the
version at ``T`` is the id of the last history row at or before ``T``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.errors import ValidationFailed
from app.models.registry import Household

Binder = Callable[[object], str]

# The befores of a set of history rows ``{x}``, merged: earliest change wins per key.
_MERGED = (
    "coalesce(jsonb_object_agg(k.key, k.value ORDER BY {x}.id DESC) "
    "FILTER (WHERE k.key IS NOT NULL), '{{}}'::jsonb)"
)


# Every column of ``households``, in table order. A rebuilt row names its ``id`` by the
# history's ``household_id`` (the same value) rather than the ``jsonb_populate_record``
# output, so the planner knows the rebuilt rows' ids: ``h.id > cursor`` reaches the
# grouped history read, and rows come out in id order from an ordered walk.
_HOUSEHOLD_COLUMNS = tuple(c.name for c in Household.__table__.columns)


def households_sql(t: str, where: str | None = None, limit: str | None = None) -> str:
    """Households at ``T`` (``t``: the placeholder of a timestamptz), every column.

    With ``where`` (a condition over ``h``) and ``limit`` (a placeholder): only the first
    ``limit`` households at ``T`` satisfying ``where``, in id order (a page). Each half,
    unchanged and rebuilt, is then filtered, ordered by id and cut to ``limit`` on its own,
    which lets PostgreSQL walk ``households.id`` (and the changed households' history) in
    order and stop, instead of rebuilding every household that matches and sorting.
    """
    merged = _MERGED.format(x="x")
    plain = ", ".join(f"h0.{c}" for c in _HOUSEHOLD_COLUMNS)
    rebuilt = ", ".join(
        "c.household_id AS id" if c == "id" else f"r.{c}" for c in _HOUSEHOLD_COLUMNS
    )
    unchanged = f"""SELECT {plain} FROM households h0
   WHERE h0.created_at <= {t}::timestamptz
     AND NOT EXISTS (SELECT 1 FROM household_history x
                      WHERE x.household_id = h0.id AND x.changed_at > {t}::timestamptz)"""
    changed = f"""SELECT {rebuilt} FROM (SELECT x.household_id, {merged} AS before
                     FROM household_history x
                     LEFT JOIN LATERAL jsonb_each(x.before) k ON true
                    WHERE x.changed_at > {t}::timestamptz
                    GROUP BY x.household_id) c
    JOIN households h0 ON h0.id = c.household_id
   CROSS JOIN LATERAL jsonb_populate_record(h0, c.before) r
   WHERE h0.created_at <= {t}::timestamptz"""
    if where is None and limit is None:
        return f"({unchanged}\n  UNION ALL\n  {changed})"
    if where is None or limit is None:
        raise AssertionError("a page of households at T needs both a condition and a limit")

    def first(part: str) -> str:
        return f"(SELECT h.* FROM ({part}) h WHERE {where} ORDER BY h.id LIMIT {limit})"

    return f"(SELECT * FROM ({first(unchanged)}\n  UNION ALL\n  {first(changed)}) u)"


def members_sql(t: str) -> str:
    """The members of household ``h`` (an outer ``h.id``) at ``T``, every column."""
    merged = _MERGED.format(x="y")
    return f"""(SELECT m0.* FROM members m0
   WHERE m0.household_id = h.id AND m0.created_at <= {t}::timestamptz
     AND NOT EXISTS (SELECT 1 FROM household_history x
                      WHERE x.household_id = h.id AND x.member_id = m0.id
                        AND x.changed_at > {t}::timestamptz)
  UNION ALL
  SELECT r.* FROM members m0
   CROSS JOIN LATERAL (SELECT {merged} AS before
                         FROM household_history y
                         LEFT JOIN LATERAL jsonb_each(y.before) k ON true
                        WHERE y.member_id = m0.id AND y.changed_at > {t}::timestamptz) b
   CROSS JOIN LATERAL jsonb_populate_record(m0, b.before) r
   WHERE m0.id IN (SELECT x.member_id FROM household_history x
                    WHERE x.household_id = h.id AND x.member_id IS NOT NULL
                      AND x.changed_at > {t}::timestamptz)
     AND m0.created_at <= {t}::timestamptz AND r.household_id = h.id)"""


_HOUSEHOLDS = re.compile(r"\bFROM households h\b")
_MEMBERS = re.compile(r"\bFROM members m\b")
_TODAY = re.compile(r"\bcurrent_date\b")
# Anything else reading the live tables would mix today into the past: refused.
_LIVE = re.compile(r"\b(FROM|JOIN)\s+(public\.)?(households|members|families)\b")


def rewrite(
    sql: str,
    bind: Binder,
    at: datetime,
    *,
    where: str | None = None,
    limit: str | None = None,
) -> str:
    """``sql`` (over ``households h`` and correlated ``members m``) read at ``at``.

    A page passes its condition as ``where`` and its limit's placeholder as ``limit``
    (``households_sql``): ``sql`` then reads ``FROM households h`` with no condition of its
    own and orders by ``h.id`` with the same limit.
    """
    t = bind(at)
    out = _HOUSEHOLDS.sub(lambda _: f"FROM {households_sql(t, where, limit)} h", sql)
    out = _MEMBERS.sub(lambda _: f"FROM {members_sql(t)} m", out)
    given = sql + (where or "")
    if len(_MEMBERS.findall(given)) > given.count("m.household_id = h.id"):
        raise AssertionError("an as-of list reads members not correlated to h.id")
    # The rebuilt tables themselves name households/members h0/m0: mask them to check.
    rest = out.replace("households h0", "").replace("members m0", "")
    if _LIVE.search(rest):
        raise AssertionError("an as-of list still reads a live table")
    return _TODAY.sub(f"({t}::timestamptz)::date", out)


@dataclass(frozen=True)
class Instant:
    """A checked instant: ``at`` itself and the last history row at or before it (0 when
    none: the registry as seeded)."""

    at: datetime
    last_change: int


async def check(conn: asyncpg.Connection | asyncpg.Pool, at: datetime) -> Instant:
    """422 for an instant in the future or before the registry's first row."""
    row = await conn.fetchrow(
        """SELECT clock_timestamp() AS now,
                  least((SELECT created_at FROM households ORDER BY id LIMIT 1),
                        (SELECT changed_at FROM household_history
                          ORDER BY changed_at, id LIMIT 1)) AS began,
                  (SELECT id FROM household_history WHERE changed_at <= $1
                    ORDER BY changed_at DESC, id DESC LIMIT 1) AS last_change,
                  (SELECT min(xact_start) FROM pg_stat_activity
                    WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
                      AND datname = current_database()) AS oldest_writer""",
        at,
    )
    assert row is not None
    if at > row["now"]:
        raise ValidationFailed(
            f"as_of {at.isoformat()} is in the future (the registry's clock reads "
            f"{row['now'].isoformat()}); ask for an instant that has passed"
        )
    if row["began"] is None or at < row["began"]:
        since = row["began"].isoformat() if row["began"] is not None else "no data yet"
        raise ValidationFailed(
            f"as_of {at.isoformat()} is before the registry existed (its first record: {since})"
        )
    writer = row["oldest_writer"]
    if writer is not None and writer <= at:
        # Its changes will carry its start time, at or before ``at``: until it commits (or
        # rolls back) the registry as of ``at`` is not final, nor would its snapshot id be.
        raise ValidationFailed(
            f"as_of {at.isoformat()} is not final yet: a change that began at "
            f"{writer.isoformat()} is still being written; retry in a few seconds or ask "
            "for an earlier instant"
        )
    return Instant(at=at, last_change=int(row["last_change"] or 0))


__all__ = ["Instant", "check", "households_sql", "members_sql", "rewrite"]
