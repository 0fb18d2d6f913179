"""Crashes while a batch is processed: SIGKILLed worker, dropped connections, two workers.

Each scenario ends with every record holding exactly one outcome and the registry in the
state the batch implies (the last phone per household, one version step per change). Each
also proves that its fault really struck mid-batch (the batch still processing, with some
but not all outcomes, right after it), and the two-worker scenario that both workers
claimed batches.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import (
    ROOT,
    cli_env,
    fresh_database,
    make_settings,
    open_client,
)
from updates_helpers import headers, updates_partner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=1500, seed=3) as db:
        yield db


@pytest.fixture(scope="module")
async def api(url: str) -> AsyncIterator[httpx.AsyncClient]:
    # No in-process workers: only the `nser worker` processes of each test apply batches.
    async for c in open_client(make_settings(url, in_process_workers=0)):
        yield c


def start_worker(url: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``nser worker`` with a 2 s lease; its JSON log lines go to ``log`` if given."""
    with open(log or os.devnull, "wb") as out:
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
            env=cli_env(url),
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def mid_batch(conn: asyncpg.Connection, batch_id: str, n: int) -> int:
    """Asserts the batch is still being processed, with some but not all of its ``n``
    outcomes stored; returns how many."""
    status = await conn.fetchval("SELECT status FROM update_batches WHERE id = $1", batch_id)
    stored: int = await conn.fetchval(
        "SELECT count(*) FROM update_results WHERE batch_id = $1", batch_id
    )
    assert status == "processing", status
    assert 0 < stored < n, stored
    return stored


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def post_phones(
    api: httpx.AsyncClient, partner: dict[str, str], conn: asyncpg.Connection, n: int, tag: int
) -> tuple[str, dict[int, str]]:
    """A batch of n phone changes over every household; returns its id and the end state."""
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM households ORDER BY id")]
    records: list[dict[str, Any]] = []
    last: dict[int, str] = {}
    for i in range(n):
        hid = ids[(i * 7) % len(ids)]
        phone = f"+923{tag:02d}{i:07d}"
        records.append({"ref": str(i), "kind": "phone_change", "household_id": hid, "phone": phone})
        last[hid] = phone
    r = await api.post("/v1/partner/updates", json={"records": records}, headers=headers(partner))
    assert r.status_code == 202, r.text
    return r.json()["batch_id"], last


async def wait_results(
    conn: asyncpg.Connection, batch_id: str, at_least: int, timeout: float
) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM update_results WHERE batch_id = $1", batch_id
        )
        if n >= at_least:
            return n
        assert time.monotonic() < deadline, f"only {n} of {at_least} outcomes in time"
        await asyncio.sleep(0.02)


