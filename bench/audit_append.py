"""Benchmark audited partner reads at 16 concurrent partners: what the audit append costs,
and what its lock costs.

    .venv/bin/python bench/audit_append.py                        # 100,000 households, fresh DB
    .venv/bin/python bench/audit_append.py --chains 1,4,16 --rounds 3
    .venv/bin/python bench/audit_append.py --reuse-db nser_auditlock_x --kinds scores

It seeds a fresh database (``nser seed``) unless ``--reuse-db`` is given, creates P (16)
partners (``nser partners create``, categories iii and iv, the whole country) and writes a
file of living members' CNICs. Then, for ``--rounds`` rounds, it serves each variant in turn
(``bench/audit_serve.py``: the service as ``nser serve`` runs it, 2 workers, limits lifted,
no in-process ingest workers) and drives it with ``wrk -c P``, each request with the token
of the next partner in turn:

- ``scores``: ``GET /v1/partner/scores/{cnic}`` (a random CNIC; every answer 200);
- ``pages``: ``GET /v1/partner/beneficiaries?limit=10&province=…`` (a random province).

Every request is an audited partner read: one audit row, appended in the read's
transaction. The variants:

- ``no-audit`` (the baseline): the same service and requests with the audit append
  skipped, i.e. the reads alone;
- ``chains=N`` for each N of ``--chains``: the service with ``NSER_AUDIT_CHAINS=N``.
  ``chains=1`` is one chain under one lock (every append serialized);
- with ``--no-flush``, ``chains=N,no-flush`` for the largest N: the same with the
  database's ``synchronous_commit`` off while it runs (``ALTER DATABASE``, reset after):
  a diagnosis, never a setting to run with, showing how much of what remains is the audit
  row's commit waiting for its WAL flush (a read without audit writes nothing to flush);

Medians over the rounds; each variant's requests/s is also given as a ratio to the
baseline's of the same round (median and range over the rounds), and to ``chains=1``'s.
After the runs ``nser audit verify --full`` must find every chain intact (the rows the runs
appended under full concurrency), and each audited run must have written one audit row per
request. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from common import ROOT, bench_database, create_partner, log, nser, run_wrk, write_cnics
from lookup import free_port, start, stop, wait_up

RESULTS = ROOT / "bench" / "results"
NO_FLUSH = "BENCH_NO_FLUSH"  # a variant's mark: synchronous_commit off while it runs
PROVINCES = ["PK1", "PK2", "PK3", "PK4", "PK5", "PK6", "PK7"]

LUA = """
local tokens, cnics, kind, n = {}, {}, "scores", 0
local provinces = {"PK1", "PK2", "PK3", "PK4", "PK5", "PK6", "PK7"}
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  for line in io.lines(args[2]) do cnics[#cnics + 1] = line end
  kind = args[3]
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  n = math.random(#tokens)
end
function request()
  n = n + 1
  local headers = {Authorization = "Bearer " .. tokens[(n % #tokens) + 1]}
  local path
  if kind == "scores" then
    path = "/v1/partner/scores/" .. cnics[math.random(#cnics)]
  else
    path = "/v1/partner/beneficiaries?limit=10&province=" .. provinces[math.random(#provinces)]
  end
  return wrk.format("GET", path, headers)
end
"""


async def synchronous_commit(url: str, on: bool) -> None:
    """The database's default for new sessions (the service's are opened after it)."""
    conn = await asyncpg.connect(url)
    try:
        name = await conn.fetchval("SELECT current_database()")
        setting = "RESET synchronous_commit" if on else "SET synchronous_commit = off"
        await conn.execute(f'ALTER DATABASE "{name}" {setting}')
    finally:
        await conn.close()


async def audit_rows(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM audit_log")
        return count
    finally:
        await conn.close()


def tokens_for(base: str, partners: list[dict[str, str]], path: Path) -> None:
    lines = []
    for partner in partners:
        answer = httpx.post(
            base + "/v1/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": partner["client_id"],
                "client_secret": partner["client_secret"],
            },
            timeout=30,
        )
        answer.raise_for_status()
        lines.append(answer.json()["access_token"])
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--households", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--reuse-db", metavar="DB", help="skip seeding; benchmark this database")
    ap.add_argument("--keep-db", action="store_true", help="do not drop the fresh database")
    ap.add_argument("--partners", type=int, default=16, help="partners = concurrent requests")
    ap.add_argument("--chains", default="1,16", help="NSER_AUDIT_CHAINS values to measure")
    ap.add_argument("--kinds", default="scores,pages", help="scores, pages or both")
    ap.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="service processes")
    ap.add_argument("--no-flush", action="store_true", help="also: commits without WAL flush")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    kinds = [k for k in args.kinds.split(",") if k]
    variants: dict[str, dict[str, str]] = {"no-audit": {"BENCH_AUDIT": "off"}}
    counts = [int(c) for c in args.chains.split(",") if c]
    for n in counts:
        variants[f"chains={n}"] = {"NSER_AUDIT_CHAINS": str(n)}
    if args.no_flush:
        variants[f"chains={max(counts)},no-flush"] = {
            "NSER_AUDIT_CHAINS": str(max(counts)),
            NO_FLUSH: "1",
        }

    with bench_database(args.reuse_db, args.households, args.seed, keep=args.keep_db) as url:
        runs, checks = measure(url, args, variants, kinds)

    report: dict[str, Any] = {
        "bench": "audit_append",
        "households": None if args.reuse_db else args.households,
        "partners": args.partners,
        "workers": args.workers,
        "duration_s": args.duration,
        "rounds": args.rounds,
        **checks,
    }
    for kind in kinds:
        figures: dict[str, dict[str, Any]] = {}
        for name in variants:
            done = runs[(name, kind)]
            figures[name] = {
                "rps": round(statistics.median(r["rps"] for r in done), 1),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in done), 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in done), 2),
                "non_2xx": sum(int(r["non_2xx"]) for r in done),
            }

        for name, f in figures.items():
            # Per round, then the median: the machine's load moves both sides of a round.
            ratios = per_round(runs, kind, name, "no-audit")
            f["vs_no_audit"] = round(statistics.median(ratios), 3)
            f["vs_no_audit_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
            if "chains=1" in figures and name != "no-audit":
                f["vs_chains_1"] = round(
                    statistics.median(per_round(runs, kind, name, "chains=1")), 3
                )
            print(
                f"{kind:6} {name:18} {f['rps']:8.1f} req/s  p50 {f['p50_ms']:6.2f} ms  "
                f"p99 {f['p99_ms']:7.2f} ms  {f['vs_no_audit']:.2f} of no-audit "
                f"(rounds {f['vs_no_audit_range'][0]}-{f['vs_no_audit_range'][1]})"
            )
        report[kind] = figures
    print(json.dumps(report))


def per_round(
    runs: dict[tuple[str, str], list[dict[str, float]]], kind: str, name: str, against: str
) -> list[float]:
    """The variant's requests/s over ``against``'s of the same round, round by round."""
    pairs = zip(runs[(name, kind)], runs[(against, kind)], strict=True)
    return [mine["rps"] / theirs["rps"] for mine, theirs in pairs]


def measure(
    url: str, args: argparse.Namespace, variants: dict[str, dict[str, str]], kinds: list[str]
) -> tuple[dict[tuple[str, str], list[dict[str, float]]], dict[str, Any]]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="nser-bench-audit-"))
    script, cnics, tokens = work / "audit.lua", work / "cnics.txt", work / "tokens.txt"
    script.write_text(LUA)
    try:
        asyncio.run(write_cnics(url, cnics, 20_000))
        partners = [create_partner(url, "iii,iv") for _ in range(args.partners)]
        log(f"{len(partners)} partners created")
        runs: dict[tuple[str, str], list[dict[str, float]]] = {
            (name, kind): [] for name in variants for kind in kinds
        }
        rows_per_request: list[float] = []
        names = list(variants)
        for round_no in range(args.rounds):
            order = names[round_no % len(names) :] + names[: round_no % len(names)]
            for name in order:
                port = free_port()
                (work / "metrics").mkdir(exist_ok=True)
                env = {
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    "NSER_DATABASE_URL": url,
                    "NSER_ENVIRONMENT": "test",
                    "NSER_LOG_JSON": "true",
                    "NSER_IN_PROCESS_WORKERS": "0",
                    "NSER_PARTNER_DEFAULT_LIMITS": "100000000/minute",
                    "NSER_TOKEN_LIMITS": "100000/minute",
                    "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
                    **variants[name],
                }
                no_flush = NO_FLUSH in variants[name]
                if no_flush:
                    asyncio.run(synchronous_commit(url, on=False))
                server = start(
                    [sys.executable, "bench/audit_serve.py", str(port), str(args.workers)],
                    env,
                    RESULTS / f"audit-{stamp}-{name}.log",
                )
                base = f"http://127.0.0.1:{port}"
                try:
                    wait_up(base + "/healthz", server)
                    tokens_for(base, partners, tokens)
                    for kind in kinds:  # warm the pools and caches
                        run_wrk(base, script, [str(tokens), str(cnics), kind], 3, args.partners)
                    for kind in kinds:
                        before = asyncio.run(audit_rows(url))
                        figures = run_wrk(
                            base,
                            script,
                            [str(tokens), str(cnics), kind],
                            args.duration,
                            args.partners,
                        )
                        written = asyncio.run(audit_rows(url)) - before
                        if name != "no-audit":
                            rows_per_request.append(written / figures["requests"])
                        elif written:
                            raise SystemExit(f"no-audit wrote {written} audit rows")
                        runs[(name, kind)].append(figures)
                        log(f"round {round_no + 1} {name} {kind}: {figures}")
                finally:
                    stop(server)
                    if no_flush:
                        asyncio.run(synchronous_commit(url, on=True))
        started = time.monotonic()
        verified = nser(["audit", "verify", "--full"], url)
        verify_s = time.monotonic() - started
        log(verified.strip())
        intact = re.search(r"audit log intact: (\d+) rows", verified)
        assert intact is not None, verified
        checks = {
            "audit_rows": int(intact.group(1)),
            "verify_full_s": round(verify_s, 2),
            "audit_rows_per_request_min": round(min(rows_per_request, default=0), 4),
            "audit_rows_per_request_max": round(max(rows_per_request, default=0), 4),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return runs, checks


if __name__ == "__main__":
    main()
