"""The audit log: written for partner reads, append-only, and `nser audit verify`."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest
from conftest import (
    fresh_database,
    make_settings,
    open_client,
    run_cli,
)
from partner_helpers import bearer, create_partner, get_token


@pytest.fixture(scope="module")
def audit_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
async def filled(audit_url: str) -> str:
    p = create_partner(audit_url, categories="iii,iv")
    # One chain for the reads, so rows 2-6 follow each other (several chains at once:
    # test_audit_chains.py).
    settings = make_settings(audit_url, token_limits="1000/minute", audit_chains=1)
    async for c in open_client(settings):
        token = await get_token(c, p["client_id"], p["client_secret"])
        for _ in range(4):
            r = await c.get("/v1/partner/scores/3520212345673", headers=bearer(token))
            assert r.status_code == 404
        r = await c.get("/v1/partner/beneficiaries", headers=bearer(token))
        assert r.status_code == 200
    return audit_url


async def _tamper(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        await conn.execute(sql)
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
    finally:
        await conn.close()


async def test_rows_are_written_and_append_only(filled: str) -> None:
    conn = await asyncpg.connect(filled)
    try:
        rows = await conn.fetch("SELECT * FROM audit_log ORDER BY id")
        # The operator's `nser partners create` (a workflow bypass), then the five reads.
        assert len(rows) == 6
        assert rows[0]["actor_type"] == "operator"
        assert rows[-1]["endpoint"].startswith("/v1/partner/beneficiaries")
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("UPDATE audit_log SET households = 0")
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("DELETE FROM audit_log")
    finally:
        await conn.close()


async def test_verify_clean_then_catches_edit_delete_reorder(filled: str) -> None:
    # --full: rows edited after a run verified them (incremental runs: test_audit_checkpoints).
    assert run_cli(["audit", "verify", "--full"], filled).returncode == 0
    await _tamper(filled, "UPDATE audit_log SET households = 99 WHERE id = 2")
    bad = run_cli(["audit", "verify", "--full"], filled, check=False)
    assert bad.returncode == 1
    assert "row 2" in bad.stderr
    assert "altered" in bad.stderr
    await _tamper(filled, "UPDATE audit_log SET households = 0 WHERE id = 2")
    assert run_cli(["audit", "verify", "--full"], filled).returncode == 0
    # Reorder: swap rows 3 and 4.
    await _tamper(
        filled,
        "UPDATE audit_log SET id = -1 WHERE id = 3; UPDATE audit_log SET id = 3 WHERE id = 4; "
        "UPDATE audit_log SET id = 4 WHERE id = -1",
    )
    bad = run_cli(["audit", "verify", "--full"], filled, check=False)
    assert bad.returncode == 1
    assert "row 3" in bad.stderr
    await _tamper(
        filled,
        "UPDATE audit_log SET id = -1 WHERE id = 3; UPDATE audit_log SET id = 3 WHERE id = 4; "
        "UPDATE audit_log SET id = 4 WHERE id = -1",
    )
    assert run_cli(["audit", "verify", "--full"], filled).returncode == 0
    await _tamper(filled, "DELETE FROM audit_log WHERE id = 2")
    bad = run_cli(["audit", "verify", "--full"], filled, check=False)
    assert bad.returncode == 1
    assert "row 3" in bad.stderr
    assert "removed" in bad.stderr
