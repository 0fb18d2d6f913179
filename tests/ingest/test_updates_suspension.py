"""A batch queued before its agreement was suspended or revoked is not applied.

It ends ``done`` with ``stopped`` saying why, and every record without an outcome is
rejected with that reason. A suspension while a batch runs stops it at the next chunk:
what was committed before stays, nothing after is applied.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import ROOT, cli_env, fresh_database, make_settings, open_client, run_cli
from updates_helpers import headers, updates_partner, wait_done

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=300, seed=43) as u:
        yield u


@pytest.fixture(scope="module")
async def api(url: str) -> AsyncIterator[httpx.AsyncClient]:
    # No in-process workers: each test runs `nser worker` itself, when it wants.
    async for c in open_client(make_settings(url, in_process_workers=0)):
        yield c


def worker(url: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app", "worker", "--poll-seconds", "0.1", "--exit-when-idle"],
        cwd=ROOT,
        env=cli_env(url, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def phones(conn: asyncpg.Connection, n: int) -> list[dict[str, Any]]:
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM households ORDER BY id LIMIT $1", n)]
    return [
        {"ref": f"r{i}", "kind": "phone_change", "household_id": hid, "phone": f"+92300{i:07d}"}
        for i, hid in enumerate(ids)
    ]


async def post(api: httpx.AsyncClient, partner: dict[str, str], records: list[Any]) -> str:
    r = await api.post("/v1/partner/updates", json={"records": records}, headers=headers(partner))
    assert r.status_code == 202, r.text
    batch_id: str = r.json()["batch_id"]
    return batch_id


async def outcomes(conn: asyncpg.Connection, batch_id: str) -> list[tuple[str, list[str]]]:
    rows = await conn.fetch(
        "SELECT outcome, reasons FROM update_results WHERE batch_id = $1 ORDER BY position",
        uuid.UUID(batch_id),
    )
    return [(r["outcome"], list(r["reasons"])) for r in rows]


async def test_a_batch_queued_before_a_suspension_is_not_applied(
    url: str, api: httpx.AsyncClient
) -> None:
    partner = await updates_partner(url, api, "Suspended Before")
    conn = await asyncpg.connect(url)
    try:
        records = await phones(conn, 5)
        before = await conn.fetch(
            "SELECT id, phone, version FROM households WHERE id = ANY($1) ORDER BY id",
            [r["household_id"] for r in records],
        )
        batch_id = await post(api, partner, records)
        run_cli(["partners", "suspend", partner["agreement_id"], "--reason", "spot check"], url)
        proc = worker(url)
        assert proc.wait(60) == 0
        batch = await conn.fetchrow(
            "SELECT status, stopped_reason FROM update_batches WHERE id = $1", uuid.UUID(batch_id)
        )
        assert batch["status"] == "done"
        assert batch["stopped_reason"] == f"agreement {partner['agreement_id']} is suspended"
        got = await outcomes(conn, batch_id)
        assert len(got) == 5
        for outcome, reasons in got:
            assert outcome == "rejected"
            assert reasons == [
                f"not applied: agreement {partner['agreement_id']} is suspended; "
                "the batch was stopped before this record"
            ]
        after = await conn.fetch(
            "SELECT id, phone, version FROM households WHERE id = ANY($1) ORDER BY id",
            [r["household_id"] for r in records],
        )
        assert [tuple(r) for r in after] == [tuple(r) for r in before]
        assert not await conn.fetchval(
            "SELECT count(*) FROM household_history WHERE batch_id = $1", batch_id
        )
        # Once resumed, the partner reads the outcome through the API.
        run_cli(["partners", "resume", partner["agreement_id"]], url)
        body = await wait_done(api, partner, batch_id)
        assert body["stopped"] == f"agreement {partner['agreement_id']} is suspended"
        assert body["counts"]["rejected"] == 5
    finally:
        await conn.close()


async def test_a_revoked_agreements_queued_batch_is_stopped_too(
    url: str, api: httpx.AsyncClient
) -> None:
    partner = await updates_partner(url, api, "Revoked Before")
    conn = await asyncpg.connect(url)
    try:
        batch_id = await post(api, partner, await phones(conn, 2))
        run_cli(["partners", "revoke", partner["agreement_id"]], url)
        assert worker(url).wait(60) == 0
        assert await conn.fetchval(
            "SELECT stopped_reason FROM update_batches WHERE id = $1", uuid.UUID(batch_id)
        ) == (f"agreement {partner['agreement_id']} is revoked")
        assert {o for o, _ in await outcomes(conn, batch_id)} == {"rejected"}
    finally:
        await conn.close()


async def _wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_suspension_mid_batch_stops_it_at_the_next_chunk(
    url: str, api: httpx.AsyncClient
) -> None:
    """Chunks of two records: the second chunk is held at its load by a lock this test
    holds on its first household, the agreement is suspended meanwhile, then the lock is
    released. The first chunk stays applied; nothing after it is."""
    partner = await updates_partner(url, api, "Suspended During")
    conn = await asyncpg.connect(url)
    holder = await asyncpg.connect(url)
    proc = None
    try:
        records = await phones(conn, 6)
        held = records[2]["household_id"]
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM households WHERE id = $1 FOR UPDATE", held)
        batch_id = await post(api, partner, records)
        proc = worker(url, NSER_INGEST_CHUNK_RECORDS="2", NSER_INGEST_PIPELINE="false")

        async def first_chunk_in_and_second_waiting() -> bool:
            n = await conn.fetchval(
                "SELECT count(*) FROM update_results WHERE batch_id = $1", uuid.UUID(batch_id)
            )
            waiting = await conn.fetchval(
                """SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nser-worker'
                    AND datname = current_database() AND wait_event_type = 'Lock'"""
            )
            return bool(n == 2 and waiting)

        await _wait_for(first_chunk_in_and_second_waiting)
        run_cli(["partners", "suspend", partner["agreement_id"]], url)
        await tx.rollback()
        assert proc.wait(60) == 0
        got = await outcomes(conn, batch_id)
        assert [o for o, _ in got] == ["applied"] * 2 + ["rejected"] * 4
        assert all("not applied: agreement" in r[0] for _, r in got[2:])
        phones_now = {
            r["id"]: r["phone"]
            for r in await conn.fetch(
                "SELECT id, phone FROM households WHERE id = ANY($1)",
                [r["household_id"] for r in records],
            )
        }
        for i, record in enumerate(records):
            applied = phones_now[record["household_id"]] == record["phone"]
            assert applied == (i < 2), (i, record)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM household_history WHERE batch_id = $1", batch_id
            )
            == 2
        )
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        await holder.close()
        await conn.close()
