"""Soak: ten minutes of a realistic mix of callers against the service, memory watched.

    make soak                                              # 10 minutes, fresh 100k registry
    .venv/bin/python bench/soak.py --minutes 2             # a quick smoke
    .venv/bin/python bench/soak.py --reuse-db DB --users 40

``nser serve --workers 2`` (no in-process workers) and a separate ``nser worker`` run on the
registry, with Redis holding the rate-limit counters; locust (headless,
``bench/soak_locust.py``) plays ``--users`` callers for ``--minutes``: people and programs
on the public API (look-ups, summaries, maps, the geography, grievances filed and
followed), visitors of the website (home, ``POST /check`` with its CSRF token, statistics
and map pages, the map's picture), partners (score look-ups, beneficiary pages walked by
cursor, NDJSON streams of a district, summaries and maps), a programme's eligibility
checks by CNIC, one partner sending an update batch every ``--batch-every`` seconds and
polling it, one staff member (work queues, requests, reports, household histories, score
explanations, triaging and closing the grievances filed), and one scraper asking look-ups
from one address faster than the per-IP limit allows (its 429s are expected).

Every minute it samples the resident memory (RSS) of the serve master, each of its
workers and the ``nser worker``, the PostgreSQL connections to the registry and Redis's
clients. At the end it waits for every batch answered 202 to be ``done`` and checks,
through the API, that each has an outcome for every record, and in the registry that every
phone change applied holds.

Reported: requests/s, p50 and p99 per kind of request, statuses other than 2xx by kind,
the memory table. Exit 1 when a process's RSS moved more than 10% (max/min) between minute 2
and the end, when any answer was a 5xx or a transport error, when a batch was lost, or when
a service process died. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import redis
from common import ROOT, bench_database, client_token, log, nser

RESULTS = ROOT / "bench" / "results"
LOCUSTFILE = ROOT / "bench" / "soak_locust.py"
FLAT = 1.10  # max/min of each process's RSS from minute 2 on
# p99 targets the other benchmarks set in absolute terms (bench/README.md), by kind.
TARGETS_MS = {
    "public: summaries API": 50.0,  # bench/public_products.py (at 10M, under ingestion)
    "public: map API": 50.0,  # bench/public_products.py
    "partner: summaries": 1000.0,  # bench/partner_products.py (one district of 10M)
    "partner: map": 1000.0,  # bench/partner_products.py
    "staff: my work": 150.0,  # bench/my_work.py
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def prepare(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The registry's CNICs, households and codes the callers use; the demo programmes."""
    from app.services.programmes.demo import ensure_demo_programmes

    batches = int(args.minutes * 60 / args.batch_every) + 2
    conn = await asyncpg.connect(url)
    try:
        await ensure_demo_programmes(conn)
        cnics = [
            r["cnic"]
            for r in await conn.fetch(
                "SELECT cnic FROM members TABLESAMPLE SYSTEM (5)"
                " WHERE cnic IS NOT NULL AND deceased_on IS NULL LIMIT 5000"
            )
        ]
        households = [
            r["id"]
            for r in await conn.fetch("SELECT id FROM households TABLESAMPLE SYSTEM (1) LIMIT 2000")
        ]
        pool = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM households ORDER BY random() LIMIT $1",
                batches * args.batch_records,
            )
        ]
        provinces = [
            r["province_code"]
            for r in await conn.fetch("SELECT DISTINCT province_code FROM households ORDER BY 1")
        ]
        districts = [
            r["district_code"]
            for r in await conn.fetch(
                "SELECT district_code FROM households GROUP BY 1 HAVING count(*) >= 100 ORDER BY 1"
            )
        ]
    finally:
        await conn.close()
    rng = random.Random(3)
    return {
        "cnics": cnics,
        # Leading 9: no province uses it, so no one holds these.
        "missing": [f"9{rng.randrange(10**12):012d}" for _ in range(500)],
        "households": households,
        "update_households": pool,
        "provinces": provinces,
        "districts": districts,
        "programmes": ["cash-transfer", "education-cct"],
        "batch_every": args.batch_every,
        "batch_records": args.batch_records,
        "survey_share": args.survey_share,
    }


def credentials(url: str) -> tuple[dict[str, str], dict[str, str]]:
    partner = json.loads(
        nser(
            [
                *("partners", "create", "--name", "Soak partner", "--type", "government"),
                *("--categories", "i,iii,iv,vii"),
                *("--update-kinds", "phone_change,household_survey"),
                *("--programmes", "cash-transfer,education-cct", "--json"),
            ],
            url,
        )
    )
    staff = json.loads(
        nser(
            [
                *("staff", "create", "--name", "Soak officer"),
                *("--role", "officer", "--role", "secretary", "--role", "me", "--json"),
            ],
            url,
        )
    )
    return partner, staff


