"""Benchmark the DCI sync search (``POST /dci/registry/sync/search``) against the API it is
measured by, in the same run, alternated.

    .venv/bin/python bench/dci.py                          # 1,000,000 households, fresh DB
    .venv/bin/python bench/dci.py --households 200000 --runs 5
    .venv/bin/python bench/dci.py --reuse-db h_dcibench_x  # an already seeded registry

It seeds a fresh database (``nser seed``; named ``NSER_BENCH_DB_PREFIX`` + 8 hex digits,
dropped afterwards) unless ``--reuse-db`` is given, creates one partner (categories iii and
iv, the whole country) and starts the service once (``nser serve --workers 2``: uvloop,
httptools, JSON logs to ``bench/results/``, every rate limit lifted). Then two comparisons,
each side run ``--runs`` times (at least 3), the order flipped every run:

- **CNIC**: ``wrk -c C`` for S seconds on ``POST /dci/registry/sync/search`` with one
  ``idtype-value`` request (``CNIC``, a random CNIC a request: 90% living members, half of
  them written with dashes, 10% unknown; a new message and transaction id each time),
  against the public look-up ``GET /v1/public/scores/{cnic}`` over the same CNICs (its
  baseline; the issue's target: requests/s >= 0.8 of it). The partner look-up
  ``GET /v1/partner/scores/{cnic}`` (the same token and audit as DCI, one indexed read)
  runs in the same rotation, for context: what a partner read costs before DCI adds to it.
- **10k records** (each run ``--walks`` W (5) walks of one side, then of the other): the
  households of the district with the most of them whose PMT score is
  at most S, S chosen so that they are at most ``--records`` (10,000): an ``expression``
  search paged through as a client would (``page_size`` the service's largest,
  ``app.services.dci.query.MAX_PAGE_SIZE`` = 1000; the same transaction id, page 1, 2, …
  until a page holds fewer than the page size or the ``total_count`` is reached),
  against the NDJSON stream ``GET /v1/partner/beneficiaries?district=D&score_max=S`` of the
  same agreement (its baseline; target: records/s >= 0.8 of it). The clock runs while the
  requests do (the client reads every byte; it parses the pages between requests, off the
  clock, as the stream's lines are not parsed). Both must answer the same household ids.

Medians of the runs; the ratios are of the medians, with each run's own ratio alongside.
Every DCI answer must be 200 (``non_2xx`` counts the others). Then the plans (``plans`` in
the JSON): EXPLAIN (ANALYZE, BUFFERS) of the statements the service runs
(``app.services.dci.search.statements``) for a CNIC search and for the first and last
pages of the paged search, each with the indexes it reads and the buffers it touches (a
CNIC search runs its page only: one household is not a full page). The last line printed
is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from common import (
    ROOT,
    bench_database,
    client_token,
    create_partner,
    fetchval,
    log,
    run_wrk,
)
from lookup import free_port, start, stop, wait_up, write_cnics

sys.path.insert(0, str(ROOT))
from app.auth.partner import Principal
from app.db import SERVER_SETTINGS
from app.services.dci import query as dci_query
from app.services.dci import search as dci_search
from app.services.dci.query import MAX_PAGE_SIZE

RESULTS = ROOT / "bench" / "results"
SEARCH = "/dci/registry/sync/search"
TS = "2026-12-11T09:00:00+05:00"

# Each wrk thread has its own Lua state: its ids start from a random tag.
LUA = """
local cnics, token, kind, tag, n = {}, "", "dci", "", 0
local head = '{"header":{"version":"1.0.0","message_id":"m%s-%d","message_ts":"TS",'
  .. '"action":"search","sender_id":"bench","total_count":1},"message":{"transaction_id":'
  .. '"t%s-%d","search_request":[{"reference_id":"r1","timestamp":"TS","search_criteria":'
  .. '{"version":"1.0.0","reg_type":"ns:org:RegistryType:Social","query_type":"idtype-value",'
  .. '"query":{"type":"CNIC","value":"%s"}}}]}}'
