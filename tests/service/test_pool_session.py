"""Pooled connections are released without asyncpg's reset round trip
(``app.db.keep_session``), so nothing may leave session state on one: settings are
``SET LOCAL``, advisory locks are transaction-level, nothing LISTENs or holds a cursor.

The two session-level advisory locks the service takes are on connections of their own
(the seed loader's and the public products' refresher), never a pool's.
"""

from __future__ import annotations

import re
from pathlib import Path

from app.db import create_pool

APP = Path(__file__).resolve().parents[2] / "app"
OWN_CONNECTIONS = {"services/seed/loader.py", "services/products/cube.py"}
SESSION_STATE = [
    re.compile(r"pg_(try_)?advisory_lock(_shared)?\(", re.I),
    re.compile(r"\bLISTEN\b|add_listener\(", re.I),
    re.compile(r"\bWITH\s+HOLD\b", re.I),
    re.compile(r"""["']\s*SET\s+(?!LOCAL\b|TRANSACTION\b)[a-z_.]+\s*(=|TO\b)""", re.I),
    re.compile(r"set_config\([^)]*,\s*false\s*\)", re.I),
]


def test_no_code_leaves_session_state_on_a_pooled_connection() -> None:
    found = []
    for path in APP.rglob("*.py"):
        name = path.relative_to(APP).as_posix()
        if name in OWN_CONNECTIONS:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(p.search(line) for p in SESSION_STATE):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "session state on a pooled connection:\n" + "\n".join(found)


async def test_a_released_connection_comes_back_clean(database_url: str) -> None:
    """What asyncpg still does on release: a transaction left open is rolled back, and a
    ``SET LOCAL`` ends with it."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        conn = await pool.acquire()
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SET LOCAL work_mem = '7MB'")
        await pool.release(conn)
        async with pool.acquire() as again:
            assert not again.is_in_transaction()
            assert await again.fetchval("SHOW work_mem") != "7MB"
    finally:
        await pool.close()
