"""Benchmark: the staff's "my work" answer over full queues and a long closed history.

Seeds, with bulk SQL into a throwaway database (``bench_database``; no households needed):
``--open`` (10,000) data-sharing requests spread over every state that waits on someone,
as many open grievances (received, triaged, re-survey ordered; filed over the last 60
days, so many are overdue), ``--closed`` (100,000) closed requests and as many closed
grievances (the history a queue must not read), 1,000 active agreements and 10,000
expired ones with 5,000 spot checks, and 2,000 open obligations and 20,000 met ones.

Then, for one staff member holding every role but admin (officer, committee, secretary,
me: every section, the largest answer), median of ``--runs`` (7):

- ``my_work``: the service function in process (``app.services.console.queues.my_work``,
  one connection, the page of 50 per section);
- ``http``: ``GET /v1/staff/my-work`` from a running ``nser serve`` (one worker);
- ``baseline``: a bare ``SELECT count(*)`` of each table the queues read
  (``data_requests``, ``grievances``, ``obligations``, ``agreements``) on asyncpg,
  alternated with the others: what merely counting the tables costs.

Target: the whole answer well under 150 ms.

    NSER_BENCH_DB_PREFIX=h_queues_ .venv/bin/python bench/my_work.py
    .venv/bin/python bench/my_work.py --reuse-db DB     # already seeded by this script

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import asyncpg
import httpx
from common import ROOT, bench_database, client_token, log, nser, service

sys.path.insert(0, str(ROOT))

WAITING = (
    "submitted",
    "under_review",
    "reviewed",
    "interviewed",
    "recommended",
    "not_recommended",
    "approved",
)
CLOSED_REQUESTS = ("rejected", "withdrawn", "expired", "revoked")
TABLES = ("data_requests", "grievances", "obligations", "agreements")

# ``$1``: how many; ``$2``: the states to cycle through; ``$3``: the reference prefix.
# Each entered its state up to 90 days ago (updated_at), was submitted before that.
REQUESTS_SQL = """
INSERT INTO data_requests (reference, token_hash, status, organization_key, organization_type,
                           form, created_at, updated_at)
SELECT $3 || lpad(i::text, 7, '0'), sha256(i::text::bytea),
       ($2::text[])[1 + i % cardinality($2::text[])],
       'bench organization ' || i % 997 || '|government', 'government',
       jsonb_build_object('organization', jsonb_build_object(
           'name', 'Bench Organization ' || i % 997, 'type', 'government',
           'email', 'contact' || i || '@bench.example.pk'),
           'categories', jsonb_build_array('iv', 'v'), 'purpose', repeat('x', 400)),
       t - interval '20 days', t
  FROM generate_series(1, $1) AS i,
       LATERAL (SELECT now() - (i::float8 / $1) * interval '90 days') AS x(t)
"""

GRIEVANCES_SQL = """
INSERT INTO grievances (reference, token_hash, cnic, reason, details, status, created_at,
                        updated_at)
SELECT $3 || lpad(i::text, 9, '0'), sha256(i::text::bytea),
       lpad((3520100000000 + i)::text, 13, '0'),
       (ARRAY['wrong_members','wrong_assets','resurvey','deceased_listed','other'])[1 + i % 5],
       'bench', ($2::text[])[1 + i % cardinality($2::text[])], t, t
  FROM generate_series(1, $1) AS i,
       LATERAL (SELECT now() - (i::float8 / $1) * interval '60 days') AS x(t)
"""

AGREEMENTS_SQL = """
WITH org AS (
    INSERT INTO organizations (name, type)
    SELECT 'Bench partner ' || i, 'government' FROM generate_series(1, $1) AS i
    RETURNING id)
INSERT INTO agreements (organization_id, categories, pseudonym_key, valid_from, valid_to,
                        status)
SELECT id, ARRAY['i'], sha256(id::text::bytea),
       now() - (2 + row_number() OVER () % 400) * interval '1 day',
       CASE WHEN $2 = 'active' THEN now() + interval '1 year'
            ELSE now() - interval '1 day' END,
       $2
  FROM org
