"""Benchmark: the differencing check of a partner aggregate against the product query it
guards, with K earlier queries of the agreement.

In process, no HTTP, on one connection, alternating (medians of R runs):

- **product**: the partner summary's count statement alone (``aggregate.interior_cells``,
  the interior cells of the table), the baseline;
- **check**: ``differencing.check_overlap`` (the pass over the query's households, then
  the comparison with the earlier populations), in a transaction rolled back;
- **pass**: the pass over the query's households alone (``differencing.selection``);
- **compare**: the rest of the check alone (``differencing.compare_with_earlier``: the
  size index, the coarse counts, the sketches), what the K earlier queries cost.

Two queries: the whole country with ``score_max=40`` by province × poverty band, and the
biggest district with ``score_max=40`` by poverty band. The K earlier queries are the worst
case for the check: every one within the threshold of the new query's size (so none is
skipped by the size index, each one's 2 KB sketch is read and compared), all far from it
(so none refuses). They are written straight into the log with synthetic sketches — what
the check reads of them is their size and sketch, not how they were computed — under an
agreement of their own, and removed afterwards.

    .venv/bin/python bench/differencing.py --households 100000 --earlier 1000
    .venv/bin/python bench/differencing.py --reuse-db nser_bench_1m --earlier 5000

Target: the comparison under 200 ms whatever K (up to the 5,000 the check compares at most)
and the registry; the whole check no dearer than the product query (the ratio, at most 1).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from typing import Any

import asyncpg
import numpy as np
from common import ROOT, bench_database, create_partner, log, nser

sys.path.insert(0, str(ROOT))


class _Rollback(Exception):
    pass


async def _principal(conn: asyncpg.Connection, client_id: str) -> Any:
    from app.auth.partner import Principal

    row = await conn.fetchrow(
        """SELECT a.id, a.geo_codes FROM api_clients c JOIN agreements a ON a.id = c.agreement_id
            WHERE c.client_id = $1""",
        client_id,
    )
    assert row is not None
    return Principal(
        client_id=client_id,
        kind="partner",
        scopes=frozenset(),
        agreement_id=row["id"],
        geo_codes=tuple(row["geo_codes"]),
    )


async def _record_earlier(
    conn: asyncpg.Connection, agreement: uuid.UUID, client_id: str, households: int, k: int
) -> None:
    """K earlier populations of the agreement, each within the threshold of ``households``
    and far from any real one (random sketches)."""
    from app.services.products import differencing

    rng = np.random.default_rng(1)
    ids = await conn.fetch(
        """INSERT INTO aggregate_queries (agreement_id, client_id, product, filters, dims,
                                          households)
           SELECT $1, $2, 'summaries', jsonb_build_object('bench', i), '{poverty_band}', $3
             FROM generate_series(1, $4) i RETURNING id""",
        agreement,
        client_id,
        households,
        k,
    )
    rows = []
    for n, row in enumerate(ids):
        size = households + int(rng.integers(-9, 10))
        half = rng.multinomial(size, [1 / differencing.BUCKETS] * differencing.BUCKETS)
        counts = np.concatenate([half, rng.permutation(half)]).astype(np.int64)
        sums = rng.integers(0, 2**63, differencing.WIDTH, dtype=np.uint64)
        sketch = differencing.Sketch(size, counts, sums)
        rows.append(
            (
                agreement,
                row["id"],
                differencing.filters_digest(f"bench {n}".encode()),
                sketch.digest(),
                size,
                sketch.coarse,
                sketch.to_bytes(),
            )
        )
    await conn.copy_records_to_table(
        "aggregate_selections",
        records=rows,
        columns=[
            "agreement_id",
            "query_id",
            "filters_digest",
            "population_digest",
            "households",
            "coarse",
            "sketch",
        ],
    )


async def _forget(conn: asyncpg.Connection, agreement: uuid.UUID) -> None:
    await conn.execute("DELETE FROM aggregate_selections WHERE agreement_id = $1", agreement)
    await conn.execute("DELETE FROM aggregate_queries WHERE agreement_id = $1", agreement)


async def _timed(job: Any) -> float:
    started = time.perf_counter()
    await job()
    return time.perf_counter() - started


async def _case(
    conn: asyncpg.Connection, p: Any, dims: list[str], f: Any, k: int, runs: int
) -> dict[str, Any]:
    from app.services.disclosure.policy import Policy
    from app.services.products import aggregate, differencing

    threshold = Policy().threshold
    mine = await differencing.selection(conn, f, p.geo_codes)
    await _record_earlier(conn, p.agreement_id, p.client_id, mine.households, k)
    near = await conn.fetchval(
        """SELECT count(*) FROM aggregate_selections
            WHERE agreement_id = $1 AND abs(households - $2) < $3""",
        p.agreement_id,
        mine.households,
        threshold,
    )

    async def product() -> None:
        await aggregate.interior_cells(conn, dims, f, p.geo_codes)

    async def check() -> None:
        try:
            async with conn.transaction():
                await differencing.lock_agreement(conn, p.agreement_id)
                await differencing.check_overlap(conn, p, f, threshold)
                raise _Rollback
        except _Rollback:
            pass

    async def one_pass() -> None:
        await differencing.selection(conn, f, p.geo_codes)

    digest = differencing.filters_digest(differencing.canonical_filters(f))

    async def compare() -> None:
        await differencing.compare_with_earlier(conn, p, mine, digest, threshold)

    await product()  # warm the buffers for all
    timings: dict[str, list[float]] = {"product": [], "check": [], "pass": [], "compare": []}
    for i in range(runs):
        timings["product"].append(await _timed(product))
        timings["check"].append(await _timed(check))
        timings["pass"].append(await _timed(one_pass))
        timings["compare"].append(await _timed(compare))
        log(
            f"  run {i + 1}: product {timings['product'][-1]:.3f} s, check "
            f"{timings['check'][-1]:.3f} s (pass {timings['pass'][-1]:.3f} s, compare "
            f"{timings['compare'][-1]:.4f} s)"
        )
    med = {name: statistics.median(values) for name, values in timings.items()}
    return {
        "households_selected": mine.households,
        "earlier_within_threshold": near,
        "product_seconds_median": round(med["product"], 4),
        "check_seconds_median": round(med["check"], 4),
        "pass_seconds_median": round(med["pass"], 4),
        "compare_seconds_median": round(med["compare"], 4),
        "check_vs_product": round(med["check"] / med["product"], 3),
        "target_met": med["check"] <= med["product"] and med["compare"] < 0.2,
    }


async def measure(url: str, k: int, runs: int) -> dict[str, Any]:
    from app.services.sharing.beneficiaries_sql import Filters

    conn = await asyncpg.connect(url)
    try:
        district = await conn.fetchval(
            "SELECT district_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        )
        cases = {
            "country": (["province", "poverty_band"], Filters(score_max=40.0)),
            "district": (["poverty_band"], Filters(district=[district], score_max=40.0)),
        }
        out: dict[str, Any] = {}
        for name, (dims, f) in cases.items():
            partner = create_partner(url, "i,ii,vii")
            p = await _principal(conn, partner["client_id"])
            log(f"{name}: {k} earlier queries")
            try:
                out[name] = await _case(conn, p, dims, f, k, runs)
            finally:
                await _forget(conn, p.agreement_id)
        total = await conn.fetchval("SELECT count(*) FROM households")
    finally:
        await conn.close()
    return {
        "bench": "differencing",
        "households": total,
        "earlier": k,
        "runs": runs,
        **out,
        "target_met": all(case["target_met"] for case in out.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=100_000)
    ap.add_argument("--reuse-db", default=None, help="an already seeded database (name or URL)")
    ap.add_argument("--earlier", type=int, default=1000, help="earlier queries (K)")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with bench_database(args.reuse_db, args.households) as url:
        if args.reuse_db:
            nser(["db", "upgrade"], url)
        print(json.dumps(asyncio.run(measure(url, args.earlier, args.runs))))


if __name__ == "__main__":
    main()
