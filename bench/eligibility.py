"""Benchmark: the cash-transfer programme's eligible list, streamed (NDJSON over HTTP from a
running `nser serve`), against the plain beneficiaries export of the same households.

    .venv/bin/python bench/eligibility.py --template nser_bench_tpl   # copy of a seeded registry
    .venv/bin/python bench/eligibility.py --reuse-db DB               # already seeded, migrated
    .venv/bin/python bench/eligibility.py --households 1000000        # fresh database

The programme's rule is cut-off 32, raised to 37 with a disabled member, one family per
ever-married woman. Its list is the beneficiary list with the rule as a restriction; the
baseline is that list without the rule over the same score range (``score_max=37``: every
household the rule can admit). Both are full scans of the registry, so households/s
compares what the rule costs per household streamed: the rule's member tests, and the
family field (``recipient``) it adds to each member. Runs alternate;
medians of ``--runs``. The last line is one JSON object; ``ratio`` is programme households/s
over plain households/s (target >= 0.8).

It then times what-if targeting simulations over the same registry, in process through the
worker's own path (``app.services.targeting.simulation``: queue a row, ``process_one`` with
one spare connection, as the worker gives it):
cut-off 32 -> 30 (a candidate rule) and a candidate PMT model (every household re-scored
in SQL, nothing written), against the bare read they cannot avoid (households joined to
their living members' aggregate, grouped by district), alternated, medians of
``--simulation-runs``; ``--simulation-only`` skips the HTTP part (target: < 120 s each).

``--template`` copies the template database (``createdb -T``, FILE_COPY) to a throwaway
database and migrates the copy; the template itself is never changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import httpx
from common import ROOT, admin, bench_database, client_token, database_url, log, nser, service

sys.path.insert(0, str(ROOT))
PROGRAMME = "cash-transfer"


def env(url: str) -> dict[str, str]:
    return {
        "NSER_DATABASE_URL": url,
        "NSER_ENVIRONMENT": "test",
        "NSER_TOKEN_LIMITS": "1000/minute",
        "NSER_LOG_LEVEL": "WARNING",
        # A national scope in one stream: past the default NSER_EXPORT_MAX_HOUSEHOLDS.
        "NSER_EXPORT_MAX_HOUSEHOLDS": "100000000",
    }


@contextmanager
def template_copy(template: str) -> Iterator[str]:
    name = f"nser_bench_elig_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY'))
    try:
        yield database_url(name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def prepare(url: str) -> None:
    from app.services.programmes.demo import ensure_demo_programmes

    conn = await asyncpg.connect(url)
    try:
        await ensure_demo_programmes(conn)
        await conn.execute("ANALYZE households; ANALYZE members")
    finally:
        await conn.close()


def stream(base: str, path: str, params: dict[str, str], token: str) -> tuple[int, int, float]:
    lines = size = 0
    started = time.perf_counter()
    with httpx.stream(
        "GET",
        base + path,
        params=params,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/x-ndjson"},
        timeout=None,
    ) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes():
            lines += chunk.count(b"\n")
            size += len(chunk)
    return lines, size, time.perf_counter() - started


def measure(url: str, runs: int) -> dict[str, object]:
    nser(["db", "upgrade"], url)
    asyncio.run(prepare(url))
    partner = json.loads(
        nser(
            [
                "partners",
                "create",
                "--name",
                "Bench programme",
                "--type",
                "government",
                "--categories",
                "iv",
                "--programmes",
                PROGRAMME,
                "--json",
            ],
            url,
        )
    )
    programme: list[tuple[int, int, float]] = []
    plain: list[tuple[int, int, float]] = []
    with service(env(url)) as (_, base):
        token = client_token(base, partner)
        # One warm-up of each (page cache), then alternate.
        stream(base, f"/v1/partner/programmes/{PROGRAMME}/beneficiaries", {}, token)
        stream(base, "/v1/partner/beneficiaries", {"score_max": "37"}, token)
        for i in range(runs):
            programme.append(
                stream(base, f"/v1/partner/programmes/{PROGRAMME}/beneficiaries", {}, token)
            )
            plain.append(stream(base, "/v1/partner/beneficiaries", {"score_max": "37"}, token))
            log(
                f"run {i + 1}: programme {programme[-1][0]} in {programme[-1][2]:.1f} s, "
                f"plain {plain[-1][0]} in {plain[-1][2]:.1f} s"
            )
    prog_rate = statistics.median(n / s for n, _, s in programme)
    plain_rate = statistics.median(n / s for n, _, s in plain)
    ratios = [(p[0] / p[2]) / (b[0] / b[2]) for p, b in zip(programme, plain, strict=True)]
    return {
        "programme": PROGRAMME,
        "runs": runs,
        "programme_households": programme[0][0],
        "programme_households_per_s": round(prog_rate),
        "programme_mb_per_s": round(statistics.median(b / s for _, b, s in programme) / 1e6, 1),
        "plain_households": plain[0][0],
        "plain_households_per_s": round(plain_rate),
        "plain_mb_per_s": round(statistics.median(b / s for _, b, s in plain) / 1e6, 1),
        "ratio": round(prog_rate / plain_rate, 2),
        "ratio_per_run_median": round(statistics.median(ratios), 2),
        "programme_seconds_median": round(statistics.median(s for _, _, s in programme), 1),
        "plain_seconds_median": round(statistics.median(s for _, _, s in plain), 1),
    }


async def simulations(url: str, runs: int) -> dict[str, object]:
    """Simulations through the worker's path, against the bare read of the same rows."""
    from app.services.pmt.features import MEMBER_AGGREGATE
    from app.services.pmt.model import ILLUSTRATIVE
    from app.services.targeting import simulation

    bare = f"""
SELECT h.district_code, count(*), sum(coalesce(m0.size, 0))
  FROM households h
  LEFT JOIN ({MEMBER_AGGREGATE.format(where="true")}) m0 ON m0.household_id = h.id
 GROUP BY 1"""
    weights = {**ILLUSTRATIVE.weights, "television": 4.0, "household_size": -0.8}
    conn = await asyncpg.connect(url)
    # The worker's spare connection: the simulation reads on both (simulation.READERS).
    spare = await asyncpg.connect(url)
    try:
        await conn.execute(
            """INSERT INTO pmt_models (version, description, intercept, weights, bands,
                                       illustrative, is_current)
               VALUES ('bench-candidate', 'bench', 21.0, $1::jsonb, $2::jsonb, true, false)
               ON CONFLICT (version) DO NOTHING""",
            json.dumps(weights),
            json.dumps(ILLUSTRATIVE.bands_json()),
        )
        await conn.execute("ANALYZE households; ANALYZE members")
        bodies = {
            "rule": {"live_rule": {"cut_off": 32}, "rule": {"cut_off": 30}},
            "model": {"live_rule": {"cut_off": 32}, "pmt_version": "bench-candidate"},
        }
        times: dict[str, list[float]] = {"bare": [], "rule": [], "model": []}
        results: dict[str, dict[str, object]] = {}
        for i in range(runs):
            started = time.perf_counter()
            await conn.fetch(bare)
            times["bare"].append(time.perf_counter() - started)
            for kind, body in bodies.items():
                request = await simulation.prepare(conn, {**body, "transfer_amount": "10500"})
                sim_id = await conn.fetchval(
                    "INSERT INTO simulations (request, requested_by) "
                    "VALUES ($1::jsonb, 'bench') RETURNING id",
                    json.dumps(request),
                )
                started = time.perf_counter()
                assert await simulation.process_one(conn, "bench-worker", [spare])
                times[kind].append(time.perf_counter() - started)
                row = await conn.fetchrow(
                    "SELECT status, error, result::text AS result FROM simulations WHERE id = $1",
                    sim_id,
                )
                assert row["status"] == "done", row["error"]
                results[kind] = json.loads(row["result"])
            log(
                f"simulation run {i + 1}: bare {times['bare'][-1]:.1f} s, "
                f"rule {times['rule'][-1]:.1f} s, model {times['model'][-1]:.1f} s"
            )
    finally:
        await conn.close()
        await spare.close()
    bare_s = statistics.median(times["bare"])
    return {
        "simulation_households": results["rule"]["households_total"],
        "simulation_bare_read_seconds": round(bare_s, 1),
        "simulation_rule_seconds": round(statistics.median(times["rule"]), 1),
        "simulation_model_seconds": round(statistics.median(times["model"]), 1),
        "simulation_rule_ratio": round(statistics.median(times["rule"]) / bare_s, 2),
        "simulation_model_ratio": round(statistics.median(times["model"]) / bare_s, 2),
        "simulation_rule_leaving": results["rule"]["leaving"],
        "simulation_model_entering": results["model"]["entering"],
        "simulation_model_leaving": results["model"]["leaving"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--households", type=int, default=1_000_000)
    ap.add_argument("--reuse-db", default=None, help="an already seeded database (name or URL)")
    ap.add_argument("--template", default=None, help="a seeded template database to copy")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--simulation-runs", type=int, default=2)
    ap.add_argument("--simulation-only", action="store_true", help="skip the HTTP lists")
    args = ap.parse_args()

    def everything(url: str) -> dict[str, object]:
        out = {} if args.simulation_only else measure(url, args.runs)
        if args.simulation_only:
            nser(["db", "upgrade"], url)
        return {**out, **asyncio.run(simulations(url, args.simulation_runs))}

    if args.template:
        with template_copy(args.template) as url:
            result = everything(url)
    else:
        with bench_database(args.reuse_db, args.households) as url:
            result = everything(url)
    for key, value in result.items():
        print(f"{key}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
