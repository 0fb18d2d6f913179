"""Benchmark: what heap order and JIT cost a partner table over one district.

    .venv/bin/python bench/locality.py --reuse-db DB [--district PK520] [--runs 5]

On a seeded registry, the counting statement of a partner summary (tehsil x poverty band
of the district, ``app.services.products.aggregate.interior_sql``) is timed three ways,
alternated, medians of ``--runs``:

- ``district``: as the service runs it (JIT off, the service's connection setting);
- ``district_jit``: the same with PostgreSQL's JIT on (the server's default);
- ``scattered``: the same statement over as many households spread evenly over the heap
  (every k-th id), JIT off: what the district costs when its households do not lie
  together (a registry loaded in random order; the seed before it wrote each chunk in
  village order).

It also prints the heap pages the district's households and members lie on. The ratios
``district_jit / district`` and ``scattered / district`` are the point; the last line is
one JSON object. Nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

import asyncpg
from common import ROOT, log

sys.path.insert(0, str(ROOT))

from app.services.products.aggregate import interior_sql
from app.services.sharing.beneficiaries_sql import Filters, Query


def url_of(db: str) -> str:
    return db if "://" in db else f"postgresql://postgres@127.0.0.1:5432/{db}"


async def run(args: argparse.Namespace) -> dict[str, object]:
    conn = await asyncpg.connect(url_of(args.reuse_db))
    try:
        q = Query()
        sql = interior_sql(
            q, ["tehsil", "poverty_band"], Filters(district=[args.district]), (), None
        )
        households, pages = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT (ctid::text::point)[0]) FROM households"
            " WHERE district_code = $1",
            args.district,
        )
        members, member_pages = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT (m.ctid::text::point)[0]) FROM members m"
            " JOIN households h ON h.id = m.household_id WHERE h.district_code = $1",
            args.district,
        )
        top = await conn.fetchval("SELECT max(id) FROM households")
        step = max(1, top // households)
        where = "h.district_code = ANY($2::text[])"
        if where not in sql:
            raise SystemExit("the counting statement changed: update bench/locality.py")
        scattered = sql.replace(
            where,
            f"h.id IN (SELECT g * {step} + 1 FROM generate_series(0, {households - 1}) g)"
            " AND $2::text[] IS NOT NULL",
        )
        times: dict[str, list[float]] = {"district": [], "district_jit": [], "scattered": []}
        for r in range(args.runs):
            for name in times:
                await conn.execute(f"SET jit = {'on' if name == 'district_jit' else 'off'}")
                started = time.perf_counter()
                await conn.fetch(scattered if name == "scattered" else sql, *q.params)
                times[name].append(time.perf_counter() - started)
            log(
                f"run {r + 1}/{args.runs}: "
                + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items())
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        return {
            "bench": "locality",
            "database": args.reuse_db,
            "district": args.district,
            "households": households,
            "household_pages": pages,
            "members": members,
            "member_pages": member_pages,
            "seconds_median": {k: round(v, 4) for k, v in med.items()},
            "jit_ratio": round(med["district_jit"] / med["district"], 2),
            "scattered_ratio": round(med["scattered"] / med["district"], 2),
        }
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reuse-db", required=True, help="a seeded database (name or URL)")
    ap.add_argument("--district", default="PK520")
    ap.add_argument("--runs", type=int, default=5)
    result = asyncio.run(run(ap.parse_args()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
