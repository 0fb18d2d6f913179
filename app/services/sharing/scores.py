"""Score against CNIC for partners (§4.2.4 iii): within the agreement's scope, audited.

Read on a read replica when the service has one; the audit row is appended on the primary.
"""

from __future__ import annotations

import asyncpg

from app.auth.partner import Principal
from app.replicas import Reads
from app.schemas.partner import PartnerScore
from app.services.audit import trail as audit

_SQL = """
SELECT h.id, h.pmt_score::float8 AS pmt_score, h.poverty_band, h.surveyed_on, h.pmt_version
  FROM members m JOIN households h ON h.id = m.household_id
 WHERE m.cnic = $1 AND m.deceased_on IS NULL
   AND (cardinality($2::text[]) = 0 OR h.province_code = ANY($2) OR h.division_code = ANY($2)
        OR h.district_code = ANY($2) OR h.tehsil_code = ANY($2)
        OR h.union_council_code = ANY($2) OR h.village_code = ANY($2))
"""


async def partner_score(reads: Reads, p: Principal, cnic: str) -> PartnerScore | None:
    """The household's score, or None (unknown, deceased, or outside the agreement's scope)."""

    async def read(conn: asyncpg.Connection) -> asyncpg.Record | None:
        return await conn.fetchrow(_SQL, cnic, list(p.geo_codes))

    def record(row: asyncpg.Record | None) -> audit.AuditRecord:
        return audit.AuditRecord.of(
            p,
            endpoint="/v1/partner/scores/{cnic}",
            filters={"cnic": cnic[:5] + "*******" + cnic[-1]},
            dimensions=[],
            households=1 if row else 0,
            members=1 if row else 0,
        )

    row = await reads.audited(read, record)
    if row is None:
        return None
    return PartnerScore(
        cnic=cnic,
        household_id=str(row["id"]),
        pmt_score=row["pmt_score"],
        poverty_band=row["poverty_band"],
        surveyed_on=row["surveyed_on"],
        pmt_version=row["pmt_version"],
    )
