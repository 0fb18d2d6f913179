"""Readiness: the database answers and the migrations are current."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import asyncpg
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.settings import Settings


@cache
def expected_heads(migrations_dir: Path) -> frozenset[str]:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


async def readiness_problem(pool: asyncpg.Pool, settings: Settings) -> str | None:
    try:
        async with pool.acquire(timeout=2) as conn:
            rows = await conn.fetch("SELECT version_num FROM alembic_version")
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return f"database unavailable: {type(exc).__name__}"
    current = frozenset(r["version_num"] for r in rows)
    expected = expected_heads(settings.migrations_dir)
    if current != expected:
        return f"migrations not current: at {sorted(current)}, expected {sorted(expected)}"
    return None
