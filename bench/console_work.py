"""Benchmark: the staff console's "My work" page over full queues, signed in, over HTTP.

Seeds with ``bench/my_work.py``'s bulk SQL (imported, the same data): ``--open`` (10,000)
waiting data-sharing requests and as many open grievances, ``--closed`` (100,000 by
default here 0: see bench/README.md) closed ones, agreements, spot checks and obligations.
One staff member holds officer, committee, secretary and me (every section: the largest
page) and has a console session (its passkey and session rows written as a sign-in
would). Then, from a running ``nser serve`` (one worker), median of ``--runs`` (7):

- ``page``: ``GET /staff/`` with the session cookie: the whole HTML page (the session read
  and touched, the four queues, 25 items a section, rendered in English);
- ``baseline``: ``GET /v1/staff/my-work?limit=25`` with a bearer token: the same queues as
  JSON, alternated with the page.

Target: the page under 150 ms.

    NSER_BENCH_DB_PREFIX=h_conreq_ .venv/bin/python bench/console_work.py

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
from typing import Any

import asyncpg
import httpx
from common import ROOT, bench_database, client_token, log, service
from my_work import seed, staff, timed

sys.path.insert(0, str(ROOT))

ORIGIN = "http://localhost:8000"


async def open_session(url: str, staff_id: str) -> str:
    """A console session of ``staff_id``: a passkey row and a session, as a sign-in makes."""
    from app.services.staff import sessions

    conn = await asyncpg.connect(url)
    try:
        passkey_id = await conn.fetchval(
            """INSERT INTO staff_passkeys (staff_id, credential_id, public_key, label)
               VALUES ($1, $2, $3, 'bench') RETURNING id""",
            staff_id,
            secrets.token_bytes(32),
            secrets.token_bytes(77),
        )
        return await sessions.open_session(conn, staff_id, passkey_id)
    finally:
        await conn.close()


async def measure(base: str, credentials: dict[str, str], cookie: str, runs: int) -> dict[str, Any]:
    token = client_token(base, credentials)
    async with (
        httpx.AsyncClient(base_url=base, cookies={"nser_staff": cookie}, timeout=30) as browser,
        httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as api,
    ):
        sizes: dict[str, int] = {}

        async def page() -> None:
            answer = await browser.get("/staff/?lang=en")
            answer.raise_for_status()
            assert 'id="requests"' in answer.text, answer.text[:300]
            sizes["page"] = len(answer.content)

        async def baseline() -> None:
            answer = await api.get("/v1/staff/my-work", params={"limit": 25})
            answer.raise_for_status()
            sizes["baseline"] = len(answer.content)

        for job in (page, baseline):  # warm caches and connections
            await job()
        times: dict[str, list[float]] = {"page": [], "baseline": []}
        for i in range(runs):
            times["baseline"].append(await timed(baseline))
            times["page"].append(await timed(page))
            log(
                f"run {i + 1}: page {times['page'][-1]:.1f} ms, json {times['baseline'][-1]:.1f} ms"
            )
        counts = (await api.get("/v1/staff/my-work", params={"limit": 1})).json()
    medians = {name: round(statistics.median(values), 2) for name, values in times.items()}
    return {
        "bench": "console_work",
        "runs": runs,
        "queues": {
            name: counts[name]["count"]
            for name in ("requests", "grievances", "obligations", "spot_checks")
        },
        "bytes": sizes,
        "median_ms": medians,
        "page_vs_baseline": round(medians["page"] / medians["baseline"], 2),
        "target_ms": 150,
        "under_target": medians["page"] < 150,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reuse-db", help="a database bench/my_work.py seeded (name or URL)")
    ap.add_argument("--open", type=int, default=10_000, help="open requests, open grievances")
    ap.add_argument("--closed", type=int, default=0, help="closed requests, grievances")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the fresh database")
    args = ap.parse_args()
    if args.runs < 5:
        ap.error("--runs: at least 5")
    with bench_database(args.reuse_db, 0, keep=args.keep) as url:
        asyncio.run(seed(url, args.open, args.closed))
        credentials = staff(url)
        cookie = asyncio.run(open_session(url, credentials["staff_id"]))
        env = {
            "NSER_DATABASE_URL": url,
            "NSER_ENVIRONMENT": "test",
            "NSER_LOG_LEVEL": "WARNING",
            "NSER_IN_PROCESS_WORKERS": "0",
            "NSER_TOKEN_LIMITS": "100000/minute",
            "NSER_STAFF_ORIGIN": ORIGIN,
        }
        with service(env) as (_, base):
            result = asyncio.run(measure(base, credentials, cookie, args.runs))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
