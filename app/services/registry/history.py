"""Every version of a household with its provenance (the staff history view), audited."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from app.auth.partner import Principal
from app.errors import NotFound
from app.services.audit import trail as audit

ENDPOINT = "GET /v1/households/{household_id}/history"

_HISTORY_SQL = """
SELECT version, change, member_id, source, batch_id, ref, actor, changed_at,
       before::text AS before, after::text AS after
  FROM household_history WHERE household_id = $1 ORDER BY id
"""


async def household_history(
    pool: asyncpg.Pool, staff: Principal, household_id: int
) -> dict[str, Any]:
    """The history (names, CNICs, dates of birth, phones, disabilities as they changed).

    Read from one snapshot, then audited, committed before anything is returned: the
    audit row names the household and counts its living members, as every read of one
    household does; a household that does not exist is audited as an attempt that
    disclosed nothing (404). The append has a READ COMMITTED transaction of its own: the
    snapshot's could miss the head of the audit chain it appends to.
    """
    async with pool.acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            version = await conn.fetchval(
                "SELECT version FROM households WHERE id = $1", household_id
            )
            rows = await conn.fetch(_HISTORY_SQL, household_id)
            found = version is not None or bool(rows)
            members = await conn.fetchval(
                "SELECT count(*) FROM members WHERE household_id = $1 AND deceased_on IS NULL",
                household_id,
            )
        await audit.append(
            conn,
            audit.AuditRecord.of(
                staff,
                endpoint=ENDPOINT,
                filters={"household_id": str(household_id)},
                dimensions=["household_history"],
                households=1 if found else 0,
                members=int(members) if found else 0,
            ),
        )
    if not found:
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
