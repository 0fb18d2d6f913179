"""What the benchmarks share: the ``nser`` CLI, and a throwaway seeded database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("NSER_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


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
    name = f"nser_bench_{uuid.uuid4().hex[:8]}"
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


def create_partner(url: str, categories: str, update_kinds: str | None = None) -> Any:
    """A partner organisation with an agreement and an API client (``--json`` output)."""
    args = ["partners", "create", "--name", "Bench", "--type", "government"]
    args += ["--categories", categories]
    if update_kinds:
        args += ["--update-kinds", update_kinds]
    return json.loads(nser([*args, "--json"], url))
