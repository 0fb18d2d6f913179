"""Benchmark: stream the NDJSON beneficiaries export of Punjab (PK6) over HTTP from a running
`nser serve`, against PostgreSQL's own COPY of the same households as JSON lines.

    .venv/bin/python bench/export.py --households 1000000          # fresh database
    .venv/bin/python bench/export.py --reuse-db postgresql://.../db  # already seeded
Prints households/s, MB/s and the server's peak RSS; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

import asyncpg
import httpx
import psutil
from common import ROOT, bench_database, create_partner

sys.path.insert(0, str(ROOT))
PROVINCE = "PK6"


def env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "NSER_DATABASE_URL": url,
        "NSER_ENVIRONMENT": "test",
        "NSER_TOKEN_LIMITS": "1000/minute",
        "NSER_LOG_LEVEL": "WARNING",
        # A national scope in one stream: past the default NSER_EXPORT_MAX_HOUSEHOLDS.
        "NSER_EXPORT_MAX_HOUSEHOLDS": "100000000",
    }


def copy_sql() -> str:
    from app.services.sharing.beneficiaries_sql import Filters, household_document

    doc = household_document(Filters())
    # asyncpg wraps this in COPY (...) TO STDOUT.
    return f"SELECT {doc} FROM households h WHERE h.province_code = '{PROVINCE}' ORDER BY h.id"


async def run_copy(url: str) -> tuple[int, int, float]:
    conn = await asyncpg.connect(url)
    lines = size = 0

    async def sink(chunk: bytes) -> None:
        nonlocal lines, size
        lines += chunk.count(b"\n")
        size += len(chunk)

    started = time.perf_counter()
    await conn.copy_from_query(copy_sql(), output=sink)
    elapsed = time.perf_counter() - started
    await conn.close()
    return lines, size, elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--households", type=int, default=1_000_000)
    ap.add_argument("--reuse-db", default=None, help="an already seeded database (name or URL)")
    args = ap.parse_args()
    with bench_database(args.reuse_db, args.households) as url:
        result = measure(url, args)
    for key, value in result.items():
        print(f"{key}: {value}")
    print(json.dumps(result))


def measure(url: str, args: argparse.Namespace) -> dict[str, object]:
    partner = create_partner(url, "iv")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env(url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        proc = psutil.Process(server.pid)
        while not stop.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        token = httpx.post(
            base + "/v1/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": partner["client_id"],
                "client_secret": partner["client_secret"],
            },
        ).json()["access_token"]
        threading.Thread(target=watch, daemon=True).start()
        lines = size = 0
        started = time.perf_counter()
        with httpx.stream(
            "GET",
            base + "/v1/partner/beneficiaries",
            params={"province": PROVINCE},
            headers={"Authorization": f"Bearer {token}", "Accept": "application/x-ndjson"},
            timeout=None,
        ) as r:
            r.raise_for_status()
            for chunk in r.iter_bytes():
                lines += chunk.count(b"\n")
                size += len(chunk)
        http_s = time.perf_counter() - started
        stop.set()
        copy_lines, copy_size, copy_s = asyncio.run(run_copy(url))
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
    result = {
        "households_total": args.households if args.reuse_db is None else None,
        "province": PROVINCE,
        "http_households": lines,
        "http_households_per_s": round(lines / http_s),
        "http_mb_per_s": round(size / http_s / 1e6, 1),
        "copy_households": copy_lines,
        "copy_households_per_s": round(copy_lines / copy_s),
        "copy_mb_per_s": round(copy_size / copy_s / 1e6, 1),
        "ratio_vs_copy": round((lines / http_s) / (copy_lines / copy_s), 2),
        "server_peak_rss_mb": round(peak / 2**20, 1),
    }
    return result


if __name__ == "__main__":
    main()
