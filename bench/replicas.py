"""Benchmark the public look-up read from a streaming replica against the same look-up
read from the primary, in the same run.

    .venv/bin/python bench/replicas.py                     # 200,000 households
    .venv/bin/python bench/replicas.py --households 1000000 --rounds 3

It makes a primary and a hot standby of it (``pg_basebackup -R``) with the machine's
PostgreSQL binaries on ports 5500-5519 (tests/replica.py: a server of its own, so nothing
shared is copied), seeds the registry on the primary (the standby replays it), then starts
two services with ``nser serve --workers 2``: the baseline reading the primary, and one
with ``NSER_READ_DATABASE_URL`` naming the standby (app/replicas.py: the replica's pool,
its health check, the fallback). ``wrk`` drives each in turn for ``--rounds`` rounds
(a Lua script picks a random CNIC per request, 90% known); medians. Afterwards the
replica service's ``/metrics`` must show no read fallen back to the primary, and the
standby's ``pg_stat_activity`` its ``nser-read`` connections. Both servers run on the same
machine as the services and wrk, so the ratio measures what reading through a replica
costs the look-up path, not the capacity a second machine adds. The last line printed is
one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import ROOT, fetchval, log, nser
from lookup import LUA, alternate, free_port, start, status_counts, stop, wait_up, write_cnics

sys.path.insert(0, str(ROOT / "tests"))
from replica import Pair, primary_and_replica

RESULTS = ROOT / "bench" / "results"
METRICS_TOKEN = secrets.token_hex(32)
DATABASE = "nser_bench_replicas"
SERVICE_ROLE = "nser_service"


def prepare(pair: Pair, households: int, seed: int) -> tuple[str, str, str]:
    """The registry on the primary, replayed by the standby: the primary's service URL,
    the standby's service URL, and the owner's URL on the primary."""
    asyncio.run(fetchval(pair.primary.url(), f"CREATE ROLE {SERVICE_ROLE} LOGIN"))
    asyncio.run(fetchval(pair.primary.url(), f"CREATE DATABASE {DATABASE}"))
    owner = pair.primary.url(DATABASE)
    service = pair.primary.url(DATABASE, user=SERVICE_ROLE)
    env = {"NSER_OWNER_DATABASE_URL": owner}
    nser(["db", "upgrade"], service, **env)
    log(f"seeding {households} households")
    started = time.monotonic()
    nser(["seed", "--households", str(households), "--seed", str(seed)], service, **env)
    log(f"seeded in {time.monotonic() - started:.0f} s")
    target = asyncio.run(fetchval(pair.primary.url(), "SELECT pg_current_wal_flush_lsn()::text"))
    started = time.monotonic()
    while not asyncio.run(
        fetchval(pair.standby.url(), f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")
    ):
        time.sleep(0.2)
    log(f"standby caught up in {time.monotonic() - started:.1f} s")
    return service, pair.standby.url(DATABASE, user=SERVICE_ROLE), owner


def fallbacks(metrics: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("nser_db_read_fallbacks_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure(pair: Pair, args: argparse.Namespace) -> dict[str, object]:
    service_url, replica_url, owner = prepare(pair, args.households, args.seed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="nser-bench-"))
    script, cnics = work / "lookup.lua", work / "cnics.txt"
    script.write_text(LUA)
    asyncio.run(write_cnics(owner, cnics, args.cnics))
    base_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "NSER_DATABASE_URL": service_url,
        "NSER_ENVIRONMENT": "test",
        "NSER_LOG_JSON": "true",
        "NSER_PUBLIC_LOOKUP_LIMITS": "100000000/minute",
        "NSER_METRICS_TOKEN": METRICS_TOKEN,
        "NSER_IN_PROCESS_WORKERS": "0",
    }
    envs = {
        "primary": base_env,
        "replica": {**base_env, "NSER_READ_DATABASE_URL": replica_url},
    }
    processes, targets = {}, {}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in envs}
    try:
        for name, env in envs.items():
            (work / f"metrics-{name}").mkdir()
            port = free_port()
            processes[name] = start(
                [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", "2"],
                {**env, "PROMETHEUS_MULTIPROC_DIR": str(work / f"metrics-{name}")},
                RESULTS / f"replicas-{name}-{stamp}.log",
            )
            targets[name] = f"http://127.0.0.1:{port}"
            wait_up(targets[name] + "/healthz", processes[name])
        alternate(targets, runs, script, cnics, args.rounds, args.duration, args.connections)
        scrape = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        metrics = httpx.get(targets["replica"] + "/metrics", headers=scrape, timeout=10).text
        ready = httpx.get(targets["replica"] + "/readyz", timeout=10).json()
        read_connections = asyncio.run(
            fetchval(
                pair.standby.url(DATABASE),
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nser-read'",
            )
        )
    finally:
        for process in processes.values():
            stop(process)
        shutil.rmtree(work, ignore_errors=True)

    def summary(name: str) -> dict[str, float]:
        return {
            "rps": round(statistics.median(r["rps"] for r in runs[name]), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in runs[name]), 3),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in runs[name]), 3),
        }

    primary, replica = summary("primary"), summary("replica")
    return {
        "households": args.households,
        "concurrency": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "primary": primary,
        "replica": replica,
        "rps_ratio": round(replica["rps"] / primary["rps"], 3),
        "p99_ratio": round(replica["p99_ms"] / primary["p99_ms"], 3),
        "replica_statuses": status_counts(metrics),
        "replica_fallbacks": fallbacks(metrics),
        "replica_reads_on": ready["reads"]["on"],
        "standby_read_connections": read_connections,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--households", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--cnics", type=int, default=20_000)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    with primary_and_replica() as pair:
        report = measure(pair, args)
    primary, replica = report["primary"], report["replica"]
    for name, figures in (("primary", primary), ("replica", replica)):
        assert isinstance(figures, dict)
        print(
            f"{name:<8}: {figures['rps']:>9.1f} req/s  p50 {figures['p50_ms']} ms  "
            f"p99 {figures['p99_ms']} ms"
        )
    print(f"ratio   : {report['rps_ratio']:.1%} of the primary's req/s; p99 x{report['p99_ratio']}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
