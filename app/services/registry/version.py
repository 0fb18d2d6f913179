"""The registry's data version: it moves whenever households or members change.

Read from the ``registry_version`` sequence that statement triggers bump (migration 0007).
It is a cache key and an ETag ingredient for published aggregates, not a transaction
boundary: a value may move before the change that moved it commits, so caches keyed by it
also expire after a short time (``MAX_AGE_SECONDS``).
"""

from __future__ import annotations

import asyncpg

MAX_AGE_SECONDS = 60


async def data_version(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """The current version (0 before the first change)."""
    row = await conn.fetchrow("SELECT last_value, is_called FROM registry_version")
    assert row is not None
    return int(row["last_value"]) if row["is_called"] else 0
