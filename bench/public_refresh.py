"""Benchmark: what a refresh of the public products costs (``nser products refresh``).

Three refreshes, each timed as the wall time of ``nser products refresh`` (the CLI's own
start-up included) and as the seconds the refresh records, median of ``--runs`` (3):

- ``full``: ``nser products refresh --full`` (every district counted again);
- ``one_district``: after one household of one district moved by 1e-7 degree;
- ``every_district``: after one household of every district moved so (one statement, as
  when updates are spread over the whole country: every district is touched).

The baseline, alternated with them: one bare pass over the living members in SQL
(``count(*)``), the floor under any recount of the registry: each refresh's median as a
ratio to its median. The moves alternate in sign, so the registry ends as it began (up to
float rounding of the coordinates).

    .venv/bin/python bench/public_refresh.py --households 100000
    .venv/bin/python bench/public_refresh.py --reuse-db nser_pubfast_1m

Target: ``every_district`` well under 2 minutes at 10M households (refreshed at most a few
minutes after a change). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
from typing import Any

import asyncpg
from common import bench_database, log, nser

KINDS = ("full", "one_district", "every_district")
_SECONDS = re.compile(r"in ([0-9.]+)s")


def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def bare_pass(url: str) -> float:
    conn = await asyncpg.connect(plain(url))
    try:
        started = time.monotonic()
        await conn.fetchval("SELECT count(*) FROM members WHERE deceased_on IS NULL")
        return time.monotonic() - started
    finally:
        await conn.close()


async def touch(url: str, every: bool, sign: int) -> None:
    """Move one household (of one district, or of each) by 1e-7 degree of latitude."""
    conn = await asyncpg.connect(plain(url))
    try:
        await conn.execute(
            f"""UPDATE households h SET lat = h.lat + $1
                 WHERE h.id IN (SELECT min(id) FROM households WHERE lat IS NOT NULL
                                 GROUP BY district_code ORDER BY district_code
                                 {"" if every else "LIMIT 1"})""",
            sign * 1e-7,
        )
    finally:
        await conn.close()


def refresh(url: str, full: bool) -> tuple[float, float]:
    started = time.monotonic()
    out = nser(["products", "refresh", *(["--full"] if full else [])], url)
    wall = time.monotonic() - started
    found = _SECONDS.search(out)
    return wall, float(found.group(1)) if found else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--households", type=int, default=100_000)
    parser.add_argument("--reuse-db")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with bench_database(args.reuse_db, args.households) as url:
        refresh(url, True)  # the cube exists and the pages are warm
        walls: dict[str, list[float]] = {k: [] for k in KINDS}
        own: dict[str, list[float]] = {k: [] for k in KINDS}
        bare: list[float] = []
        for run in range(args.runs):
            for kind in KINDS:
                bare.append(asyncio.run(bare_pass(url)))
                if kind != "full":
                    asyncio.run(touch(url, kind == "every_district", 1 if run % 2 == 0 else -1))
                wall, seconds = refresh(url, kind == "full")
                walls[kind].append(wall)
                own[kind].append(seconds)
                log(f"run {run + 1}/{args.runs} {kind}: {wall:.1f} s wall, {seconds:.1f} s refresh")
        base = statistics.median(bare)
        result: dict[str, Any] = {
            "benchmark": "public_refresh",
            "households": args.households if not args.reuse_db else None,
            "database": args.reuse_db,
            "runs": args.runs,
            "bare_members_pass_s": round(base, 2),
        }
        for kind in KINDS:
            result[f"{kind}_wall_s"] = round(statistics.median(walls[kind]), 2)
            result[f"{kind}_refresh_s"] = round(statistics.median(own[kind]), 2)
            result[f"{kind}_ratio"] = round(statistics.median(walls[kind]) / base, 1)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
