"""A connection cut at COMMIT: the commit happened, the client never heard.

A TCP proxy (tests/faults/pg_proxy.py) sits between the service and PostgreSQL, forwards a
transaction's COMMIT, waits until the server has answered it and drops the answer,
closing the link both ways. Twice:

- the API storing an update batch (``POST /v1/partner/updates``): the partner is told 503,
  yet the batch is stored. Re-sent with the same Idempotency-Key and body it is answered
  200 with the same ``batch_id``: one batch, not two;
- ``nser worker`` committing a chunk of that batch's outcomes: the chunk is committed but
  the worker gets an error. It reconnects, takes its batch back and goes on from the first
  record without an outcome (it reads what is stored, it does not guess): the batch ends
  ``done`` with one outcome per record, each change applied once, and
  ``GET /v1/partner/updates/{batch_id}`` says so.

Each time, the proxy holds the service off after the cut while the test reads the
database directly, proving the cut transaction was committed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from conftest import ROOT, cli_env, fresh_database, make_settings, open_client, service_url
from faults.pg_proxy import CommitCutProxy
from ingest.test_updates_crash import _versions, check_end_state, stop
from updates_helpers import updates_partner

pytestmark = pytest.mark.slow

RECORDS = 3000  # two chunks of 2,000 and 1,000


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=600, seed=21) as db:
        yield db


@pytest.fixture(scope="module")
async def proxy() -> AsyncIterator[CommitCutProxy]:
    p = CommitCutProxy("127.0.0.1", 5432)
    await p.start()
    yield p
    await p.close()


@pytest.fixture(scope="module")
async def api(url: str, proxy: CommitCutProxy) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(url, database_url=proxy.url(service_url(url)), in_process_workers=0)
    async for c in open_client(settings):
        yield c


async def test_commit_cut_when_storing_and_when_applying_a_batch(
    url: str, api: httpx.AsyncClient, proxy: CommitCutProxy, tmp_path: Path
) -> None:
    partner = await updates_partner(url, api, "Commit Cut")
    conn = await asyncpg.connect(url)
    worker = None
    try:
        versions = await _versions(conn)
        ids = sorted(versions)
        records: list[dict[str, Any]] = []
        last: dict[int, str] = {}
        for i in range(RECORDS):
            hid = ids[(i * 7) % len(ids)]
            phone = f"+9231{i:08d}"
            records.append(
                {"ref": str(i), "kind": "phone_change", "household_id": hid, "phone": phone}
            )
            last[hid] = phone
        body = orjson.dumps({"records": records})
        key = uuid.uuid4().hex
        headers = {
            "Authorization": f"Bearer {partner['token']}",
            "Idempotency-Key": key,
            "Content-Type": "application/json",
        }

        # 1. The API's COMMIT of the batch is cut: 503, and the batch is stored all the same.
        proxy.arm(b"INSERT INTO update_batches")
        r = await api.post("/v1/partner/updates", content=body, headers=headers)
        assert proxy.cuts == 1, "the proxy did not cut the batch's COMMIT"
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers.get("retry-after")
        stored = await conn.fetch(
            "SELECT id::text AS id, status FROM update_batches WHERE idempotency_key = $1", key
        )
        assert [s["status"] for s in stored] == ["received"], stored
        proxy.release()
        again = await api.post("/v1/partner/updates", content=body, headers=headers)
        assert again.status_code == 200, again.text
        batch_id = again.json()["batch_id"]
        assert batch_id == stored[0]["id"]
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM update_batches WHERE idempotency_key = $1", key
            )
            == 1
        )

        # 2. The worker's COMMIT of a chunk of outcomes is cut.
        proxy.arm(b"update_results")
        log = tmp_path / "worker.log"
        worker = start_proxied_worker(url, proxy, log)
        await asyncio.wait_for(proxy.cut_done.wait(), 60)
        committed = await conn.fetchval(
            "SELECT count(*) FROM update_results WHERE batch_id = $1::uuid", batch_id
        )
        status = await conn.fetchval(
            "SELECT status FROM update_batches WHERE id = $1::uuid", batch_id
        )
        # Held off by the proxy, the worker cannot go on: what is there was committed by
        # the transaction whose answer was dropped (and perhaps by the chunk written beside
        # it on another connection), whole chunks only.
        assert status == "processing", status
        assert committed in (1000, 2000, 3000), committed
        released_at = time.monotonic()
        proxy.release()
        done = await wait_done(conn, batch_id)
        resumed_s = done - released_at
        await check_end_state(conn, batch_id, RECORDS, last, versions)
        attempts = await conn.fetchval(
            "SELECT attempts FROM update_batches WHERE id = $1::uuid", batch_id
        )
        assert attempts == 2, attempts  # claimed, cut, taken back once

        # The batch's status tells the partner it all applied, once.
        r = await api.get(
            f"/v1/partner/updates/{batch_id}", headers={"Authorization": headers["Authorization"]}
        )
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["status"] == "done", doc["status"]
        assert doc["counts"]["applied"] == RECORDS, doc["counts"]
        assert sorted(int(x["ref"]) for x in doc["results"]) == list(range(RECORDS))
        assert "database unavailable; retrying" in log.read_text()
        print(
            f"\ncommit cut: the API's cut COMMIT answered 503, the batch stored once (re-sent:"
            f" 200, same batch_id); the worker's cut COMMIT left {committed} of {RECORDS}"
            f" outcomes committed, and the batch was done {resumed_s:.2f} s after the link"
            f" came back, each record applied once",
            flush=True,
        )
    finally:
        proxy.release()
        if worker is not None:
            stop(worker)
        await conn.close()


async def wait_done(conn: asyncpg.Connection, batch_id: str, timeout: float = 60) -> float:
    """When (monotonic) the batch was seen done."""
    deadline = time.monotonic() + timeout
    while (
        await conn.fetchval("SELECT status FROM update_batches WHERE id = $1::uuid", batch_id)
        != "done"
    ):
        assert time.monotonic() < deadline, "batch not done in time"
        await asyncio.sleep(0.05)
    return time.monotonic()


def start_proxied_worker(url: str, proxy: CommitCutProxy, log: Path) -> subprocess.Popen[bytes]:
    """``nser worker`` (2 s lease) connecting through the proxy, its log in ``log``."""
    env = cli_env(url, NSER_DATABASE_URL=proxy.url(service_url(url)))
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "worker",
                "--lease-seconds",
                "2",
                "--poll-seconds",
                "0.2",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
