"""Benchmark: public summaries and maps while the registry is being updated.

``nser serve`` (2 workers, no in-process worker) and a separate ``nser worker`` (which
applies the update batches and refreshes the public products) run on the registry. For
``--seconds`` a partner sends a batch of ``--batch`` (2,000) phone changes every
``--every`` (3) seconds through ``POST /v1/partner/updates``, while ``--concurrency``
clients ask, in turn, the public province x poverty band x gender summary, one province's
districts x poverty band (a random province each time), the resolution-5 poverty-rate map
of the country, and the baseline: the public score look-up of a random CNIC (one indexed
row, the service's cheapest read), all over HTTP with the same client. Reported: p50 and
p99 latency per product and requests answered, each product's p99 as a ratio to the
baseline's, the batches applied and the refreshes made during the run.

    .venv/bin/python bench/public_products.py --households 100000
    .venv/bin/python bench/public_products.py --reuse-db nser_pubprod_1m --seconds 120

Target (at 10M households): every product's p99 under 50 ms, whatever ingestion is doing.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg
import httpx
from common import ROOT, bench_database, client_token, create_partner, log, nser, service

PRODUCTS = ("summary_country", "summary_province", "map_res5", "baseline_lookup")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def clients(
    base: str, provinces: list[str], cnics: list[str], seconds: float, concurrency: int
) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {p: [] for p in PRODUCTS}
    statuses: dict[str, dict[int, int]] = {p: {} for p in PRODUCTS}
    deadline = time.monotonic() + seconds
    rng = random.Random(5)

    def request(product: str) -> tuple[str, dict[str, Any]]:
        if product == "summary_country":
            return "/v1/public/summaries", {"group_by": "province,poverty_band,gender"}
        if product == "summary_province":
            return "/v1/public/summaries", {
                "group_by": "district,poverty_band",
                "province": rng.choice(provinces),
            }
        if product == "map_res5":
            return "/v1/public/maps/poverty_rate", {"resolution": 5}
        return f"/v1/public/scores/{rng.choice(cnics)}", {}

    async def one(c: httpx.AsyncClient, k: int) -> None:
        i = k
        while time.monotonic() < deadline:
            product = PRODUCTS[i % len(PRODUCTS)]
            i += 1
            path, params = request(product)
            started = time.perf_counter()
            r = await c.get(path, params=params)
            elapsed = time.perf_counter() - started
            statuses[product][r.status_code] = statuses[product].get(r.status_code, 0) + 1
            if r.status_code == 200:
                latencies[product].append(elapsed)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as c:
        await asyncio.gather(*(one(c, k) for k in range(concurrency)))
    out: dict[str, Any] = {}
    for product in PRODUCTS:
        ms = [x * 1000 for x in latencies[product]]
        out[product] = {
            "answered": len(ms),
            "statuses": {str(k): v for k, v in sorted(statuses[product].items())},
            "p50_ms": round(statistics.median(ms), 2) if ms else None,
            "p99_ms": round(percentile(ms, 0.99), 2) if ms else None,
        }
    return out


def record(i: int, household: int, survey: bool, rng: random.Random) -> dict[str, Any]:
    if survey:  # a re-survey: the household is scored again (its district's counts change)
        return {
            "ref": str(i),
            "kind": "household_survey",
            "household_id": household,
            "indicators": {"rooms": rng.randint(1, 8), "cows": rng.randint(0, 4)},
        }
    return {
        "ref": str(i),
        "kind": "phone_change",
        "household_id": household,
        "phone": f"+9230{rng.randrange(10**8):08d}",
    }


async def updates(
    base: str,
    token: str,
    households: list[int],
    batch: int,
    every: float,
    seconds: float,
    surveys: float,
) -> list[str]:
    """A batch of ``batch`` records every ``every`` seconds (phone changes, and a share
    ``surveys`` of re-surveys); the batch ids."""
    sent: list[str] = []
    deadline = time.monotonic() + seconds
    rng = random.Random(9)
    async with httpx.AsyncClient(base_url=base, timeout=120) as c:
        while time.monotonic() < deadline:
            started = time.monotonic()
            records = [
                record(i, h, rng.random() < surveys, rng)
                for i, h in enumerate(rng.sample(households, batch))
            ]
            r = await c.post(
                "/v1/partner/updates",
                json={"records": records},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
            )
            assert r.status_code == 202, r.text
            sent.append(r.json()["batch_id"])
            await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))
    return sent


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    households_n = await conn.fetchval("SELECT count(*) FROM households")
    provinces = [
        r["province_code"]
        for r in await conn.fetch("SELECT DISTINCT province_code FROM households ORDER BY 1")
    ]
    cnics = [
        r["cnic"]
        for r in await conn.fetch(
            "SELECT cnic FROM members TABLESAMPLE SYSTEM (1) WHERE cnic IS NOT NULL LIMIT 5000"
        )
    ]
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM households TABLESAMPLE SYSTEM (5)")]
    partner = create_partner(url, "iii", update_kinds="phone_change,household_survey")
    first_refresh = await conn.fetchval("SELECT coalesce(max(id), 0) FROM public_refreshes")
    env = {
        "NSER_DATABASE_URL": url,
        "NSER_ENVIRONMENT": "test",
        "NSER_LOG_LEVEL": "WARNING",
        "NSER_IN_PROCESS_WORKERS": "0",
        "NSER_PUBLIC_LOOKUP_LIMITS": "100000000/minute",
        "NSER_PARTNER_DEFAULT_LIMITS": "100000/minute",
        "NSER_UPDATES_RECORDS_PER_HOUR": "100000000",
        "NSER_PUBLIC_REFRESH_SECONDS": str(args.refresh_seconds),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with service(env, workers=2) as (_server, base):
            token = client_token(base, partner)
            # Warm: every product answered once (from the refresh's pre-rendered answers).
            await clients(base, provinces, cnics, 2, 4)
            log(f"measuring {args.seconds:.0f} s at concurrency {args.concurrency}")
            load = asyncio.create_task(
                updates(base, token, ids, args.batch, args.every, args.seconds, args.surveys)
            )
            measured = await clients(base, provinces, cnics, args.seconds, args.concurrency)
            batches = await load
            done = 0
            async with httpx.AsyncClient(base_url=base, timeout=60) as c:
                for batch in batches:
                    r = await c.get(
                        f"/v1/partner/updates/{batch}",
                        params={"results": "false"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    done += r.json()["status"] == "done"
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    refreshes = await conn.fetch(
        'SELECT "full", districts, answers, seconds FROM public_refreshes WHERE id > $1',
        first_refresh,
    )
    await conn.close()
    baseline = measured["baseline_lookup"]["p99_ms"]
    return {
        "bench": "public_products",
        "households": households_n,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "batches_sent": len(batches),
        "batches_done": done,
        "records_per_batch": args.batch,
        "survey_share": args.surveys,
        "refreshes": len(refreshes),
        "refresh_seconds_max": round(max((r["seconds"] for r in refreshes), default=0), 2),
        **{p: measured[p] for p in PRODUCTS},
        "p99_ratio_to_baseline": {
            p: round(measured[p]["p99_ms"] / baseline, 2)
            for p in PRODUCTS[:-1]
            if measured[p]["p99_ms"] and baseline
        },
        "target_met": all(
            (measured[p]["p99_ms"] or 1e9) < 50 and measured[p]["answered"] > 0
            for p in PRODUCTS[:-1]
        ),
        "database": url.rpartition("/")[2],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=100_000)
    ap.add_argument("--reuse-db", default=None, help="an already seeded database (name or URL)")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2000, help="records per batch")
    ap.add_argument(
        "--surveys",
        type=float,
        default=0.0,
        help="share of re-surveys among the records (they change what the public counts)",
    )
    ap.add_argument("--every", type=float, default=3.0, help="seconds between batches")
    ap.add_argument("--refresh-seconds", type=float, default=60.0)
    args = ap.parse_args()
    with bench_database(args.reuse_db, args.households) as url:
        if args.reuse_db:
            nser(["db", "upgrade"], url)
            nser(["products", "refresh"], url)  # the cube describes the registry as it is
        print(json.dumps(asyncio.run(run(args, url))))


if __name__ == "__main__":
    main()
