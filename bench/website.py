"""Benchmark: the website's pages against the API endpoints they show, in one server.

    .venv/bin/python bench/website.py                      # a fresh 50,000-household registry
    .venv/bin/python bench/website.py --reuse-db DB        # an already seeded, migrated one

A page adds rendering (Jinja2, the Urdu catalogue, Babel), CSRF and security headers to the
service call the API makes. Each pair is measured in the same `nser serve` (one worker),
alternating, with the same client (httpx, ``--concurrency`` requests in flight, for
``--seconds`` each), and reported as the page's requests/s over the API's (medians of
``--runs``):

- look-up: ``POST /check`` (Urdu, a CNIC in the body, the CSRF token) against
  ``GET /v1/public/scores/{cnic}``, over the same CNICs; the limits are lifted for the
  measurement (``NSER_PUBLIC_LOOKUP_LIMITS``, ``NSER_CHECK_FREE_LOOKUPS``);
- statistics: ``GET /statistics?province=PK6`` against the summary it renders,
  ``GET /v1/public/summaries?group_by=district,poverty_band&province=PK6`` (both warm:
  the summary cache is shared);
- the home page alone (requests/s), and every page's HTML size in both languages.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
from common import bench_database, log, service

Call = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


def env(url: str) -> dict[str, str]:
    return {
        "NSER_DATABASE_URL": url,
        "NSER_ENVIRONMENT": "test",
        "NSER_LOG_LEVEL": "WARNING",
        "NSER_PUBLIC_LOOKUP_LIMITS": "100000000/minute",
        "NSER_CHECK_FREE_LOOKUPS": "10000",
        "NSER_IN_PROCESS_WORKERS": "0",
    }


async def rate(base: str, call: Call, seconds: float, concurrency: int) -> float:
    """Requests/s of ``call`` with ``concurrency`` in flight for ``seconds``."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        await call(client, 0)  # cookies, warm caches
        done = 0
        deadline = time.perf_counter() + seconds
        counter = itertools.count()

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                answer = await call(client, next(counter))
                if answer.status_code not in (200, 201):
                    raise SystemExit(f"{answer.request.url}: {answer.status_code}")
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


async def measure(base: str, cnics: list[str], args: argparse.Namespace) -> dict[str, Any]:
    csrf: dict[str, str] = {}

    async def check_page(client: httpx.AsyncClient, i: int) -> httpx.Response:
        if not csrf:
            form = await client.get("/check?lang=ur")
            found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', form.text)
            assert found, form.text[:500]
            csrf["token"] = found.group(1)
        return await client.post(
            "/check?lang=ur",
            data={"csrf_token": csrf["token"], "cnic": cnics[i % len(cnics)]},
        )

    async def check_api(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get(f"/v1/public/scores/{cnics[i % len(cnics)]}")

    async def statistics_page(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get("/statistics?province=PK6&lang=ur")

    async def statistics_api(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get(
            "/v1/public/summaries",
            params={"group_by": "district,poverty_band", "province": "PK6"},
        )

    async def home(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get("/?lang=ur")

    pairs = {"lookup": (check_page, check_api), "statistics": (statistics_page, statistics_api)}
    out: dict[str, Any] = {}
    for name, (page, api) in pairs.items():
        page_rates, api_rates = [], []
        for run in range(args.runs):
            csrf.clear()
            page_rates.append(await rate(base, page, args.seconds, args.concurrency))
            api_rates.append(await rate(base, api, args.seconds, args.concurrency))
            log(f"{name} run {run + 1}: page {page_rates[-1]:.0f}/s, api {api_rates[-1]:.0f}/s")
        out[f"{name}_page_per_s"] = round(statistics.median(page_rates))
        out[f"{name}_api_per_s"] = round(statistics.median(api_rates))
        out[f"{name}_ratio"] = round(
            statistics.median(p / a for p, a in zip(page_rates, api_rates, strict=True)), 2
        )
    homes = [await rate(base, home, args.seconds, args.concurrency) for _ in range(args.runs)]
    out["home_per_s"] = round(statistics.median(homes))
    sizes: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for path in ("/", "/check", "/statistics", "/map", "/apply"):
            for lang in ("en", "ur"):
                answer = await client.get(f"{path}?lang={lang}")
                sizes[f"{path} {lang}"] = len(answer.content)
    out["html_bytes"] = sizes
    return out


async def sample_cnics(url: str, n: int) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT cnic FROM members WHERE cnic IS NOT NULL AND deceased_on IS NULL "
            "ORDER BY id LIMIT $1",
            n,
        )
    finally:
        await conn.close()
    return [row["cnic"] for row in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--households", type=int, default=50_000)
    ap.add_argument("--reuse-db", default=None, help="an already seeded database (name or URL)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    with bench_database(args.reuse_db, args.households) as url:
        cnics = asyncio.run(sample_cnics(url, 5000))
        with service(env(url)) as (_, base):
            result = asyncio.run(measure(base, cnics, args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
