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
import uuid
from pathlib import Path

import asyncpg
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ADMIN = os.environ.get("NSER_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PROVINCE = "PK6"


def env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "NSER_DATABASE_URL": url,
        "NSER_ENVIRONMENT": "test",
        "NSER_TOKEN_LIMITS": "1000/minute",
        "NSER_LOG_LEVEL": "WARNING",
    }


def cli(args: list[str], url: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env(url),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def copy_sql() -> str:
    from app.services.beneficiaries_sql import Filters, household_document

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
    ap.add_argument("--reuse-db", default=None, help="URL of an already seeded database")
    args = ap.parse_args()
    url = args.reuse_db
    if url is None:
        name = f"nser_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        url = ADMIN.rpartition("/")[0] + "/" + name
        cli(["db", "upgrade"], url)
        t = time.perf_counter()
        cli(["seed", "--households", str(args.households)], url)
        print(
            f"seeded {args.households} households in {time.perf_counter() - t:.0f} s",
            file=sys.stderr,
        )
    partner = json.loads(
        cli(
            [
                "partners",
                "create",
                "--name",
                "Bench",
                "--type",
                "government",
                "--categories",
                "iv",
                "--json",
            ],
            url,
        )
    )
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
    for key, value in result.items():
        print(f"{key}: {value}")
    print(json.dumps(result))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
