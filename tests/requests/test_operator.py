"""What operators do beside the workflow: ``nser partners create`` (audited as a bypass) and
``nser partners expire``."""

from __future__ import annotations

import json

import asyncpg
from conftest import run_cli
from partner_helpers import create_partner


async def test_partners_create_is_audited_as_bypassing_the_workflow(
    seeded_url: str, db: asyncpg.Connection
) -> None:
    made = create_partner(seeded_url, name="Bypass Check", categories="iii", dimensions="education")
    row = await db.fetchrow(
        "SELECT actor_type, endpoint, filters, dimensions FROM audit_log WHERE agreement_id = $1",
        made["agreement_id"],
    )
    assert row is not None
    assert row["actor_type"] == "operator"
    assert row["endpoint"] == "nser partners create"
    assert json.loads(row["filters"])["workflow"] == "bypassed"
    assert list(row["dimensions"]) == ["education"]
    assert "intact" in run_cli(["audit", "verify"], seeded_url).stdout


async def test_agreements_past_their_validity_expire(
    seeded_url: str, db: asyncpg.Connection
) -> None:
    made = create_partner(seeded_url, name="Expiring Partner", categories="iii")
    await db.execute(
        """UPDATE agreements SET valid_from = now() - interval '2 days',
                  valid_to = now() - interval '1 day' WHERE id = $1""",
        made["agreement_id"],
    )
    out = run_cli(["partners", "expire"], seeded_url).stdout
    assert int(out.split()[0]) >= 1
    status = await db.fetchval("SELECT status FROM agreements WHERE id = $1", made["agreement_id"])
    assert status == "expired"
    assert run_cli(["partners", "expire"], seeded_url).stdout.startswith("0 ")


async def test_operator_status_changes_move_the_request_and_are_audited(
    seeded_url: str, db: asyncpg.Connection
) -> None:
    made = create_partner(seeded_url, name="Operator Suspends", categories="iii")
    agreement = made["agreement_id"]
    run_cli(["partners", "suspend", agreement, "--reason", "audit finding"], seeded_url)
    run_cli(["partners", "resume", agreement], seeded_url)
    rows = await db.fetch(
        "SELECT endpoint, filters FROM audit_log WHERE agreement_id = $1 ORDER BY id", agreement
    )
    assert [r["endpoint"] for r in rows] == [
        "nser partners create",
        "nser partners suspend",
        "nser partners resume",
    ]
    await db.execute(
        "UPDATE agreements SET valid_to = now() - interval '1 second',"
        " valid_from = now() - interval '1 day' WHERE id = $1",
        agreement,
    )
    run_cli(["partners", "expire"], seeded_url)
    refused = run_cli(["partners", "resume", agreement], seeded_url, check=False)
    assert refused.returncode != 0
    assert "expired" in refused.stderr
