"""What an agreement's clients did, read back from the audit log: calls per endpoint and day.

A bounded read: the clients' rows of the last ``days`` days only, one range of
``ix_audit_log_client_at`` (client_id, at) per client, so neither the size of the log nor
the agreement's age changes what it costs. Reading the counts discloses no personal data
(endpoints, days, counts), so it writes no audit row of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import asyncpg

WINDOW_DAYS = 30
MAX_WINDOW_DAYS = 92

_BY_ENDPOINT_AND_DAY = """
SELECT endpoint, (at AT TIME ZONE 'UTC')::date AS day, count(*) AS calls,
       sum(households)::bigint AS households, sum(members)::bigint AS members
  FROM audit_log
 WHERE client_id = ANY($1::text[]) AND at >= $2 AND at < $3
 GROUP BY endpoint, day
 ORDER BY day DESC, endpoint
"""


@dataclass(frozen=True)
class Usage:
    """Calls by endpoint and day (newest day first), their totals, and the window read."""

    since: date
    until: date
    days: list[date]
    endpoints: list[str]
    cells: dict[tuple[str, date], int]
    by_endpoint: dict[str, int]
    by_day: dict[date, int]
    households: int
    members: int

    @property
    def total(self) -> int:
        return sum(self.by_endpoint.values())


async def by_endpoint_and_day(
    conn: asyncpg.Connection, client_ids: list[str], now: datetime, days: int = WINDOW_DAYS
) -> Usage:
    """The calls of ``client_ids`` in the ``days`` days up to ``now`` (UTC days)."""
    if not 1 <= days <= MAX_WINDOW_DAYS:
        raise ValueError(f"days: 1 to {MAX_WINDOW_DAYS}, not {days}")
    start = now - timedelta(days=days)
    rows = await conn.fetch(_BY_ENDPOINT_AND_DAY, client_ids, start, now) if client_ids else []
    cells: dict[tuple[str, date], int] = {}
    by_endpoint: dict[str, int] = {}
    by_day: dict[date, int] = {}
    households = members = 0
    for r in rows:
        cells[(r["endpoint"], r["day"])] = r["calls"]
        by_endpoint[r["endpoint"]] = by_endpoint.get(r["endpoint"], 0) + r["calls"]
        by_day[r["day"]] = by_day.get(r["day"], 0) + r["calls"]
        households += r["households"] or 0
        members += r["members"] or 0
    return Usage(
        since=start.date(),
        until=now.date(),
        days=sorted(by_day, reverse=True),
        endpoints=sorted(by_endpoint, key=lambda e: (-by_endpoint[e], e)),
        cells=cells,
        by_endpoint=by_endpoint,
        by_day=by_day,
        households=households,
        members=members,
    )
