"""The requests waiting on staff: per state, how many, and the ones waiting longest.

Which states wait on whom is the machine's ``WAITING_ON``; how long a request has waited
runs from when it entered its state, ``data_requests.updated_at`` (only a status change
sets it, in the transaction that records the timeline's event). Both reads go through
``ix_data_requests_waiting`` (status, updated_at, id): the counts are index-only scans of
the states asked for, and the page takes the first ``limit`` entries of each state's range
and keeps the oldest ``limit`` of those, so neither reads a request in another state, and
the page costs the page whatever the queue holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from app.services.requests.machine import State


async def counts(conn: asyncpg.Connection, states: Sequence[State]) -> dict[str, int]:
    """How many requests are in each of ``states`` (every state named, 0 included)."""
    found = {
        row["status"]: row["n"]
        for row in await conn.fetch(
            """SELECT status, count(*) AS n FROM data_requests
                WHERE status = ANY($1::text[]) GROUP BY status""",
            [s.value for s in states],
        )
    }
    return {s.value: found.get(s.value, 0) for s in states}


async def oldest(
    conn: asyncpg.Connection, states: Sequence[State], limit: int
) -> list[asyncpg.Record]:
    """The ``limit`` requests in ``states`` that entered their state longest ago (ties by
    id): id, reference, status, organization (the form's name), organization_type,
    created_at, since (when it entered its state)."""
    if not states:
        return []
    # One ordered index range per state (a state's value is a parameter, never text).
    branches = " UNION ALL ".join(
        f"""(SELECT id, updated_at FROM data_requests WHERE status = ${i}
              ORDER BY updated_at, id LIMIT $1)"""
        for i in range(2, len(states) + 2)
    )
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""WITH page AS (SELECT id, updated_at FROM ({branches}) b
                            ORDER BY updated_at, id LIMIT $1)
            SELECT r.id, r.reference, r.status, r.organization_type,
                   r.form->'organization'->>'name' AS organization, r.created_at,
                   p.updated_at AS since
              FROM page p JOIN data_requests r ON r.id = p.id
             ORDER BY p.updated_at, p.id""",
        limit,
        *[s.value for s in states],
    )
    return rows