function init(args)
  for line in io.lines(args[1]) do cnics[#cnics + 1] = line end
  for line in io.lines(args[2]) do token = line end
  kind = args[3]
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  tag = tostring(math.random(1000000000))
end
function request()
  local cnic = cnics[math.random(#cnics)]
  if kind == "public" then
    return wrk.format("GET", "/v1/public/scores/" .. cnic)
  end
  local auth = {Authorization = "Bearer " .. token}
  if kind == "partner" then
    return wrk.format("GET", "/v1/partner/scores/" .. cnic, auth)
  end
  n = n + 1
  auth["Content-Type"] = "application/json"
  return wrk.format("POST", "/dci/registry/sync/search", auth,
    string.format(head, tag, n, tag, n, cnic))
end
""".replace("TS", TS)


async def choose_filter(url: str, records: int) -> tuple[str, float, int]:
    """The district with the most households scored at most S, with S the highest score
    that keeps them at most ``records``: (district, S, households)."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            """SELECT district_code, max(pmt_score)::float8 AS score, max(n) AS n FROM (
                   SELECT district_code, pmt_score,
                          count(*) OVER (PARTITION BY district_code ORDER BY pmt_score) AS n
                     FROM households WHERE pmt_score IS NOT NULL) x
                WHERE n <= $1 GROUP BY district_code ORDER BY max(n) DESC LIMIT 1""",
            records,
        )
    finally:
        await conn.close()
    assert row is not None
    return row["district_code"], row["score"], int(row["n"])


def stream(base: str, token: str, district: str, score: float) -> tuple[float, set[str], int]:
    """The NDJSON beneficiary list of the filter: seconds, household ids, bytes."""
    body = bytearray()
    started = time.perf_counter()
    with httpx.stream(
        "GET",
        base + "/v1/partner/beneficiaries",
        params={"district": district, "score_max": score},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/x-ndjson"},
        timeout=None,
    ) as answer:
        answer.raise_for_status()
        for chunk in answer.iter_bytes():
            body += chunk
    seconds = time.perf_counter() - started
    ids = {orjson.loads(line)["household_id"] for line in bytes(body).splitlines() if line}
    return seconds, ids, len(body)


def search_message(transaction: str, district: str, score: float, number: int) -> bytes:
    query = {"$and": [{"district": {"$eq": district}}, {"poverty_score": {"$le": score}}]}
    return orjson.dumps(
        {
            "header": {
                "version": "1.0.0",
                "message_id": uuid.uuid4().hex,
                "message_ts": TS,
                "action": "search",
                "sender_id": "bench",
                "total_count": 1,
            },
            "message": {
                "transaction_id": transaction,
                "search_request": [
                    {
                        "reference_id": f"page-{number}",
                        "timestamp": TS,
                        "search_criteria": {
                            "version": "1.0.0",
                            "query_type": "expression",
                            "query": {
                                "type": "ns:org:QueryType:NoSql",
                                "value": {"expression": {"collection": "Group", "query": query}},
                            },
                            "pagination": {"page_size": MAX_PAGE_SIZE, "page_number": number},
                        },
                    }
                ],
            },
        }
    )


def pages(
    client: httpx.Client, token: str, district: str, score: float
) -> tuple[float, set[str], int, int, list[float]]:
    """Every page of the expression search: seconds on the clock, household ids, bytes,
    pages, each page's seconds."""
    transaction = uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    ids: set[str] = set()
    size = 0
    clock: list[float] = []
    number = 1
    while True:
        body = search_message(transaction, district, score, number)
        started = time.perf_counter()
        answer = client.post(SEARCH, content=body, headers=headers)
        raw = answer.content
        clock.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise SystemExit(f"DCI page {number}: {answer.status_code} {raw[:300]!r}")
        size += len(raw)
        reply = orjson.loads(raw)["message"]["search_response"][0]
        found = reply["data"]["reg_records"]
        for group in found:
            ids.add(group["group_identifier"][0]["identifier_value"])
        total = reply["pagination"]["total_count"]
        if len(found) < MAX_PAGE_SIZE or number * MAX_PAGE_SIZE >= total:
            return sum(clock), ids, size, number, clock
        number += 1


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", ()) for n in _plan_nodes(child))]


async def plans(url: str, cnic: str, district: str, score: float, pages: int) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statements the service runs for a CNIC search and
    for the first and last pages of the paged search (the partner's agreement covers the
    whole country, category iv: no dimensions): the indexes each reads, the buffers it
    touches, its time."""
    principal = Principal(client_id="bench", kind="partner", scopes=frozenset())
    expression = {"$and": [{"district": {"$eq": district}}, {"poverty_score": {"$le": score}}]}
    cases = {
        "cnic": {"query_type": "idtype-value", "query": {"type": "CNIC", "value": cnic}},
        **{
            f"page_{number}": {
                "query_type": "expression",
                "query": {
                    "type": dci_query.NOSQL,
                    "value": {"expression": {"collection": "Group", "query": expression}},
                },
                "pagination": {"page_size": MAX_PAGE_SIZE, "page_number": number},
            }
            for number in (1, pages)
        },
    }
    out: dict[str, Any] = {}
    conn = await asyncpg.connect(url, server_settings=SERVER_SETTINGS)
    try:
        for name, raw in cases.items():
            criteria = dci_query.criteria(raw)
            sql = dci_search.statements(principal, dci_search.filters([], criteria), criteria)
            for kind, text, params in (
                ("page", sql.page, sql.page_params),
                ("count", sql.count, sql.count_params),
            ):
                await conn.fetch(text, *params)  # as warm as the service's
                answer = await conn.fetchval(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + text, *params
                )
                plan = json.loads(answer)[0]
                top = plan["Plan"]
                nodes = _plan_nodes(top)
                out[f"{name}.{kind}"] = {
                    "ms": round(plan["Execution Time"], 2),
                    "rows": top["Actual Rows"],
                    "buffers": top["Shared Hit Blocks"] + top["Shared Read Blocks"],
                    "indexes": sorted({n["Index Name"] for n in nodes if "Index Name" in n}),
                    "scans": sorted({n["Node Type"] for n in nodes if "Scan" in n["Node Type"]}),
                }
                log(f"plan {name}.{kind}: {out[f'{name}.{kind}']}")
    finally:
        await conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--households", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--reuse-db", metavar="DB", help="skip seeding; benchmark this database")
    ap.add_argument("--keep-db", action="store_true", help="do not drop the fresh database")
    ap.add_argument("--runs", type=int, default=3, help="runs of each side (at least 3)")
    ap.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--records", type=int, default=10_000, help="records of the paged search")
    ap.add_argument("--walks", type=int, default=5, help="walks (or streams) in a records run")
    ap.add_argument("--only", choices=("cnic", "records"), help="one comparison alone")
    args = ap.parse_args()
    if args.runs < 3:
        raise SystemExit("--runs: at least 3")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    with bench_database(args.reuse_db, args.households, args.seed, keep=args.keep_db) as url:
        report = measure(url, args)
    report = {
        "bench": "dci",
        "households": None if args.reuse_db else args.households,
        "database": args.reuse_db or "fresh",
        "runs": args.runs,
        **report,
    }
    print(json.dumps(report))


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="nser-bench-dci-"))
    script, cnics, token_file = work / "dci.lua", work / "cnics.txt", work / "token.txt"
    script.write_text(LUA)
    partner = create_partner(url, "iii,iv")
    log("partner created (categories iii, iv; the whole country)")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "NSER_DATABASE_URL": url,
        "NSER_ENVIRONMENT": "test",
        "NSER_LOG_JSON": "true",
        "NSER_PUBLIC_LOOKUP_LIMITS": "100000000/minute",
        "NSER_PARTNER_DEFAULT_LIMITS": "100000000/minute",
        "NSER_TOKEN_LIMITS": "100000/minute",
    }
    server = start(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", "2"],
        env,
        RESULTS / f"dci-{stamp}.log",
    )
    base = f"http://127.0.0.1:{port}"
    report: dict[str, Any] = {}
    try:
        wait_up(base + "/healthz", server)

        def token() -> str:  # a fresh one for each run: tokens live 15 minutes
            value = client_token(base, partner)
            token_file.write_text(value + "\n")
            return value

        if args.only in (None, "cnic"):
            asyncio.run(write_cnics(url, cnics, 20_000))
            report["cnic"] = cnic_runs(base, script, cnics, token_file, token, args)
        if args.only in (None, "records"):
            report["records"] = record_runs(url, base, token, args)
        cnic = asyncio.run(
            fetchval(
                url,
                "SELECT cnic FROM members WHERE cnic IS NOT NULL AND deceased_on IS NULL LIMIT 1",
            )
        )
        district, score, households = asyncio.run(choose_filter(url, args.records))
        pages = -(-households // MAX_PAGE_SIZE)
        report["plans"] = asyncio.run(plans(url, str(cnic), district, score, pages))
    finally:
        stop(server)
        shutil.rmtree(work, ignore_errors=True)
    report["service_log"] = str(RESULTS / f"dci-{stamp}.log")
    return report


def cnic_runs(
    base: str,
    script: Path,
    cnics: Path,
    token_file: Path,
    token: Any,
    args: argparse.Namespace,
) -> dict[str, Any]:
    kinds = ["dci", "public", "partner"]
    token()
    for kind in kinds:  # warm the pools, caches and prepared statements
        run_wrk(base, script, [str(cnics), str(token_file), kind], 3, args.connections)
    log("warmed")
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for run in range(args.runs):
        order = kinds[run % len(kinds) :] + kinds[: run % len(kinds)]
        for kind in order:
            token()
            figures = run_wrk(
                base, script, [str(cnics), str(token_file), kind], args.duration, args.connections
            )
            runs[kind].append(figures)
            log(f"cnic run {run + 1}/{args.runs} {kind}: {figures}")
    out: dict[str, Any] = {"connections": args.connections, "duration_s": args.duration}
    for kind in kinds:
        out[kind] = {
            "rps": round(median(runs[kind], "rps"), 1),
            "p50_ms": round(median(runs[kind], "p50_ms"), 2),
            "p99_ms": round(median(runs[kind], "p99_ms"), 2),
            "non_2xx": sum(int(r["non_2xx"]) for r in runs[kind]),
            "runs_rps": [r["rps"] for r in runs[kind]],
        }
    out["ratio"] = round(out["dci"]["rps"] / out["public"]["rps"], 3)
    out["ratio_runs"] = [
        round(d["rps"] / p["rps"], 3) for d, p in zip(runs["dci"], runs["public"], strict=True)
    ]
    out["ratio_to_partner_lookup"] = round(out["dci"]["rps"] / out["partner"]["rps"], 3)
    out["meets_target"] = out["ratio"] >= 0.8 and out["dci"]["non_2xx"] == 0
    for kind in kinds:
        f = out[kind]
        print(
            f"cnic {kind:8} {f['rps']:8.1f} req/s  p50 {f['p50_ms']:7.2f} ms  "
            f"p99 {f['p99_ms']:7.2f} ms  non-2xx {f['non_2xx']}"
        )
    print(
        f"cnic: DCI {out['ratio']:.2f} of the public look-up (target 0.8), "
        f"{out['ratio_to_partner_lookup']:.2f} of the partner look-up"
    )
    return out


def record_runs(url: str, base: str, token: Any, args: argparse.Namespace) -> dict[str, Any]:
    district, score, households = asyncio.run(choose_filter(url, args.records))
    log(f"filter: district {district}, score <= {score}: {households} households")
    runs: dict[str, list[dict[str, float]]] = {"dci": [], "ndjson": []}
    page_seconds: list[list[float]] = []
    with httpx.Client(base_url=base, timeout=None) as client:
        value = token()
        _, expected, _ = stream(base, value, district, score)  # warm, and the answer
        got = pages(client, value, district, score)[1]
        if got != expected or len(expected) != households:
            raise SystemExit(
                f"DCI answered {len(got)} households, the list {len(expected)}, "
                f"the registry {households}"
            )
        log(f"warmed; both answer the same {households} households")
        for run in range(args.runs):
            order = ["dci", "ndjson"] if run % 2 == 0 else ["ndjson", "dci"]
            for kind in order:
                value = token()
                seconds = 0.0
                for _ in range(args.walks):
                    if kind == "ndjson":
                        took, ids, size = stream(base, value, district, score)
                        count = 0
                    else:
                        took, ids, size, count, clock = pages(client, value, district, score)
                        page_seconds.append(clock)
                    if ids != expected:
                        raise SystemExit(f"{kind} run {run + 1}: another set of households")
                    seconds += took
                figures = {
                    "seconds": seconds / args.walks,
                    "records_per_s": args.walks * len(ids) / seconds,
                    "mb": size / 1e6,
                    "pages": count,
                }
                runs[kind].append(figures)
                log(f"records run {run + 1}/{args.runs} {kind}: {figures}")
    out: dict[str, Any] = {
        "district": district,
        "score_max": score,
        "records": households,
        "page_size": MAX_PAGE_SIZE,
        "pages": int(runs["dci"][0]["pages"]),
    }
    for kind in ("dci", "ndjson"):
        out[kind] = {
            "seconds": round(median(runs[kind], "seconds"), 3),
            "records_per_s": round(median(runs[kind], "records_per_s")),
            "mb": round(median(runs[kind], "mb"), 2),
            "runs_records_per_s": [round(r["records_per_s"]) for r in runs[kind]],
        }
    # Each page's median over the runs, in ms: does page 10 cost more than page 1?
    out["dci"]["page_ms"] = [
        round(statistics.median(clock[i] for clock in page_seconds) * 1000, 1)
        for i in range(min(len(clock) for clock in page_seconds))
    ]
    out["ratio"] = round(out["dci"]["records_per_s"] / out["ndjson"]["records_per_s"], 3)
    out["ratio_runs"] = [
        round(d["records_per_s"] / n["records_per_s"], 3)
        for d, n in zip(runs["dci"], runs["ndjson"], strict=True)
    ]
    out["meets_target"] = out["ratio"] >= 0.8
    print(
        f"records: {households} households of {district} scored <= {score}; "
        f"DCI {out['dci']['records_per_s']} records/s in {out['pages']} pages of "
        f"{MAX_PAGE_SIZE}, NDJSON {out['ndjson']['records_per_s']} records/s: "
        f"{out['ratio']:.2f} (target 0.8); pages {out['dci']['page_ms']} ms"
    )
    return out


if __name__ == "__main__":
    main()
