"""Benchmark: `nser audit verify` incremental (the rows added since the last checkpoint)
against `--full` (the whole chain), on a long audit log.

The log is filled with N (1,000,000) keyed rows continuing its chains (C, 16, taken in
turn, as the service's appends spread over NSER_AUDIT_CHAINS chains), computed here with
the service's own row hash and the process's audit key, and written with one binary COPY
(as the service would have appended them, only faster). Then, R (5) times, alternating:
1,000 more rows are appended and verified incrementally (from the checkpoint the run
before recorded), and the whole chain is verified with ``full``. In process (the CLI adds
its start-up, about a second), medians. The ratio is incremental / full.

    .venv/bin/python bench/audit_verify.py                       # a fresh, empty database
    .venv/bin/python bench/audit_verify.py --reuse-db nser_audit --rows 1000000
    .venv/bin/python bench/audit_verify.py --chains 1              # one chain, as before

Target: the incremental run's time follows the rows it checks, not the log: with 1,000 new
rows on 1,000,000, under 1% of the full run's. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
from common import ROOT, bench_database, log, nser

sys.path.insert(0, str(ROOT))

BATCH = 50_000


async def append_rows(conn: asyncpg.Connection, rows: int, chains: int) -> None:
    """``rows`` keyed rows after the log's last one, in ``chains`` chains taken in turn, as
    ``trail.append`` would write them."""
    from app.services.audit import trail

    key = trail.current_keyring().current
    last = await conn.fetchrow("SELECT id, at FROM audit_log ORDER BY id DESC LIMIT 1")
    heads = {
        r["chain"]: bytes(r["hash"])
        for r in await conn.fetch(
            "SELECT DISTINCT ON (chain) chain, hash FROM audit_log ORDER BY chain, id DESC"
        )
    }
    prev_id = last["id"] if last else 0
    at: datetime = last["at"] if last else await conn.fetchval("SELECT now()")
    written = 0
    while written < rows:
        batch = []
        for _ in range(min(BATCH, rows - written)):
            prev_id += 1
            at += timedelta(microseconds=10)
            chain = prev_id % chains
            prev_hash = heads.get(chain, trail.GENESIS)
            rec: dict[str, Any] = {
                "actor_type": "partner",
                "client_id": "bench-client",
                "agreement_id": None,
                "organization_id": None,
                "endpoint": "GET /v1/partner/scores/{cnic}",
                "filters": {"cnic": "35202*****673"},
                "dimensions": [],
                "households": 1,
                "members": 6,
                "request_id": f"bench-{prev_id}",
            }
            digest = trail.row_hash(prev_hash, prev_id, at, rec, key, chain)
            batch.append(
                (
                    prev_id,
                    at,
                    rec["actor_type"],
                    rec["client_id"],
                    rec["endpoint"],
                    orjson.dumps(rec["filters"]).decode(),
                    rec["dimensions"],
                    rec["households"],
                    rec["members"],
                    rec["request_id"],
                    key.id,
                    chain,
                    prev_hash,
                    digest,
                )
            )
            heads[chain] = digest
        await conn.copy_records_to_table(
            "audit_log",
            records=batch,
            columns=[
                "id",
                "at",
                "actor_type",
                "client_id",
                "endpoint",
                "filters",
                "dimensions",
                "households",
                "members",
                "request_id",
                "key_id",
                "chain",
                "prev_hash",
                "hash",
            ],
        )
        written += len(batch)
        if rows >= BATCH:
            log(f"appended {written} rows")
    await conn.execute(
        "SELECT setval(pg_get_serial_sequence('audit_log', 'id'), (SELECT max(id) FROM audit_log))"
    )


async def measure(url: str, rows: int, new: int, runs: int, chains: int) -> dict[str, Any]:
    from app.services.audit import trail

    conn = await asyncpg.connect(url)
    try:
        have = await conn.fetchval("SELECT count(*) FROM audit_log")
        if have < rows:
            started = time.perf_counter()
            await append_rows(conn, rows - have, chains)
            log(f"log filled to {rows} rows in {time.perf_counter() - started:.0f} s")
        await conn.execute("VACUUM ANALYZE audit_log")
        first = await trail.verify(conn, full=True)  # a checkpoint at the end; warm caches
        assert first.ok, first.problem
        incremental: list[float] = []
        full: list[float] = []
        checked: list[int] = []
        for i in range(runs):
            await append_rows(conn, new, chains)
            started = time.perf_counter()
            verdict = await trail.verify(conn)
            incremental.append(time.perf_counter() - started)
            assert verdict.ok, verdict.problem
            checked.append(verdict.checked)
            started = time.perf_counter()
            whole = await trail.verify(conn, full=True)
            full.append(time.perf_counter() - started)
            assert whole.ok, whole.problem
            log(
                f"run {i + 1}: incremental {incremental[-1]:.3f} s ({verdict.checked} rows), "
                f"full {full[-1]:.2f} s ({whole.checked} rows)"
            )
        total = whole.rows
    finally:
        await conn.close()
    inc, whole_s = statistics.median(incremental), statistics.median(full)
    return {
        "bench": "audit_verify",
        "log_rows": total,
        "chains": chains,
        "new_rows_per_run": new,
        "runs": runs,
        "incremental_rows_checked_median": statistics.median(checked),
        "incremental_seconds_median": round(inc, 4),
        "full_seconds_median": round(whole_s, 3),
        "incremental_vs_full": round(inc / whole_s, 5),
        "target_met": inc < 0.01 * whole_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reuse-db", default=None, help="a database to fill (name or URL)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in the log (N)")
    ap.add_argument("--new", type=int, default=1000, help="rows added before each run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--chains", type=int, default=16, help="chains the rows are spread over")
    args = ap.parse_args()
    with bench_database(args.reuse_db, 0) as url:
        if args.reuse_db:
            nser(["db", "upgrade"], url)
        print(json.dumps(asyncio.run(measure(url, args.rows, args.new, args.runs, args.chains))))


if __name__ == "__main__":
    main()
