"""Poverty level by CNIC (§4.2.4 iii): the public hot path, one prepared query on asyncpg.

The raw pool is used instead of an ORM session because this is the busiest endpoint and
the benchmark holds it to a raw-asyncpg baseline; asyncpg prepares the statement once per
connection and caches it, so each look-up is a single Bind/Execute round trip.
"""

from __future__ import annotations

import asyncpg
import orjson

from app.replicas import Reads
from app.schemas.public import mask_cnic

# Deceased members are not answered (docs/api.md: 404 as for an unknown CNIC). The partial
# unique index on members.cnic serves the equality.
PUBLIC_SCORE_SQL = """
SELECT h.pmt_score::float8 AS pmt_score, h.poverty_band, h.surveyed_on, h.pmt_version
FROM members m
JOIN households h ON h.id = m.household_id
WHERE m.cnic = $1 AND m.deceased_on IS NULL
"""


async def public_score(pool: asyncpg.Pool | Reads, cnic: str) -> bytes | None:
    """The public answer (JSON of ``PublicScore``) for a normalized 13-digit CNIC, or None
    if it is unknown or deceased. On a read replica when the service has one (``Reads``).

    Serialized straight from the row with orjson: on the busiest path a validated model
    per answer costs more than it checks (the row's types are the table's).
    """
    row = await pool.fetchrow(PUBLIC_SCORE_SQL, cnic)
    if row is None:
        return None
    return orjson.dumps(
        {
            "cnic": mask_cnic(cnic),
            "pmt_score": row["pmt_score"],
            "poverty_band": row["poverty_band"],
            "surveyed_on": row["surveyed_on"],
            "pmt_version": row["pmt_version"],
        }
    )
