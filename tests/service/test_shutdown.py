"""A process shutting down never waits for ever on a connection a request still holds."""

from __future__ import annotations

import asyncio
import time

from app.db import close_pool, create_pool


async def test_a_held_connection_does_not_stop_the_pool_closing(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    held = await pool.acquire()  # a request cut mid-stream that never gives it back
    started = time.monotonic()
    await asyncio.wait_for(close_pool(pool, seconds=0.5), timeout=10)
    assert time.monotonic() - started < 5
    assert pool.is_closing()
    del held  # terminated with the pool


async def test_a_pool_with_nothing_held_closes_gracefully(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT 1") == 1
    await close_pool(pool, seconds=5)
    assert pool.is_closing()
