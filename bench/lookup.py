"""Benchmark the public look-up against a raw-asyncpg baseline, in the same run.

    .venv/bin/python bench/lookup.py                      # 1,000,000 households, fresh DB
    .venv/bin/python bench/lookup.py --households 200000
    .venv/bin/python bench/lookup.py --reuse-db postgresql://postgres@127.0.0.1:5432/nser_bench_x

It seeds a fresh database (``python -m app seed``) unless ``--reuse-db`` is given, writes a
file of CNICs (90% existing and living, 10% missing), starts the service
(``nser serve --workers 2``: uvloop, httptools, rate limiting and JSON logging on, limits
raised so nothing is refused, logs to a file) and ``bench/baseline_app.py`` (same query, bare
ASGI, 2 workers), then drives each with ``wrk`` (a Lua script picks a random CNIC per
request), alternating service and baseline for ``--rounds`` rounds. Targets: service
requests/s >= 70% of the baseline's, p99 <= 1.5x the baseline's. The last line printed is
one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
from common import ROOT, bench_database, log

RESULTS = ROOT / "bench" / "results"
# The service's /metrics answers only this bearer token (NSER_METRICS_TOKEN).
METRICS_TOKEN = secrets.token_hex(32)

LUA = """
local paths = {}
function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = "/v1/public/scores/" .. line
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end
function request()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def write_cnics(url: str, path: Path, count: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ANALYZE members")
        rows = await conn.fetch(
            "SELECT cnic FROM members TABLESAMPLE SYSTEM (5)"
            " WHERE cnic IS NOT NULL AND deceased_on IS NULL LIMIT $1",
            count,
        )
    finally:
        await conn.close()
    existing = [row["cnic"] for row in rows]
    rng = random.Random(7)
    # Leading 9: no province uses it, so these are certainly missing.
    missing = [f"9{rng.randrange(10**12):012d}" for _ in range(max(1, len(existing) // 9))]
    lines = [c if i % 2 else f"{c[:5]}-{c[5:12]}-{c[12]}" for i, c in enumerate(existing)]
    path.write_text("\n".join(lines + missing) + "\n")
    log(f"{len(existing)} existing + {len(missing)} missing CNICs in {path}")


def start(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early ({url})")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"server did not start: {url}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNIT[unit]


def run_wrk(
    base_url: str, script: Path, cnics: Path, seconds: int, connections: int
) -> dict[str, float]:
    result = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            base_url,
            "--",
            str(cnics),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    out = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        log(f"wrk socket errors: {errors.group(1)}")
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99}


def alternate(
    targets: dict[str, str],
    runs: dict[str, list[dict[str, float]]],
    script: Path,
    cnics: Path,
    rounds: int,
    seconds: int,
    connections: int,
) -> None:
    """Warm every target, then run ``rounds`` rounds of wrk on each, the order flipped every
    round so that neither side always runs on the warmer or the quieter machine; each
    round's figures are appended to ``runs[name]``."""
    for name, base in targets.items():  # warm the pools, caches and prepared statements
        run_wrk(base, script, cnics, 3, connections)
        log(f"warmed {name}")
    names = list(targets)
    for round_no in range(rounds):
        for name in names if round_no % 2 == 0 else names[::-1]:
            figures = run_wrk(targets[name], script, cnics, seconds, connections)
            runs[name].append(figures)
            log(f"round {round_no + 1} {name}: {figures}")


def status_counts(metrics: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    pattern = r'nser_http_requests_total\{method="GET",route="/v1/public/scores/\{cnic\}",status="(\d+)"\} ([0-9.e+]+)'
    for status, value in re.findall(pattern, metrics):
        counts[status] = counts.get(status, 0) + float(value)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--households", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--reuse-db", metavar="URL", help="skip seeding; benchmark this database")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the fresh database")
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--cnics", type=int, default=20_000)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")

    with bench_database(args.reuse_db, args.households, args.seed, keep=args.keep_db) as url:
        runs, statuses, real_log = measure(url, args)

    def summary(name: str) -> dict[str, float]:
        return {
            "rps": round(statistics.median(r["rps"] for r in runs[name]), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in runs[name]), 3),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in runs[name]), 3),
        }

    service, base = summary("service"), summary("baseline")
    report = {
        "households": None if args.reuse_db else args.households,
        "database": url if args.reuse_db else "fresh",
        "concurrency": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "service": service,
        "baseline": base,
        "rps_ratio": round(service["rps"] / base["rps"], 3),
        "p99_ratio": round(service["p99_ms"] / base["p99_ms"], 3),
        "service_statuses": statuses,
        "service_log": str(real_log),
    }
    report["meets_target"] = report["rps_ratio"] >= 0.7 and report["p99_ratio"] <= 1.5
    print(
        f"service : {service['rps']:>9.1f} req/s  p50 {service['p50_ms']} ms  p99 {service['p99_ms']} ms"
    )
    print(f"baseline: {base['rps']:>9.1f} req/s  p50 {base['p50_ms']} ms  p99 {base['p99_ms']} ms")
    print(f"ratio   : {report['rps_ratio']:.1%} of baseline req/s; p99 x{report['p99_ratio']}")
    print(json.dumps(report))


def measure(
    url: str, args: argparse.Namespace
) -> tuple[dict[str, list[dict[str, float]]], dict[str, float], Path]:
    """Start the service and the baseline on ``url`` and drive both with wrk, alternating."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="nser-bench-"))
    script, cnics = work / "lookup.lua", work / "cnics.txt"
    script.write_text(LUA)
    asyncio.run(write_cnics(url, cnics, args.cnics))

    real_port, base_port = free_port(), free_port()
    common = {**os.environ, "PYTHONUNBUFFERED": "1"}
    real_env = {
        **common,
        "NSER_DATABASE_URL": url,
        "NSER_ENVIRONMENT": "test",
        "NSER_LOG_JSON": "true",
        "NSER_PUBLIC_LOOKUP_LIMITS": "100000000/minute",
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
        "NSER_METRICS_TOKEN": METRICS_TOKEN,
    }
    (work / "metrics").mkdir()
    real_log = RESULTS / f"service-{stamp}.log"
    real = start(
        [sys.executable, "-m", "app", "serve", "--port", str(real_port), "--workers", "2"],
        real_env,
        real_log,
    )
    baseline = start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.baseline_app:app",
            "--port",
            str(base_port),
            "--workers",
            "2",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        {**common, "BENCH_DATABASE_URL": url},
        RESULTS / f"baseline-{stamp}.log",
    )
    targets = {
        "service": f"http://127.0.0.1:{real_port}",
        "baseline": f"http://127.0.0.1:{base_port}",
    }
    runs: dict[str, list[dict[str, float]]] = {"service": [], "baseline": []}
    try:
        wait_up(targets["service"] + "/healthz", real)
        wait_up(targets["baseline"] + "/", baseline)
        alternate(targets, runs, script, cnics, args.rounds, args.duration, args.connections)
        scrape = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        metrics = httpx.get(targets["service"] + "/metrics", headers=scrape, timeout=10)
        statuses = status_counts(metrics.text)
    finally:
        stop(real)
        stop(baseline)
        shutil.rmtree(work, ignore_errors=True)
    return runs, statuses, real_log


if __name__ == "__main__":
    main()