async def wait_done(conn: asyncpg.Connection, batch_id: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while (
        await conn.fetchval("SELECT status FROM update_batches WHERE id = $1", batch_id) != "done"
    ):
        assert time.monotonic() < deadline, "batch not done in time"
        await asyncio.sleep(0.2)


async def check_end_state(
    conn: asyncpg.Connection, batch_id: str, n: int, last: dict[int, str], versions: dict[int, int]
) -> None:
    per_position = await conn.fetch(
        "SELECT position, count(*) AS c FROM update_results WHERE batch_id = $1 GROUP BY 1",
        batch_id,
    )
    assert len(per_position) == n
    assert {r["c"] for r in per_position} == {1}
    applied = await conn.fetchval(
        "SELECT count(*) FROM update_results WHERE batch_id = $1 AND outcome = 'applied'", batch_id
    )
    assert applied == n
    # Applied exactly once: one history row and one version step per record.
    assert (
        await conn.fetchval("SELECT count(*) FROM household_history WHERE batch_id = $1", batch_id)
        == n
    )
    rows = await conn.fetch(
        "SELECT id, phone, version FROM households WHERE id = ANY($1)", list(last)
    )
    steps: dict[int, int] = {}
    for r in await conn.fetch(
        "SELECT household_id, count(*) AS c FROM household_history WHERE batch_id = $1 GROUP BY 1",
        batch_id,
    ):
        steps[r["household_id"]] = r["c"]
    for r in rows:
        assert r["phone"] == last[r["id"]]
        assert r["version"] == versions[r["id"]] + steps[r["id"]]


async def _versions(conn: asyncpg.Connection) -> dict[int, int]:
    return {r["id"]: r["version"] for r in await conn.fetch("SELECT id, version FROM households")}


async def test_sigkilled_worker_is_replaced_and_nothing_applies_twice(
    url: str, api: httpx.AsyncClient
) -> None:
    partner = await updates_partner(url, api, "Crash A")
    conn = await asyncpg.connect(url)
    try:
        versions = await _versions(conn)
        batch_id, last = await post_phones(api, partner, conn, 20_000, 1)
        worker = start_worker(url)
        await wait_results(conn, batch_id, 3000, 60)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        stored = await mid_batch(conn, batch_id, 20_000)
        started = time.monotonic()
        replacement = start_worker(url)
        try:
            # The figure: how long the batch waited (the process starting, the dead
            # worker's 2 s lease running out) before the replacement stored an outcome.
            await wait_results(conn, batch_id, stored + 1, 60)
            resumed_s = time.monotonic() - started
            await wait_done(conn, batch_id)
            done_s = time.monotonic() - started
        finally:
            stop(replacement)
        await check_end_state(conn, batch_id, 20_000, last, versions)
        print(
            f"\nkill -9 of the ingest worker after {stored} of 20000 records: a new worker"
            f" (2 s lease) stored its first outcome {resumed_s:.1f} s after it was started,"
            f" the batch done after {done_s:.1f} s, every record applied once",
            flush=True,
        )
    finally:
        await conn.close()


async def test_database_connections_dropped_mid_batch(url: str, api: httpx.AsyncClient) -> None:
    """pg_terminate_backend on the worker's sessions: what a PostgreSQL restart does to it,
    without restarting the server other test sessions on this machine share."""
    partner = await updates_partner(url, api, "Crash B")
    conn = await asyncpg.connect(url)
    worker = start_worker(url)
    try:
        versions = await _versions(conn)
        batch_id, last = await post_phones(api, partner, conn, 20_000, 2)
        stored = 0
        for at in (3000, 9000):
            await wait_results(conn, batch_id, at, 60)
            killed = await conn.fetchval(
                """SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
                    WHERE application_name = 'nser-worker' AND datname = current_database()"""
            )
            assert killed >= 1
            # The sessions are gone (pg_terminate_backend waited for them): the batch was
            # cut with work left, and it moved on since the previous cut.
            now = await mid_batch(conn, batch_id, 20_000)
            assert now > stored
            stored = now
        await wait_done(conn, batch_id)
        await check_end_state(conn, batch_id, 20_000, last, versions)
    finally:
        stop(worker)
        await conn.close()


async def test_two_workers_never_double_apply(
    url: str, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Four batches, two workers. The first worker is paused (SIGSTOP) as soon as it has
    claimed a batch, so the second must claim the others, and takes the paused one's over
    once its 2 s lease lapses; the first then resumes to find its lease lost. Each worker's
    log shows what it claimed."""
    partner = await updates_partner(url, api, "Crash C")
    conn = await asyncpg.connect(url)
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        versions = await _versions(conn)
        batches = [await post_phones(api, partner, conn, 4000, 10 + i) for i in range(4)]
        ids = [b for b, _ in batches]

        def claimed_by(proc: subprocess.Popen[bytes]) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM update_batches WHERE id = ANY($1::uuid[])"
                        " AND split_part(claimed_by, ':', 2) = $2",
                        ids,
                        str(proc.pid),
                    )
                )

            return check

        workers.append(start_worker(url, logs[0]))
        await wait_for(claimed_by(workers[0]))
        workers[0].send_signal(signal.SIGSTOP)
        workers.append(start_worker(url, logs[1]))
        await wait_for(claimed_by(workers[1]))
        workers[0].send_signal(signal.SIGCONT)
        for batch_id, _ in batches:
            await wait_done(conn, batch_id)
        for log in logs:
            claims = [line for line in log.read_text().splitlines() if "batch claimed" in line]
            assert claims, f"{log.name}: this worker claimed no batch"
        total = await conn.fetchval(
            "SELECT count(*) FROM household_history WHERE batch_id = ANY($1)",
            [b for b, _ in batches],
        )
        assert total == 16_000
        final = await _versions(conn)
        assert sum(final.values()) - sum(versions.values()) == 16_000
        for batch_id, _ in batches:
            assert (
                await conn.fetchval(
                    "SELECT count(DISTINCT position) FROM update_results WHERE batch_id = $1",
                    batch_id,
                )
                == 4000
            )
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGCONT)
            stop(w)
        await conn.close()
