"""Benchmark: a partner's products over one district, against the bare count of its households.

In process, no HTTP, through the services the routes call, as a partner with an agreement
over the whole country (categories i, ii and vii):

- summary: ``GET /v1/partner/summaries?group_by=district,poverty_band,gender&district=D``
  (``summaries.partner_summary``: geography check, the agreement's lock, the differencing
  check, the GROUP BY, every margin, the query log, the audit row, ``protect``);
- analysis: ``POST /v1/partner/analysis`` of tehsil x poverty band x gender, every measure
  (cut-off 32), over district D (``analysis.run``, stored);
- map: ``GET /v1/partner/maps/poverty_rate?resolution=7&district=D``, cold (a new cache
  each time: the points, H3, ``protect``, GeoJSON; audited);

- scoped summary: the poverty band x gender table of a partner whose agreement covers
  district D only, with no filter (its agreement's geography is the whole restriction);

each timed against the bare count of D's households in SQL, alternating, medians of
``--runs``. The differencing check (``aggregate.check_overlap``) is timed alone too, in the
same kind of transaction, so that its share can be told apart. ``D`` (``--district``)
defaults to the district with the most households. Every product should cost what the
district costs, not what the registry holds: run it at two sizes (say 100,000 and
1,000,000 households) and compare ``*_ms_per_1000_households`` (flat) and the ratios.

    .venv/bin/python bench/partner_products.py --households 100000
    .venv/bin/python bench/partner_products.py --reuse-db nser_bench_1m --runs 7

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from common import ROOT, bench_database, create_partner, log, nser

sys.path.insert(0, str(ROOT))
os.environ.setdefault("NSER_ENVIRONMENT", "test")  # the development audit key, in process

BARE_SQL = "SELECT count(*) FROM households WHERE district_code = $1"


async def timed(job: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await job()
    return time.perf_counter() - started


async def measure(url: str, runs: int, district: str | None) -> dict[str, Any]:
    from app.auth.partner import load_principal
    from app.schemas.products import AnalysisRequest
    from app.services.disclosure.policy import Policy
    from app.services.products import aggregate, analysis, maps, summaries
    from app.services.sharing.beneficiaries_sql import Filters

    partner = create_partner(url, "i,ii,vii")
    policy = Policy()
    pool = await asyncpg.create_pool(url, min_size=2, max_size=4)
    assert pool is not None
    try:
        await pool.execute("ANALYZE households; ANALYZE members")
        if district is None:
            district = await pool.fetchval(
                "SELECT district_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
            )
        assert district is not None
        total = await pool.fetchval("SELECT count(*) FROM households")
        p = await load_principal(
            pool, {"sub": partner["client_id"], "agreement_id": partner["agreement_id"]}
        )
        local = create_partner(url, "i", geo=(district,))
        scoped = await load_principal(
            pool, {"sub": local["client_id"], "agreement_id": local["agreement_id"]}
        )
        f = Filters(district=[district])
        request = AnalysisRequest.model_validate(
            {
                "rows": ["tehsil"],
                "columns": ["poverty_band", "gender"],
                "measures": ["households", "members", "mean_pmt_score", "share_below"],
                "cut_off": 32,
                "filters": {"district": [district]},
            }
        )
        query = maps.MapQuery("poverty_rate", 7, 32.0, f, scope=p.geo_codes)

        async def overlap() -> None:
            assert p.agreement_id is not None
            async with pool.acquire() as conn, conn.transaction():
                await aggregate.lock_agreement(conn, p.agreement_id)
                await aggregate.check_overlap(conn, p, f, policy.threshold)

        jobs: dict[str, Callable[[], Awaitable[Any]]] = {
            "bare": lambda: pool.fetchval(BARE_SQL, district),
            "summary": lambda: summaries.partner_summary(
                pool, p, ["district", "poverty_band", "gender"], f, policy
            ),
            "analysis": lambda: analysis.run(pool, p, request, policy),
            "map": lambda: maps.partner_map(pool, maps.MapCache(), p, query, policy),
            "scoped_summary": lambda: summaries.partner_summary(
                pool, scoped, ["poverty_band", "gender"], Filters(), policy
            ),
            "overlap_check": overlap,
        }
        for job in jobs.values():  # warm the buffers (and the hexagon outlines) once
            await job()
        times: dict[str, list[float]] = {name: [] for name in jobs}
        for i in range(runs):
            for name, job in jobs.items():
                times[name].append(await timed(job))
            log(
                f"run {i + 1}: "
                + ", ".join(f"{name} {times[name][-1] * 1000:.1f} ms" for name in jobs)
            )
        households = await pool.fetchval(BARE_SQL, district)
        summary = await summaries.partner_summary(
            pool, p, ["district", "poverty_band", "gender"], f, policy
        )
        hexagons = len(
            json.loads((await maps.partner_map(pool, maps.MapCache(), p, query, policy)).body)[
                "features"
            ]
        )
    finally:
        await pool.close()
    med = {name: statistics.median(values) for name, values in times.items()}
    out: dict[str, Any] = {
        "bench": "partner_products",
        "runs": runs,
        "registry_households": total,
        "district": district,
        "district_households": households,
        "bare_count_ms_median": round(med["bare"] * 1000, 2),
    }
    for name in ("summary", "analysis", "map", "scoped_summary", "overlap_check"):
        out[f"{name}_ms_median"] = round(med[name] * 1000, 1)
        out[f"{name}_ms_per_1000_households"] = round(med[name] * 1000 / households * 1000, 2)
        out[f"{name}_vs_bare"] = round(med[name] / med["bare"], 1)
    out["summary_cells_suppressed"] = summary["disclosure"]["suppressed_cells"]
    out["map_hexagons"] = hexagons
    products = ("summary", "analysis", "map", "scoped_summary")
    out["target_met"] = all(med[name] < 1.0 for name in products)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=1_000_000)
    ap.add_argument("--reuse-db", default=None, help="an already seeded database (name or URL)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--district", default=None, help="a district code (default: the largest)")
    args = ap.parse_args()
    with bench_database(args.reuse_db, args.households) as url:
        if args.reuse_db:
            nser(["db", "upgrade"], url)
        result = asyncio.run(measure(url, args.runs, args.district))
    for key, value in result.items():
        print(f"{key}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
