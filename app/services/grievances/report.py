"""The M&E ``grievances`` report: filings, outcomes and service level, per reason.

Grievances *filed* in the range (``grievances.created_at``). ``rows``: one per reason (all
five, in the form's order): ``filed``; ``open`` (neither resolved nor rejected);
``score_changed``, ``score_unchanged`` (resolved, by the outcome read from the history) and
``rejected``; ``triage_overdue`` and ``resolve_overdue`` (open and past a target now, as
``sla.overdue`` says: a case past its resolution target counts there only);
``triaged_late`` and ``closed_late`` (the step was taken, after its target); and the
median days from filing to the first staff step (triage, or a rejection straight away)
and to closure. ``overdue``: every overdue case, the most overdue first. ``totals``: the
counts summed, the medians over all reasons, the targets and the day of the figures.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from app.schemas.grievances import REASONS
from app.services.grievances.sla import Targets

COUNTS = (
    "filed",
    "open",
    "score_changed",
    "score_unchanged",
    "rejected",
    "triage_overdue",
    "resolve_overdue",
    "triaged_late",
    "closed_late",
)
ROWS = ("reason", *COUNTS, "median_days_to_triage", "median_days_to_close")
OVERDUE = (
    "grievance_id",
    "reference",
    "status",
    "reason",
    "filed_at",
    "breach",
    "due_at",
    "days_overdue",
)

_FILED = """
WITH g AS (
    SELECT id, reference, status, reason, created_at, triaged_at, closed_at,
           resolution->>'outcome' AS outcome,
           status IN ('received', 'triaged', 'resurvey_ordered') AS is_open,
           created_at + make_interval(days => $3) AS triage_due,
           created_at + make_interval(days => $4) AS resolve_due
      FROM grievances
     WHERE ($1::timestamptz IS NULL OR created_at >= $1)
       AND ($2::timestamptz IS NULL OR created_at < $2)),
s AS (
    SELECT *, CASE WHEN is_open AND $5 > resolve_due THEN 'resolve'
                   WHEN status = 'received' AND $5 > triage_due THEN 'triage' END AS breach
      FROM g)
"""


def _days(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def build(
    conn: asyncpg.Connection,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    targets: Targets,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """``(rows, totals, overdue)`` over grievances filed in ``since``..``until``."""
    args = (since, until, targets.triage_days, targets.resolve_days, now)
    found = await conn.fetch(
        _FILED
        + """
        SELECT reason, grouping(reason) AS is_total, count(*) AS filed,
               count(*) FILTER (WHERE is_open) AS open,
               count(*) FILTER (WHERE outcome = 'score_changed') AS score_changed,
               count(*) FILTER (WHERE outcome = 'score_unchanged') AS score_unchanged,
               count(*) FILTER (WHERE status = 'rejected') AS rejected,
               count(*) FILTER (WHERE breach = 'triage') AS triage_overdue,
               count(*) FILTER (WHERE breach = 'resolve') AS resolve_overdue,
               count(*) FILTER (WHERE triaged_at > triage_due) AS triaged_late,
               count(*) FILTER (WHERE closed_at > resolve_due) AS closed_late,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM triaged_at - created_at)::float8 / 86400)
                   AS median_triage,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM closed_at - created_at)::float8 / 86400)
                   AS median_close
          FROM s GROUP BY GROUPING SETS ((reason), ())""",
        *args,
    )
    late = await conn.fetch(
        _FILED
        + """
        SELECT id, reference, status, reason, created_at, breach,
               CASE breach WHEN 'resolve' THEN resolve_due ELSE triage_due END AS due_at
          FROM s WHERE breach IS NOT NULL
         ORDER BY due_at, id""",
        *args,
    )
    by_reason = {f["reason"]: f for f in found if not f["is_total"]}
    total = next((f for f in found if f["is_total"]), None)

    def line(f: asyncpg.Record | None) -> dict[str, Any]:
        return {
            **{k: f[k] if f else 0 for k in COUNTS},
            "median_days_to_triage": _days(f["median_triage"]) if f else None,
            "median_days_to_close": _days(f["median_close"]) if f else None,
        }

    rows = [{"reason": reason, **line(by_reason.get(reason))} for reason in REASONS]
    totals: dict[str, Any] = {
        **line(total),
        "triage_days": targets.triage_days,
        "resolve_days": targets.resolve_days,
        "as_of": now,
    }
    overdue = [
        {
            "grievance_id": str(o["id"]),
            "reference": o["reference"],
            "status": o["status"],
            "reason": o["reason"],
            "filed_at": o["created_at"],
            "breach": o["breach"],
            "due_at": o["due_at"],
            "days_overdue": int((now - o["due_at"]).total_seconds() // 86400),
        }
        for o in late
    ]
    return rows, totals, overdue
