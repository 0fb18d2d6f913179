"""Time `nser seed` into a fresh database.

    .venv/bin/python bench/seed.py                       # 1,000,000 households
    .venv/bin/python bench/seed.py --households 10000000 --keep

Creates a database on NSER_BENCH_ADMIN_URL (default the local server), migrates it with
`nser db upgrade`, runs the seed in-process (generation + PMT scoring + COPY, then the
index and key rebuild: everything `nser seed` does), prints the band distribution, drops
the database (unless --keep) and prints one JSON object as the last line:
{"households", "members", "seconds", "load_seconds", "index_seconds", "households_per_s"}.
Target: 10M in under 15 minutes (900 s), and 10x the households in about 10x the time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from common import ROOT, bench_database

sys.path.insert(0, str(ROOT))

from app.services.seed.loader import seed_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    # Migrated only: the seed itself is what is timed, in-process.
    with bench_database(None, 0, keep=args.keep) as url:
        started = time.perf_counter()
        last = [started]

        def progress(stage: str, done: int, total: int) -> None:
            now = time.perf_counter()
            if now - last[0] > 10 or done == total:
                print(f"  {stage}: {done}/{total} at {now - started:.1f}s", file=sys.stderr)
                last[0] = now

        result = asyncio.run(seed_registry(url, args.households, args.seed, progress=progress))
        seconds = time.perf_counter() - started
    total = sum(result.bands.values())
    for band in ("ultra_poor", "very_poor", "poor", "non_poor", "well_off"):
        n = result.bands.get(band, 0)
        print(f"{band:>11}: {n:>8} ({100 * n / total:.1f}%)")
    print(
        json.dumps(
            {
                "households": result.households,
                "members": result.members,
                "seconds": round(seconds, 1),
                "load_seconds": round(result.load_seconds, 1),
                "index_seconds": round(result.seconds - result.load_seconds, 1),
                "households_per_s": round(result.households / seconds),
            }
        )
    )


if __name__ == "__main__":
    main()