def service_env(url: str, args: argparse.Namespace) -> dict[str, str]:
    """Limits lifted for the soak's volume, except the public per-IP budgets: each public
    caller comes from its own address and stays well within ``--public-limit``; only the
    scraper goes past it."""
    return {
        "NSER_DATABASE_URL": url,
        "NSER_ENVIRONMENT": "test",
        "NSER_LOG_LEVEL": "WARNING",
        "NSER_IN_PROCESS_WORKERS": "0",
        "NSER_RATE_LIMIT_STORAGE": args.redis,
        "NSER_TRUSTED_PROXIES": "127.0.0.1",
        "NSER_PUBLIC_LOOKUP_LIMITS": args.public_limit,
        "NSER_CHECK_FREE_LOOKUPS": "10000",
        "NSER_GRIEVANCE_FREE_FILINGS": "10000",
        "NSER_TOKEN_LIMITS": "10000/minute",
        "NSER_PARTNER_DEFAULT_LIMITS": "100000/minute",
        "NSER_STAFF_READ_LIMITS": "100000/minute;10000000/day",
        "NSER_UPDATES_RECORDS_PER_HOUR": "100000000",
    }


def start(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_up(base: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit("nser serve exited early (bench/results/soak-serve.log)")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("nser serve did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Sampler:
    """Each minute: the RSS of every service process, PostgreSQL connections, Redis clients."""

    def __init__(self, serve: int, worker: int, url: str, redis_url: str) -> None:
        self.serve = psutil.Process(serve)
        self.worker = psutil.Process(worker)
        self.url = url
        self.database = url.rpartition("/")[2]
        self.redis = redis.Redis.from_url(redis_url)
        self.rows: list[dict[str, Any]] = []
        self.pids: dict[str, int] = {}

    def processes(self) -> dict[str, psutil.Process]:
        named = {"serve master": self.serve, "nser worker": self.worker}
        children = sorted(self.serve.children(recursive=True), key=lambda p: p.pid)
        workers = [p for p in children if "spawn_main" in " ".join(p.cmdline())]
        for i, child in enumerate(workers or children, 1):
            named[f"serve worker {i}"] = child
        for child in self.worker.children(recursive=True):
            named[f"nser worker child {child.pid}"] = child
        return named

    async def sample(self, minute: int) -> dict[str, Any]:
        rss: dict[str, float] = {}
        for name, process in self.processes().items():
            try:
                rss[name] = round(process.memory_info().rss / 2**20, 1)
                self.pids.setdefault(name, process.pid)
                if self.pids[name] != process.pid:
                    rss[name + " (restarted)"] = rss.pop(name)
            except psutil.Error:
                rss[name] = float("nan")
        conn = await asyncpg.connect(self.url)
        try:
            pg = await conn.fetchrow(
                "SELECT count(*) AS total, count(*) FILTER (WHERE state = 'active') AS active"
                " FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                self.database,
            )
        finally:
            await conn.close()
        info = self.redis.info("clients")
        row = {
            "minute": minute,
            "rss_mb": rss,
            "pg_connections": pg["total"],
            "pg_active": pg["active"],
            "redis_clients": info["connected_clients"],
            "load": round(os.getloadavg()[0], 1),
        }
        self.rows.append(row)
        log(
            f"minute {minute}: RSS "
            + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items())
            + f"; PostgreSQL {pg['total']} connections ({pg['active']} active);"
            f" Redis {info['connected_clients']} clients; load {row['load']}"
        )
        return row

    def flatness(self) -> dict[str, dict[str, Any]]:
        """Per process, over minutes 2..end: min, max and max/min."""
        later = [r for r in self.rows if r["minute"] >= 2] or self.rows[-1:]
        out: dict[str, dict[str, Any]] = {}
        for name in self.rows[-1]["rss_mb"]:
            values = [r["rss_mb"][name] for r in later if name in r["rss_mb"]]
            low, high = min(values), max(values)
            ratio = high / low if low else float("inf")
            out[name] = {
                "min_mb": low,
                "max_mb": high,
                "ratio": round(ratio, 3),
                "flat": ratio <= FLAT and len(values) == len(later),
            }
        return out


async def check_batches(
    base: str, token: str, url: str, batches: list[dict[str, Any]], wait: float
) -> dict[str, Any]:
    """Every batch answered 202: ``done`` (waiting up to ``wait`` seconds), an outcome for
    each record (API); every phone change applied holds in the registry."""
    outcomes: Counter[str] = Counter()
    lost: list[str] = []
    applied_phones: dict[int, str] = {}
    deadline = time.monotonic() + wait
    async with httpx.AsyncClient(
        base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        for batch in batches:
            while True:
                answer = await client.get(f"/v1/partner/updates/{batch['batch_id']}")
                body = answer.json() if answer.status_code == 200 else {}
                if body.get("status") == "done" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
            results = {r["ref"]: r for r in body.get("results", [])}
            if body.get("status") != "done" or set(results) != set(batch["households"]):
                lost.append(batch["batch_id"])
                continue
            for ref, result in results.items():
                outcomes[result["outcome"]] += 1
                if ref in batch["phones"] and result["outcome"] in ("applied", "unchanged"):
                    applied_phones[batch["households"][ref]] = batch["phones"][ref]
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT id, phone FROM households WHERE id = ANY($1::bigint[])", list(applied_phones)
        )
    finally:
        await conn.close()
    missing_phones = sum(1 for r in rows if r["phone"] != applied_phones[r["id"]])
    missing_phones += len(applied_phones) - len(rows)
    return {
        "batches": len(batches),
        "records": sum(b["records"] for b in batches),
        "outcomes": dict(outcomes),
        "batches_lost": lost,
        "phone_changes_checked": len(applied_phones),
        "phone_changes_lost": missing_phones,
    }


def summarise(samples: list[list[Any]], seconds: float, warmup: float) -> dict[str, dict[str, Any]]:
    """Per kind: requests/s, p50 and p99 of the 2xx answers after the first ``warmup``
    seconds (users starting, caches filling); statuses other than 2xx over the whole run."""
    by_kind: dict[str, list[tuple[float, int, float]]] = defaultdict(list)
    for t, name, status, ms in samples:
        by_kind[name].append((t, status, ms))
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(by_kind):
        answered = [(status, ms) for t, status, ms in by_kind[name] if t >= warmup]
        ok = [ms for status, ms in answered if 200 <= status < 300]
        statuses = Counter(status for _, status, _ in by_kind[name])
        target = TARGETS_MS.get(name)
        p99 = round(percentile(ok, 0.99), 1) if ok else None
        out[name] = {
            "requests": len(answered),
            "per_s": round(len(answered) / max(1.0, seconds - warmup), 2),
            "p50_ms": round(percentile(ok, 0.5), 1) if ok else None,
            "p99_ms": p99,
            "not_2xx": {str(k): v for k, v in sorted(statuses.items()) if not 200 <= k < 300},
            "p99_target_ms": target,
            "p99_target_met": None if target is None or p99 is None else p99 <= target,
        }
    return out


def print_tables(kinds: dict[str, dict[str, Any]], sampler: Sampler, flat: dict[str, Any]) -> None:
    print("\nkind | requests | req/s | p50 ms | p99 ms | p99 target | not 2xx")
    for name, k in kinds.items():
        target = f"{k['p99_target_ms']:.0f}" if k["p99_target_ms"] else "-"
        print(
            f"{name} | {k['requests']} | {k['per_s']} | {k['p50_ms']} | {k['p99_ms']} |"
            f" {target} | {k['not_2xx'] or '-'}"
        )
    names = list(sampler.rows[-1]["rss_mb"])
    print(
        "\nminute | "
        + " | ".join(f"{n} MB" for n in names)
        + " | PG conns | Redis clients | requests (5xx) | load"
    )
    for row in sampler.rows:
        cells = [str(row["rss_mb"].get(n, "-")) for n in names]
        print(
            f"{row['minute']} | "
            + " | ".join(cells)
            + f" | {row['pg_connections']} ({row['pg_active']} active)"
            f" | {row['redis_clients']} | {row['requests']} ({row['server_errors']})"
            f" | {row['load']}"
        )
    print("max/min from minute 2 | " + " | ".join(str(flat[n]["ratio"]) for n in names))


def run_locust(
    base: str, config: dict[str, Any], args: argparse.Namespace, sampler: Sampler
) -> dict[str, Any]:
    config_path, out_path = RESULTS / "soak-config.json", RESULTS / "soak-out.json"
    config_path.write_text(json.dumps(config))
    out_path.unlink(missing_ok=True)
    command = [
        str(Path(sys.executable).parent / "locust"),
        *("-f", str(LOCUSTFILE), "--headless", "--host", base),
        *("-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.minutes * 60:.0f}s"),
        *("--csv", str(RESULTS / "soak"), "--only-summary", "--stop-timeout", "60"),
        *("--loglevel", "WARNING"),
    ]
    env = {**os.environ, "SOAK_CONFIG": str(config_path), "SOAK_OUT": str(out_path)}
    log(f"locust: {args.users} users for {args.minutes:g} minutes")
    with (RESULTS / "soak-locust.log").open("wb") as locust_log:
        locust = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=locust_log, stderr=subprocess.STDOUT
        )
    started = time.monotonic()
    minute = 0
    asyncio.run(sampler.sample(minute))
    while locust.poll() is None:
        time.sleep(1)
        if time.monotonic() - started >= (minute + 1) * 60 and minute + 1 <= args.minutes:
            minute += 1
            asyncio.run(sampler.sample(minute))
    if not out_path.exists():
        raise SystemExit("locust wrote no results (bench/results/soak-locust.log)")
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=100_000)
    ap.add_argument("--reuse-db", default=None, help="an already seeded database (name or URL)")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--spawn-rate", type=float, default=5)
    ap.add_argument("--batch-records", type=int, default=200, help="records per update batch")
    ap.add_argument("--batch-every", type=float, default=5.0, help="seconds between batches")
    ap.add_argument("--survey-share", type=float, default=0.05, help="re-surveys among them")
    ap.add_argument("--warmup", type=float, default=60, help="seconds left out of the latencies")
    ap.add_argument("--public-limit", default="120/minute", help="per-IP public budget")
    ap.add_argument(
        "--redis",
        default=os.environ.get("NSER_BENCH_SOAK_REDIS_URL", "redis://127.0.0.1:6379/7"),
        help="the rate-limit counters' Redis",
    )
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    with bench_database(args.reuse_db, args.households) as url:
        if args.reuse_db:
            nser(["db", "upgrade"], url)
            nser(["products", "refresh"], url)
        config = asyncio.run(prepare(url, args))
        partner, staff = credentials(url)
        config |= {"partner": partner, "staff": staff}
        env = service_env(url, args)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        worker = start(["worker"], env, RESULTS / "soak-worker.log")
        serve = start(
            ["serve", "--port", str(port), "--workers", "2"], env, RESULTS / "soak-serve.log"
        )
        try:
            wait_up(base, serve)
            sampler = Sampler(serve.pid, worker.pid, url, args.redis)
            loaded = os.getloadavg()
            out = run_locust(base, config, args, sampler)
            alive = serve.poll() is None and worker.poll() is None
            log(f"checking {len(out['batches'])} update batches")
            token = client_token(base, partner)
            updates = asyncio.run(check_batches(base, token, url, out["batches"], 300))
        finally:
            stop(serve)
            stop(worker)
    kinds = summarise(out["samples"], args.minutes * 60, args.warmup)
    for row in sampler.rows:  # the requests answered in the minute before each sample
        m = row["minute"]
        row["requests"] = sum(1 for t, *_ in out["samples"] if m - 1 <= t / 60 < m)
        row["server_errors"] = sum(
            1
            for t, _, status, _ in out["samples"]
            if m - 1 <= t / 60 < m and (not status or status >= 500)
        )
    flat = sampler.flatness()
    print_tables(kinds, sampler, flat)
    server_errors = {
        name: {s: n for s, n in k["not_2xx"].items() if int(s) == 0 or int(s) >= 500}
        for name, k in kinds.items()
    }
    server_errors = {k: v for k, v in server_errors.items() if v}
    restarted = [n for n in flat if "restarted" in n]
    failures = []
    if server_errors:
        failures.append(f"5xx or transport errors: {server_errors}")
    if updates["batches_lost"] or updates["phone_changes_lost"]:
        failures.append(
            f"lost: {len(updates['batches_lost'])} batches, {updates['phone_changes_lost']} phones"
        )
    if not all(f["flat"] for f in flat.values()):
        failures.append(f"memory not flat: { {n: f['ratio'] for n, f in flat.items()} }")
    if not alive or restarted:
        failures.append(f"a service process died: {restarted or 'serve or worker exited'}")
    result = {
        "bench": "soak",
        "minutes": args.minutes,
        "users": args.users,
        "warmup_seconds": args.warmup,
        "households": args.households if not args.reuse_db else None,
        "database": url.rpartition("/")[2],
        "requests": sum(k["requests"] for k in kinds.values()),
        "per_s": round(sum(k["per_s"] for k in kinds.values()), 1),
        "kinds": kinds,
        "updates": updates,
        "memory": sampler.rows,
        "flat": flat,
        "load_average_at_start": [round(x, 1) for x in loaded],
        "clean": not failures,
        "failures": failures,
    }
    print(json.dumps(result))
    if failures:
        log("FAILED: " + "; ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
