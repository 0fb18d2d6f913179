"""Known registry rows for the look-up tests, inserted with SQL (independent of ``nser seed``).

CNICs start with 9, a digit no province uses, so they never collide with seeded members.
"""

from __future__ import annotations

from datetime import date

import asyncpg

LIVING = "9990100000013"
DECEASED = "9990100000021"
UNKNOWN = "9990100000099"
SURVEYED_ON = date(2021, 3, 14)


async def insert_known_members(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT 1 FROM members WHERE cnic = $1", LIVING):
            return
        unit = await conn.fetchrow("SELECT code, province_code FROM geo_units LIMIT 1")
        version = await conn.fetchval("SELECT version FROM pmt_models LIMIT 1")
        code = unit["code"]
        household_id = await conn.fetchval(
            """
            INSERT INTO households (form_number, province_code, division_code, district_code,
                tehsil_code, union_council_code, village_code, address, surveyed_on,
                pmt_score, poverty_band, pmt_version)
            VALUES ('TEST-LOOKUP-1', $1, $2, $2, $2, $2, $2, 'House 1, Street 2', $3,
                14.27, 'ultra_poor', $4)
            RETURNING id
            """,
            unit["province_code"],
            code,
            SURVEYED_ON,
            version,
        )
        await conn.executemany(
            """
            INSERT INTO members (household_id, cnic, name, gender, date_of_birth, relationship,
                marital_status, deceased_on)
            VALUES ($1, $2, $3, $4, $5, $6, 'married', $7)
            """,
            [
                (household_id, LIVING, "Ayesha Bibi", "female", date(1980, 1, 1), "head", None),
                (
                    household_id,
                    DECEASED,
                    "Muhammad Aslam",
                    "male",
                    date(1975, 5, 5),
                    "spouse",
                    date(2020, 1, 1),
                ),
            ],
        )
    finally:
        await conn.close()
