"""What the benchmarks share: the ``nser`` CLI, a throwaway seeded database, a running
``nser serve`` and a partner's token."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("NSER_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Fresh databases are named PREFIX + 8 hex digits (a shared server: say whose they are).
DB_PREFIX = os.environ.get("NSER_BENCH_DB_PREFIX", "nser_bench_")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def nser(args: list[str], url: str, **env: str) -> str:
    """Run the CLI on ``url``; returns its standard output (its progress and errors show)."""
    out = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={**os.environ, "NSER_DATABASE_URL": url, "NSER_ENVIRONMENT": "test", **env},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return out.stdout


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fetchval(url: str, sql: str) -> object:
    """One value of one query on ``url``, on a connection of its own."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def database_url(name_or_url: str) -> str:
    """A database name on the admin server, or already a URL."""
    if "://" in name_or_url:
        return name_or_url
    return f"{ADMIN_URL.rpartition('/')[0]}/{name_or_url}"


@contextmanager
def bench_database(
    reuse: str | None, households: int, seed: int = 1, *, keep: bool = False
) -> Iterator[str]:
    """The URL of the registry to measure: ``reuse`` (a URL or a database name) as it is,
    or a fresh database, migrated and seeded with ``households`` (none: only migrated),
    dropped afterwards unless ``keep``."""
    if reuse:
        yield database_url(reuse)
        return
    name = f"{DB_PREFIX}{uuid.uuid4().hex[:8]}"
    url = database_url(name)
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        nser(["db", "upgrade"], url)
        if households:
            log(f"database {name}: seeding {households} households")
            started = time.monotonic()
            nser(["seed", "--households", str(households), "--seed", str(seed)], url)
            log(f"seeded in {time.monotonic() - started:.0f} s")
        yield url
    finally:
        if keep:
            log(f"kept {url}")
        else:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def create_partner(
    url: str, categories: str, update_kinds: str | None = None, geo: tuple[str, ...] = ()
) -> Any:
    """A partner organisation with an agreement (over ``geo``, else the whole country) and
    an API client (``--json`` output)."""
    args = ["partners", "create", "--name", "Bench", "--type", "government"]
    args += ["--categories", categories]
    if update_kinds:
        args += ["--update-kinds", update_kinds]
    for code in geo:
        args += ["--geo", code]
    return json.loads(nser([*args, "--json"], url))


@contextmanager
def service(
    env: dict[str, str], *, workers: int = 1
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``nser serve`` on a free port with ``env`` over ``os.environ``, once it answers
    ``/healthz``: the process and its base URL. Stopped (SIGTERM) afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("nser serve did not start")
        yield server, base
    finally:
        server.terminate()
        server.wait(timeout=30)


def client_token(base: str, credentials: dict[str, str]) -> str:
    """An access token for the ``client_id``/``client_secret`` the CLI printed."""
    answer = httpx.post(
        base + "/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"],
        },
    )
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk_ms(text: str) -> float:
    """A latency as wrk prints it (``812.00us``, ``1.20ms``, ``2.01s``), in milliseconds."""
    found = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    assert found is not None, text
    return float(found.group(1)) * _WRK_UNITS[found.group(2)]


def run_wrk(
    base: str, script: Path, script_args: list[str], seconds: int, connections: int
) -> dict[str, float]:
    """``wrk`` with a Lua ``script`` (given ``script_args``) for ``seconds``: requests per
    second, p50 and p99 in milliseconds, requests, and non-2xx/3xx answers."""
    out = subprocess.run(
        [
            *("wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script)),
            *(base, "--", *script_args),
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
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        log(f"wrk socket errors: {errors.group(1)}")
    return {
        "rps": float(grab(r"Requests/sec:\s+([0-9.]+)")),
        "p50_ms": wrk_ms(grab(r"^\s+50%\s+(\S+)")),
        "p99_ms": wrk_ms(grab(r"^\s+99%\s+(\S+)")),
        "requests": int(grab(r"(\d+) requests in")),
        "non_2xx": int(bad.group(1)) if bad else 0,
    }


async def write_cnics(url: str, path: Path, count: int) -> None:
    """Up to ``count`` living members' CNICs, one a line, into ``path``: every look-up of
    them answers 200."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT cnic FROM members TABLESAMPLE SYSTEM (10)"
            " WHERE cnic IS NOT NULL AND deceased_on IS NULL LIMIT $1",
            count,
        )
    finally:
        await conn.close()
    path.write_text("\n".join(row["cnic"] for row in rows) + "\n")
    log(f"{len(rows)} CNICs in {path}")
