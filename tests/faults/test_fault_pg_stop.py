"""PostgreSQL stopped with ``-m immediate`` for 10 s under load, then started again.

One `nser serve` process (with its in-process update worker) on a PostgreSQL of the
test's own (tests/private_pg.py), while clients do public look-ups, send update batches
(re-sent with the same Idempotency-Key until acknowledged) and hold an NDJSON and a CSV
export open in the middle of their bodies. The server is then killed (every backend at
once, no checkpoint) and started 10 s later (crash recovery). The test shows:

- look-ups answer only 200, or 503 with Retry-After while the database is down, and 200
  again within 2 s of the database accepting connections (measured from the first
  connection the test itself gets), from the same `nser serve` process;
- every batch acknowledged (202, or 200 for a re-sent one) is applied exactly once, by
  the service's own worker, which resumed by itself;
- both exports held across the stop end with an error the client sees (the chunked body
  aborted: httpx ``RemoteProtocolError``), never a body that looks complete.

The figures are printed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import private_pg
import pytest
from conftest import cli_env, run_cli
from drill.drill_load import (
    Lookup,
    Recorder,
    check_batches,
    export_open,
    lookups,
    now,
    updates,
    wait_applied,
)
from faults.clients import Held, held_export
from partner_helpers import create_partner, get_token
from server import serve

pytestmark = pytest.mark.slow

# Enough that each held body (the CSV is the smaller: about 630 bytes a household) is more
# than the service's socket can buffer (tcp_wmem up to 4 MiB) once its reader stops.
HOUSEHOLDS = 10_000
DOWN_SECONDS = 10.0
# The bound: look-ups answer 200 again within 2 s of the database being back.
RECOVERY_LIMIT = 2.0


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with private_pg.private_server("nser-faults-") as started:
        yield started


@pytest.fixture(scope="module")
def url(server: Any) -> str:
    uri: str = server.get_uri()
    run_cli(["db", "upgrade"], uri)
    run_cli(["seed", "--households", str(HOUSEHOLDS), "--seed", "23"], uri)
    return uri


async def first_connection(url: str, host: str) -> float:
    """When (monotonic) a new connection to the database first succeeds, trying every 50 ms."""
    while True:
        try:
            conn = await asyncpg.connect(url, host=host, timeout=1)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        up = now()
        await conn.close()
        return up


async def test_postgresql_stopped_immediately_for_10_seconds(
    server: Any, url: str, tmp_path: Path
) -> None:
    partner = create_partner(
        url,
        name="Faults Programme",
        categories="iv",
        update_kinds="phone_change",
        rate_limit="1000000/minute",
    )
    conn = await asyncpg.connect(url)
    try:
        since = await conn.fetchval("SELECT now()")
        cnics = [
            r["cnic"]
            for r in await conn.fetch(
                "SELECT cnic FROM members WHERE cnic IS NOT NULL AND deceased_on IS NULL"
                " ORDER BY id LIMIT 300"
            )
        ]
        versions = {
            r["id"]: r["version"] for r in await conn.fetch("SELECT id, version FROM households")
        }
    finally:
        await conn.close()
    env = cli_env(
        url,
        NSER_PUBLIC_LOOKUP_LIMITS="1000000/minute",
        NSER_IN_PROCESS_WORKERS="1",
        NSER_PUBLIC_REFRESH_SECONDS="3600",
    )
    host = private_pg.socket_dir(server)
    with serve(env, tmp_path, workers=1, startup_timeout=180) as service:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as client:
            token = await get_token(client, partner["client_id"], partner["client_secret"])
            rec = Recorder()
            stop = asyncio.Event()
            ids = sorted(versions)
            tasks = [
                *(
                    asyncio.create_task(lookups(client, cnics, stop, rec.lookups, 0.05))
                    for _ in "ab"
                ),
                *(
                    asyncio.create_task(updates(client, token, half, stop, rec.batches, 50, 0.3))
                    for half in (ids[0::2], ids[1::2])
                ),
            ]
            await asyncio.sleep(2)
            assert rec.lookups, "no look-up answered in the steady state"
            assert {r.status for r in rec.lookups} == {200}, Counter(r.status for r in rec.lookups)

            # An NDJSON and a CSV export held in the middle of their bodies.
            hold = asyncio.Event()
            held = [Held("application/x-ndjson"), Held("text/csv")]
            firsts = [asyncio.Event() for _ in held]
            readers = [
                asyncio.create_task(held_export(service.base_url, token, h, f, hold))
                for h, f in zip(held, firsts, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 60)
            assert await export_open(url, len(held)), "a held export ended before the fault"

            stopped_at = now()
            await asyncio.to_thread(private_pg.stop_immediately, server)
            hold.set()
            await asyncio.sleep(DOWN_SECONDS)
            started_at = now()
            up = asyncio.create_task(first_connection(url, host))
            await asyncio.to_thread(private_pg.start, server)
            up_at = await asyncio.wait_for(up, 60)
            # Until look-ups have answered 200 for 3 s since the database came back.
            deadline = up_at + 60
            while now() < deadline:
                back = recovered(rec.lookups, stopped_at)
                if back is not None and now() - back > 3:
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
            await asyncio.wait_for(asyncio.gather(*readers), 60)
            applied_s = await wait_applied(url, rec.batches)
            await check_batches(url, rec.batches, partner["client_id"], since, versions)
        assert service.process.poll() is None, "nser serve exited"

    # Look-ups: 200, or 503 with Retry-After; 503 only between the stop and the return.
    statuses = Counter(r.status for r in rec.lookups)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0, "no look-up failed: the stop did not reach the service"
    assert all(r.retry_after for r in rec.lookups if r.status == 503)
    back = recovered(rec.lookups, stopped_at)
    assert back is not None, "look-ups never answered 200 again"
    for r in rec.lookups:
        if r.status != 200:
            assert stopped_at <= r.end <= back, r
    recovery_s = back - up_at
    assert recovery_s <= RECOVERY_LIMIT, (
        f"look-ups answered 200 again {recovery_s:.2f} s after the database was back"
    )
    # The held exports: cut, and the client can tell.
    for h in held:
        assert h.status == 200, h
        assert not h.clean_end, f"the {h.accept} export held across the stop ended whole: {h}"
        assert h.error is not None, h
        assert "RemoteProtocolError" in h.error, h
    resent = sum(1 for b in rec.batches if len(b.attempts) > 1)
    print(
        f"\npostgresql -m immediate: down {started_at - stopped_at:.1f} s;"
        f" accepting connections {up_at - started_at:.2f} s after the start;"
        f" look-ups 200 again {max(recovery_s, 0):.2f} s after that (bound {RECOVERY_LIMIT} s),"
        f" {statuses[503]} look-ups answered 503 with Retry-After, {statuses[200]} 200;"
        f" {len(rec.batches)} batches acknowledged ({resent} re-sent), all applied once,"
        f" {applied_s:.1f} s after the load stopped; the NDJSON and CSV exports held across"
        f" the stop were cut ({', '.join(str(h.lines) for h in held)} lines read)",
        flush=True,
    )


def recovered(results: list[Lookup], since: float) -> float | None:
    """When the first 200 after the last failure since ``since`` was answered."""
    ordered = sorted((r for r in results if r.end >= since), key=lambda r: r.end)
    failed = [r for r in ordered if r.status != 200]
    if not failed:
        return None
    after = [r for r in ordered if r.status == 200 and r.end > failed[-1].end]
    return after[0].end if after else None
