"""Benchmark public look-ups through pgbouncer (transaction mode) against direct connections,
in the same run.

    .venv/bin/python bench/pgbouncer.py                       # 100,000 households, fresh DB
    .venv/bin/python bench/pgbouncer.py --reuse-db nser_auditlock_x --rounds 3
    .venv/bin/python bench/pgbouncer.py --cache-on            # also: pgbouncer, cache on

It seeds a fresh database unless ``--reuse-db`` is given, writes a file of living members'
CNICs (every look-up answers 200), starts Debian's pgbouncer (1.18: no prepared statement
tracking) on a free port of 5520-5539 in transaction mode with ``--server-pool`` (10)
server connections per database and user, and then, for ``--rounds`` rounds, serves each
variant in turn (``nser serve --workers 2``: 2 processes, each an asyncpg pool of up to 10
and an engine; limits lifted, no in-process workers) and drives it with
``wrk -c 64`` on ``GET /v1/public/scores/{cnic}``:

- ``direct`` (the baseline): NSER_DATABASE_URL straight to PostgreSQL, as today;
- ``direct-nocache``: the same with NSER_DB_STATEMENT_CACHE=false (what turning asyncpg's
  statement cache off costs by itself);
- ``pgbouncer``: NSER_DATABASE_URL through pgbouncer, NSER_DB_STATEMENT_CACHE=false,
  NSER_DIRECT_DATABASE_URL straight to PostgreSQL (the supported set-up);
- ``pgbouncer-cache`` (with ``--cache-on``): through pgbouncer with the cache on, to count
  the errors that setting prevents.

Medians of the rounds; each variant's requests/s as a ratio to ``direct``'s; errors are
answers other than 200 and socket errors; ``server_connections`` is the most backends of
the database seen while it ran (sampled each second). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from common import ROOT, bench_database, log, write_cnics, wrk_ms
from lookup import free_port, start, stop, wait_up

RESULTS = ROOT / "bench" / "results"
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PORTS = range(5520, 5540)

LUA = """
local paths = {}
function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = "/v1/public/scores/" .. line end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end
function request()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""


