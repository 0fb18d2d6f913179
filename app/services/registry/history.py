"""Every version of a household with its provenance (the staff history view)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from app.errors import NotFound


async def household_history(pool: asyncpg.Pool, household_id: int) -> dict[str, Any]:
    async with pool.acquire() as conn:
        version = await conn.fetchval("SELECT version FROM households WHERE id = $1", household_id)
        rows = await conn.fetch(
            """SELECT version, change, member_id, source, batch_id, ref, actor, changed_at,
                      before::text AS before, after::text AS after
                 FROM household_history WHERE household_id = $1 ORDER BY id""",
            household_id,
        )
    if version is None and not rows:
        raise NotFound(f"no household {household_id}")
    return {
        "household_id": household_id,
        "current_version": version,
        "items": [
            {
                **{
                    k: r[k]
                    for k in (
                        "version",
                        "change",
                        "member_id",
                        "source",
                        "batch_id",
                        "ref",
                        "actor",
                    )
                },
                "changed_at": r["changed_at"].isoformat(),
                "before": orjson.loads(r["before"]) if r["before"] else None,
                "after": orjson.loads(r["after"]) if r["after"] else None,
            }
            for r in rows
        ],
    }
