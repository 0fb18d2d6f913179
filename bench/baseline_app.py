"""The benchmark's baseline: the same look-up as the service, with nothing else around it.

A bare ASGI callable over a raw asyncpg pool: no framework, no validation model, no rate
limiting, no logging, no metrics. Run it like the service (uvicorn, 2 workers, uvloop,
httptools)::

    BENCH_DATABASE_URL=postgresql://... uvicorn bench.baseline_app:app --workers 2 \
        --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import os
import re
from typing import Any

import asyncpg
import orjson

from app.services.registry.lookup import PUBLIC_SCORE_SQL

_CNIC = re.compile(r"[0-9]{13}|[0-9]{5}-[0-9]{7}-[0-9]", re.ASCII)
_JSON = [(b"content-type", b"application/json")]
_pool: asyncpg.Pool | None = None


async def _send(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _pool
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _pool = await asyncpg.create_pool(
                    os.environ["BENCH_DATABASE_URL"], min_size=2, max_size=10
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _pool is not None:
                    await _pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    written = scope["path"].rpartition("/")[2]
    if not _CNIC.fullmatch(written):
        await _send(send, 422, b'{"detail":"not a CNIC"}')
        return
    cnic = written.replace("-", "")
    assert _pool is not None
    row = await _pool.fetchrow(PUBLIC_SCORE_SQL, cnic)
    if row is None:
        await _send(send, 404, b'{"detail":"not found"}')
        return
    body = {
        "cnic": f"{cnic[:5]}-*******-{cnic[12]}",
        "pmt_score": row["pmt_score"],
        "poverty_band": row["poverty_band"],
        "surveyed_on": row["surveyed_on"],
        "pmt_version": row["pmt_version"],
    }
    await _send(send, 200, orjson.dumps(body))
