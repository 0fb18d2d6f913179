"""The two publicly reported programmes, for the demo registry (idempotent).

- ``cash-transfer``: the unconditional cash transfer, PMT cut-off 32, raised to 37 for
  households with a disabled member; paid to each ever-married woman (family unit, §3.1).
- ``education-cct``: the conditional education stipend, cut-off 32, over households with a
  child of school age (5 to 16).

Owned by the registry's own organization. Illustrative, like the shipped PMT model.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson

from app.services.programmes import rules

OWNER = "Benazir Income Support Programme"
DEMO_PROGRAMMES: tuple[dict[str, Any], ...] = (
    {
        "code": "cash-transfer",
        "name": "Unconditional cash transfer",
        "description": "A quarterly cash transfer to the ever-married women of households "
        "scoring below the cut-off (publicly reported: 32, and 37 with a disabled member).",
        "rule": {
            "unit": "family",
            "cut_off": 32,
            "raised_cut_offs": [{"when": "has_disabled_member", "cut_off": 37}],
        },
    },
    {
        "code": "education-cct",
        "name": "Conditional education stipend",
        "description": "Stipends for school-age children of households below 32, paid "
        "on school attendance.",
        "rule": {"unit": "household", "cut_off": 32, "requires": ["has_school_age_child"]},
    },
)


async def ensure_demo_programmes(
    conn: asyncpg.Connection, agreement_id: uuid.UUID | None = None
) -> list[str]:
    """Create the demo programmes if missing (and name them in ``agreement_id``)."""
    async with conn.transaction():
        owner = await conn.fetchval(
            "SELECT id FROM organizations WHERE name = $1 ORDER BY created_at LIMIT 1", OWNER
        )
        if owner is None:
            owner = await conn.fetchval(
                "INSERT INTO organizations (name, type) VALUES ($1, 'government') RETURNING id",
                OWNER,
            )
        for spec in DEMO_PROGRAMMES:
            rule = rules.normalize(rules.parse_rule(spec["rule"]))
            programme_id = await conn.fetchval(
                """INSERT INTO programmes (code, name, organization_id, description)
                   VALUES ($1, $2, $3, $4) ON CONFLICT (code) DO NOTHING RETURNING id""",
                spec["code"],
                spec["name"],
                owner,
                spec["description"],
            )
            if programme_id is not None:
                await conn.execute(
                    """INSERT INTO programme_rules (programme_id, version, rule, note, created_by)
                       VALUES ($1, 1, $2::jsonb, 'demo', 'nser demo')""",
                    programme_id,
                    orjson.dumps(rule).decode(),
                )
            if agreement_id is not None:
                await conn.execute(
                    """INSERT INTO agreement_programmes (agreement_id, programme_id)
                       SELECT $1, id FROM programmes WHERE code = $2 ON CONFLICT DO NOTHING""",
                    agreement_id,
                    spec["code"],
                )
    return [spec["code"] for spec in DEMO_PROGRAMMES]