def run_wrk(
    base: str, script: Path, cnics: Path, seconds: int, connections: int
) -> dict[str, float]:
    out = subprocess.run(
        [
            *("wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)),
            *(base, "--", str(cnics)),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout

    def grab(pattern: str) -> str:
        found = re.search(pattern, out, re.M)
        assert found is not None, out
        return found.group(1)

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "rps": float(grab(r"Requests/sec:\s+([0-9.]+)")),
        "p50_ms": wrk_ms(grab(r"^\s+50%\s+(\S+)")),
        "p99_ms": wrk_ms(grab(r"^\s+99%\s+(\S+)")),
        "requests": int(grab(r"(\d+) requests in")),
        "errors": (int(bad.group(1)) if bad else 0)
        + (sum(int(n) for n in sockets.groups()) if sockets else 0),
    }


@contextmanager
def pgbouncer(server_url: str, users: list[str], pool_size: int) -> Iterator[int]:
    """Debian's pgbouncer in transaction mode in front of ``server_url``'s server; its port."""
    if not os.path.exists(PGBOUNCER):
        raise SystemExit(f"{PGBOUNCER} is missing (apt-get install -y pgbouncer)")
    server = urlsplit(server_url)
    folder = Path(tempfile.mkdtemp(prefix="nser-bench-pgbouncer-"))
    folder.chmod(0o755)
    port = next(p for p in PORTS if _free(p))
    (folder / "users.txt").write_text("".join(f'"{u}" ""\n' for u in users))
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={server.hostname} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "users.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
log_connections = 0
log_disconnections = 0
"""
    )
    for name in ("users.txt", "pgbouncer.ini"):
        (folder / name).chmod(0o644)
    command = [PGBOUNCER, *(["-u", "nobody"] if os.geteuid() == 0 else []), "pgbouncer.ini"]
    with (folder / "pgbouncer.log").open("wb") as out:
        process = subprocess.Popen(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            if not _free(port):
                break
            if process.poll() is not None:
                raise SystemExit((folder / "pgbouncer.log").read_text())
            time.sleep(0.05)
        log(f"pgbouncer on port {port}, {pool_size} server connections per database and user")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{user}@127.0.0.1:{port}").geturl()


class Backends:
    """The most backends of a database seen, sampled each second in a thread."""

    def __init__(self, url: str) -> None:
        self.url, self.most, self._stop = url, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def sample() -> None:
            conn = await asyncpg.connect(self.url)
            try:
                while not self._stop.is_set():
                    n = await conn.fetchval(
                        "SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = current_database()"
                    )
                    self.most = max(self.most, int(n))
                    await asyncio.sleep(1)
            finally:
                await conn.close()

        asyncio.run(sample())

    def __enter__(self) -> Backends:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--households", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--reuse-db", metavar="DB", help="skip seeding; benchmark this database")
    ap.add_argument("--keep-db", action="store_true")
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--server-pool", type=int, default=10, help="pgbouncer default_pool_size")
    ap.add_argument("--cache-on", action="store_true", help="also pgbouncer with the cache on")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    with bench_database(args.reuse_db, args.households, args.seed, keep=args.keep_db) as url:
        runs = measure(url, args)
    report: dict[str, Any] = {
        "bench": "pgbouncer",
        "households": None if args.reuse_db else args.households,
        "connections": args.connections,
        "server_pool": args.server_pool,
        "duration_s": args.duration,
        "rounds": args.rounds,
    }
    base = statistics.median(r["rps"] for r in runs["direct"])
    for name, done in runs.items():
        figures = {
            "rps": round(statistics.median(r["rps"] for r in done), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in done), 2),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in done), 2),
            "errors": int(sum(r["errors"] for r in done)),
            "requests": int(sum(r["requests"] for r in done)),
            "server_connections": int(max(r["backends"] for r in done)),
        }
        figures["vs_direct"] = round(figures["rps"] / base, 3)
        report[name] = figures
        print(
            f"{name:16} {figures['rps']:8.1f} req/s  p50 {figures['p50_ms']:6.2f} ms  p99 "
            f"{figures['p99_ms']:7.2f} ms  {figures['vs_direct']:.1%} of direct  errors "
            f"{figures['errors']}/{figures['requests']}  server connections "
            f"{figures['server_connections']}"
        )
    print(json.dumps(report))


def measure(url: str, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="nser-bench-pgbouncer-"))
    script, cnics = work / "lookup.lua", work / "cnics.txt"
    script.write_text(LUA)
    user = urlsplit(url).username or "postgres"
    try:
        asyncio.run(write_cnics(url, cnics, 20_000))
        with pgbouncer(url, [user], args.server_pool) as port:
            pooled = through(url, port)
            variants: dict[str, dict[str, str]] = {
                "direct": {"NSER_DATABASE_URL": url},
                "direct-nocache": {"NSER_DATABASE_URL": url, "NSER_DB_STATEMENT_CACHE": "false"},
                "pgbouncer": {
                    "NSER_DATABASE_URL": pooled,
                    "NSER_DIRECT_DATABASE_URL": url,
                    "NSER_DB_STATEMENT_CACHE": "false",
                },
            }
            if args.cache_on:
                variants["pgbouncer-cache"] = {
                    "NSER_DATABASE_URL": pooled,
                    "NSER_DIRECT_DATABASE_URL": url,
                }
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
            names = list(variants)
            for round_no in range(args.rounds):
                order = names[round_no % len(names) :] + names[: round_no % len(names)]
                for name in order:
                    runs[name].append(serve_and_drive(name, variants[name], url, work, stamp, args))
        return runs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def serve_and_drive(
    name: str,
    variant: dict[str, str],
    url: str,
    work: Path,
    stamp: str,
    args: argparse.Namespace,
) -> dict[str, float]:
    port = free_port()
    (work / "metrics").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "NSER_ENVIRONMENT": "test",
        "NSER_LOG_JSON": "true",
        "NSER_IN_PROCESS_WORKERS": "0",
        "NSER_PUBLIC_LOOKUP_LIMITS": "100000000/minute",
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
        **variant,
    }
    server = start(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", "2"],
        env,
        RESULTS / f"pgbouncer-{stamp}-{name}.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base + "/healthz", server)
        run_wrk(base, work / "lookup.lua", work / "cnics.txt", 3, args.connections)  # warm
        with Backends(url) as backends:
            figures = run_wrk(
                base, work / "lookup.lua", work / "cnics.txt", args.duration, args.connections
            )
        figures["backends"] = backends.most
        log(f"{name}: {figures}")
        return figures
    finally:
        stop(server)


if __name__ == "__main__":
    main()
