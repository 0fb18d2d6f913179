"""The grievances waiting on an officer: the new ones and the overdue ones.

*New*: still ``received`` (not triaged). *Overdue*: open and past a service-level target
now, exactly as :func:`sla.overdue` says (a received one past its triage or its resolution
due time, a triaged or re-surveyed one past its resolution due time). The queue is their
union: every received grievance, and the other open ones past their resolution due time.
The cut-offs are instants (``now`` less each target), so every read is a range of
``ix_grievances_status`` (status, created_at): the counts are index-only, the page takes the
oldest ``limit`` of each range, and nothing closed, nor open and still in time, is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from app.services.grievances.machine import OPEN, State
from app.services.grievances.sla import Targets

NEW = State.received
# The open states after triage, in the machine's order: in the queue only once overdue.
LATER = [s for s in State if s in OPEN and s is not NEW]


@dataclass(frozen=True)
class Cutoffs:
    """Filed before ``triage`` (resp. ``resolve``): past that target at ``now``."""

    triage: datetime
    resolve: datetime

    @classmethod
    def at(cls, now: datetime, targets: Targets) -> Cutoffs:
        return cls(
            now - timedelta(days=targets.triage_days), now - timedelta(days=targets.resolve_days)
        )

    @property
    def received_overdue(self) -> datetime:
        """A received grievance filed before this has missed a target (whichever is first)."""
        return max(self.triage, self.resolve)


@dataclass(frozen=True)
class Counts:
    new: int  # received
    overdue: int  # open and past a target
    total: int  # in the queue: new, or overdue

    def as_json(self) -> dict[str, int]:
        return {"new": self.new, "overdue": self.overdue}


async def counts(conn: asyncpg.Connection, now: datetime, targets: Targets) -> Counts:
    cut = Cutoffs.at(now, targets)
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM grievances WHERE status = $1) AS new,
                  (SELECT count(*) FROM grievances
                    WHERE status = $1 AND created_at < $2) AS new_overdue,
                  (SELECT count(*) FROM grievances
                    WHERE status = ANY($3::text[]) AND created_at < $4) AS later_overdue""",
        NEW.value,
        cut.received_overdue,
        [s.value for s in LATER],
        cut.resolve,
    )
    assert row is not None
    return Counts(
        new=row["new"],
        overdue=row["new_overdue"] + row["later_overdue"],
        total=row["new"] + row["later_overdue"],
    )


async def oldest(
    conn: asyncpg.Connection, now: datetime, targets: Targets, limit: int
) -> list[asyncpg.Record]:
    """The ``limit`` grievances of the queue filed longest ago (ties by id): id, reference,
    status, reason, created_at."""
    cut = Cutoffs.at(now, targets)
    later = " ".join(
        f"""UNION ALL (SELECT id, created_at FROM grievances
                        WHERE status = ${i} AND created_at < $3
                        ORDER BY created_at, id LIMIT $1)"""
        for i in range(4, len(LATER) + 4)
    )
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""WITH page AS (
                SELECT id, created_at FROM (
                    (SELECT id, created_at FROM grievances WHERE status = $2
                      ORDER BY created_at, id LIMIT $1)
                    {later}) b
                 ORDER BY created_at, id LIMIT $1)
            SELECT g.id, g.reference, g.status, g.reason, g.created_at
              FROM page p JOIN grievances g ON g.id = p.id
             ORDER BY p.created_at, p.id""",
        limit,
        NEW.value,
        cut.resolve,
        *[s.value for s in LATER],
    )
    return rows
