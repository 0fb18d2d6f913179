"""Benchmark: aggregates counted from the registry against the bare SQL they are built on.

Visitors are answered from the public cube the worker refreshes (bench/public_products.py
measures that); what is measured here is the counting straight from the registry: the
partner products' path, and the reference the public cube's answers must equal.

- Summaries: the province × poverty band × gender table with disclosure control on
  (``summaries.public_summary``: the GROUP BY, every margin, primary, dominance and
  complementary suppression, rounding), timed against the bare ``GROUP BY`` in SQL,
  alternating, in the same process. Target: at most 2× the bare query (median of the runs).
- Maps: the resolution-5 poverty-rate map of the country counted cold (COPY, H3, protect,
  GeoJSON: ``maps.compute``, as a partner's map is) and warm (the same query again from a
  partner map cache). Target: under 1 s warm.

    .venv/bin/python bench/summaries.py --households 1000000        # fresh database
    .venv/bin/python bench/summaries.py --reuse-db nser_bench_1m     # already seeded
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
from common import ROOT, bench_database, log, nser

sys.path.insert(0, str(ROOT))

BARE_SQL = """
SELECT h.province_code, h.poverty_band, m.gender,
       count(DISTINCT h.id) AS households, count(*) AS members
  FROM households h JOIN members m ON m.household_id = h.id AND m.deceased_on IS NULL
 GROUP BY 1, 2, 3
"""


async def timed(job: Any) -> float:
    started = time.perf_counter()
    await job()
    return time.perf_counter() - started


async def measure(url: str, runs: int) -> dict[str, Any]:
    from app.services.disclosure.policy import Policy
    from app.services.products import maps
    from app.services.products.summaries import public_summary
    from app.services.registry.version import data_version
    from app.services.sharing.beneficiaries_sql import Filters

    policy = Policy()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    assert pool is not None
    try:
        dims = ["province", "poverty_band", "gender"]
        await public_summary(pool, dims, {}, policy)  # warm the buffers for both
        await pool.fetch(BARE_SQL)
        service: list[float] = []
        bare: list[float] = []
        for i in range(runs):
            service.append(await timed(lambda: public_summary(pool, dims, {}, policy)))
            bare.append(await timed(lambda: pool.fetch(BARE_SQL)))
            log(f"summaries run {i + 1}: {service[-1]:.3f} s vs bare {bare[-1]:.3f} s")
        answer = await public_summary(pool, dims, {}, policy)

        query = maps.MapQuery("poverty_rate", 5, 32.0, Filters())
        version = await data_version(pool)

        def mapped(cache: maps.MapCache) -> Any:
            return cache.get_or_compute(
                query.key(), lambda: maps.compute(pool, query, version, policy)
            )

        cold: list[float] = []
        warm: list[float] = []
        for i in range(runs):
            cache = maps.MapCache()
            cold.append(await timed(lambda c=cache: mapped(c)))
            warm.append(await timed(lambda c=cache: mapped(c)))
            log(f"map run {i + 1}: cold {cold[-1]:.3f} s, warm {warm[-1] * 1000:.2f} ms")
        result = await maps.compute(pool, query, version, policy)
    finally:
        await pool.close()
    s_med, b_med = statistics.median(service), statistics.median(bare)
    return {
        "bench": "summaries",
        "runs": runs,
        "summary_seconds_median": round(s_med, 3),
        "bare_group_by_seconds_median": round(b_med, 3),
        "summary_vs_bare": round(s_med / b_med, 2),
        "summary_target_met": s_med <= 2 * b_med,
        "summary_cells_suppressed": answer["disclosure"]["suppressed_cells"],
        "map_cold_seconds_median": round(statistics.median(cold), 3),
        "map_warm_seconds_median": round(statistics.median(warm), 5),
        "map_target_met": statistics.median(warm) < 1.0,
        "map_hexagons": len(json.loads(result.body)["features"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=1_000_000)
    ap.add_argument("--reuse-db", default=None, help="an already seeded database (name or URL)")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with bench_database(args.reuse_db, args.households) as url:
        if args.reuse_db:
            nser(["db", "upgrade"], url)
        print(json.dumps(asyncio.run(measure(url, args.runs))))


if __name__ == "__main__":
    main()