"""


async def seed(url: str, open_cases: int, closed: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT count(*) FROM data_requests"):
            log("already seeded")
            return
        started = time.monotonic()
        await conn.execute(REQUESTS_SQL, open_cases, list(WAITING), "DSR-2026-")
        await conn.execute(REQUESTS_SQL, closed, list(CLOSED_REQUESTS), "DSR-2025-")
        await conn.execute(
            GRIEVANCES_SQL, open_cases, ["received", "triaged", "resurvey_ordered"], "GRV-2026-"
        )
        await conn.execute(GRIEVANCES_SQL, closed, ["resolved", "rejected"], "GRV-2025-")
        await conn.execute(AGREEMENTS_SQL, 1000, "active")
        await conn.execute(AGREEMENTS_SQL, 10_000, "expired")
        # Spot checks of half the active agreements and of expired ones, over two years.
        await conn.execute(
            """INSERT INTO spot_checks (agreement_id, by_client_id, outcome, findings, action,
                                        at)
               SELECT id, 'bench', 'passed', 'in order', 'none',
                      now() - (random() * 730) * interval '1 day'
                 FROM agreements, generate_series(1, 1) WHERE random() < 0.5
                LIMIT 5000"""
        )
        # Obligations: 2,000 open (due from 60 days ago to 300 days ahead), 20,000 met.
        await conn.execute(
            """INSERT INTO obligations (request_id, kind, description, due_on, status)
               SELECT r.id, 'updates', 'Send updates monthly', current_date + g % 360 - 60,
                      CASE WHEN g <= 2000 THEN 'open' ELSE 'met' END
                 FROM generate_series(1, 22000) AS g
                 JOIN data_requests r
                   ON r.reference = 'DSR-2026-' || lpad((1 + g % $1)::text, 7, '0')""",
            open_cases,
        )
        await conn.execute("ANALYZE")
        await conn.execute("VACUUM (ANALYZE) data_requests, grievances, obligations, agreements")
        log(f"seeded in {time.monotonic() - started:.1f} s")
    finally:
        await conn.close()


def staff(url: str) -> dict[str, str]:
    roles = "officer,committee,secretary,me"
    made: dict[str, str] = json.loads(
        nser(["staff", "create", "--name", "Bench staff", "--role", roles, "--json"], url)
    )
    return made


async def timed(job: Any) -> float:
    started = time.perf_counter()
    await job()
    return (time.perf_counter() - started) * 1000


async def measure(url: str, base: str, credentials: dict[str, str], runs: int) -> dict[str, Any]:
    from app.auth.partner import Principal
    from app.auth.scopes import staff_scopes
    from app.services.console import queues

    roles = frozenset({"officer", "committee", "secretary", "me"})
    principal = Principal(
        client_id=credentials["client_id"],
        kind="staff",
        scopes=staff_scopes(roles),
        roles=roles,
    )
    token = client_token(base, credentials)
    conn = await asyncpg.connect(url)
    try:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:

            async def bare() -> None:
                for table in TABLES:
                    await conn.fetchval(f"SELECT count(*) FROM {table}")

            async def service_call() -> None:
                await queues.my_work(conn, principal)

            async def http_call() -> None:
                answer = await client.get("/v1/staff/my-work")
                answer.raise_for_status()

            for job in (bare, service_call, http_call):  # warm caches and connections
                await job()
            times: dict[str, list[float]] = {"baseline": [], "my_work": [], "http": []}
            for i in range(runs):
                times["baseline"].append(await timed(bare))
                times["my_work"].append(await timed(service_call))
                times["http"].append(await timed(http_call))
                log(
                    f"run {i + 1}: my_work {times['my_work'][-1]:.1f} ms, http "
                    f"{times['http'][-1]:.1f} ms, baseline {times['baseline'][-1]:.1f} ms"
                )
            answer = (await client.get("/v1/staff/my-work")).json()
        counts = {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}
    finally:
        await conn.close()
    medians = {name: round(statistics.median(values), 2) for name, values in times.items()}
    return {
        "bench": "my_work",
        "runs": runs,
        "rows": counts,
        "queues": {
            name: answer[name]["count"]
            for name in ("requests", "grievances", "obligations", "spot_checks")
        },
        "answer_bytes": len(json.dumps(answer)),
        "median_ms": medians,
        "my_work_vs_baseline": round(medians["my_work"] / medians["baseline"], 2),
        "http_vs_baseline": round(medians["http"] / medians["baseline"], 2),
        "target_ms": 150,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reuse-db", help="a database this script seeded (name or URL)")
    ap.add_argument("--open", type=int, default=10_000, help="open requests, open grievances")
    ap.add_argument("--closed", type=int, default=100_000, help="closed requests, grievances")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the fresh database")
    args = ap.parse_args()
    with bench_database(args.reuse_db, 0, keep=args.keep) as url:
        asyncio.run(seed(url, args.open, args.closed))
        credentials = staff(url)
        env = {
            "NSER_DATABASE_URL": url,
            "NSER_ENVIRONMENT": "test",
            "NSER_LOG_LEVEL": "WARNING",
            "NSER_IN_PROCESS_WORKERS": "0",
            "NSER_TOKEN_LIMITS": "100000/minute",
        }
        with service(env) as (_, base):
            result = asyncio.run(measure(url, base, credentials, args.runs))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
