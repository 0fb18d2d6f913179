"""Benchmark: as-of beneficiary lists (the registry rebuilt at an instant ``T`` from history)
against the same lists of today, from a running `nser serve`, over HTTP.

    .venv/bin/python bench/asof.py --reuse-db DB             # seeded, migrated (changes it)
    .venv/bin/python bench/asof.py --households 1000000      # fresh database

It takes ``T``, then changes ``--changed`` (1%) of the households after it, as an update
batch would leave them: the households' score, band and rooms (``pmt_rescore``-like history
rows with ``before``/``after``), and for a tenth of them one member's marital status (a
member's history row). Every run takes a new ``T`` (earlier runs' history lies before it).

- pages: ``GET /v1/partner/beneficiaries?limit=L`` from a cursor at a random household id,
  as of ``T`` and of today (the same positions, alternated), ``--pages`` each; medians of
  the latency, ``page_ratio`` = as-of median / plain median (lower is better).
- streams: the NDJSON list of one province (``--province``, PK2: about 6% of the
  registry), as of ``T`` and of today, alternated, ``--runs`` each; ``stream_ratio`` =
  as-of households/s over plain households/s (higher is better). Both streams must hold the
  same number of households (the changes touch no province).

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from datetime import datetime

import asyncpg
import httpx
from common import ROOT, bench_database, client_token, log, nser, service

sys.path.insert(0, str(ROOT))


def env(url: str) -> dict[str, str]:
    return {
        "NSER_DATABASE_URL": url,
        "NSER_ENVIRONMENT": "test",
        "NSER_TOKEN_LIMITS": "100000/minute",
        "NSER_PARTNER_DEFAULT_LIMITS": "100000/minute",
        "NSER_LOG_LEVEL": "WARNING",
        # A national scope in one stream: past the default NSER_EXPORT_MAX_HOUSEHOLDS.
        "NSER_EXPORT_MAX_HOUSEHOLDS": "100000000",
    }


CHANGE_HOUSEHOLDS = """
WITH picked AS (
  SELECT id FROM households WHERE id % $1 = $2
), updated AS (
  UPDATE households h
     SET pmt_score = least(100, coalesce(h.pmt_score, 0) + 1.25),
         poverty_band = CASE WHEN h.poverty_band = 'ultra_poor' THEN 'poor' ELSE 'ultra_poor' END,
         rooms = coalesce(h.rooms, 0) + 1,
         version = h.version + 1, updated_at = now()
    FROM picked p, households old
   WHERE h.id = p.id AND old.id = p.id
  RETURNING h.id, h.version, old.pmt_score AS s0, old.poverty_band AS b0, old.rooms AS r0,
            h.pmt_score AS s1, h.poverty_band AS b1, h.rooms AS r1
)
INSERT INTO household_history (household_id, version, change, before, after, source, actor)
SELECT id, version, 'household_update',
       jsonb_build_object('pmt_score', s0, 'poverty_band', b0, 'rooms', r0),
       jsonb_build_object('pmt_score', s1, 'poverty_band', b1, 'rooms', r1),
       'staff', 'bench'
  FROM updated
"""

CHANGE_MEMBERS = """
WITH picked AS (
  SELECT DISTINCT ON (m.household_id) m.id, m.household_id, m.marital_status
    FROM members m
   WHERE m.household_id % $1 = $2 AND m.household_id % ($1 * 10) = $2
   ORDER BY m.household_id, m.id
), updated AS (
  UPDATE members m
     SET marital_status = CASE WHEN p.marital_status = 'married' THEN 'widowed'
                               ELSE 'married' END,
         updated_at = now()
    FROM picked p
   WHERE m.id = p.id
  RETURNING m.id, m.household_id, p.marital_status AS s0, m.marital_status AS s1
)
INSERT INTO household_history (household_id, member_id, version, change, before, after,
                               source, actor)
SELECT u.household_id, u.id, h.version, 'member_update',
       jsonb_build_object('marital_status', s0), jsonb_build_object('marital_status', s1),
       'staff', 'bench'
  FROM updated u JOIN households h ON h.id = u.household_id
"""


async def change_after(url: str, every: int) -> tuple[datetime, int]:
    """Take ``T``, then change one household in ``every`` after it; returns (T, rows)."""
    conn = await asyncpg.connect(url)
    try:
        at: datetime = await conn.fetchval("SELECT clock_timestamp()")
        await asyncio.sleep(0.05)
        offset = random.randrange(every)
        async with conn.transaction():
            rows = int((await conn.execute(CHANGE_HOUSEHOLDS, every, offset)).split()[-1])
            rows += int((await conn.execute(CHANGE_MEMBERS, every, offset)).split()[-1])
        await conn.execute("ANALYZE household_history")
        return at, rows
    finally:
        await conn.close()


def get(client: httpx.Client, path: str, params: dict[str, str], accept: str) -> httpx.Response:
    r = client.get(path, params=params, headers={"Accept": accept})
    r.raise_for_status()
    return r


def stream(client: httpx.Client, params: dict[str, str]) -> tuple[int, float]:
    lines = 0
    started = time.perf_counter()
    with client.stream(
        "GET",
        "/v1/partner/beneficiaries",
        params=params,
        headers={"Accept": "application/x-ndjson"},
    ) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes():
            lines += chunk.count(b"\n")
    return lines, time.perf_counter() - started


def measure(url: str, args: argparse.Namespace) -> dict[str, object]:
    from app.services.sharing import asof as sharing_asof
    from app.services.sharing import beneficiaries

    nser(["db", "upgrade"], url)
    partner = json.loads(
        nser(
            [
                *("partners", "create", "--name", "Bench as-of", "--type", "government"),
                *("--categories", "iv", "--json"),
            ],
            url,
        )
    )
    at, changed = asyncio.run(change_after(url, args.every))
    as_of = at.isoformat()
    log(f"T = {as_of}; {changed} history rows written after it")
    pages: dict[str, list[float]] = {"asof": [], "plain": []}
    streams: dict[str, list[tuple[int, float]]] = {"asof": [], "plain": []}
    with service(env(url)) as (_, base):
        token = client_token(base, partner)
        client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=None
        )
        n_households = asyncio.run(_count(url))
        rng = random.Random(7)
        positions = [rng.randrange(n_households) for _ in range(args.pages + 3)]
        limit = str(args.limit)
        for i, position in enumerate(positions):
            plain_params = {"limit": limit, "cursor": beneficiaries.encode_cursor(position)}
            asof_params = {"limit": limit, "cursor": sharing_asof.encode_cursor(position, at)}
            started = time.perf_counter()
            plain = get(client, "/v1/partner/beneficiaries", plain_params, "application/json")
            plain_s = time.perf_counter() - started
            started = time.perf_counter()
            past = get(client, "/v1/partner/beneficiaries", asof_params, "application/json")
            asof_s = time.perf_counter() - started
            a, b = past.json()["items"], plain.json()["items"]
            assert [x["household_id"] for x in a] == [x["household_id"] for x in b]
            if i >= 3:  # the first few warm the pools and caches
                pages["plain"].append(plain_s)
                pages["asof"].append(asof_s)
        log(
            f"pages: as-of median {statistics.median(pages['asof']) * 1e3:.1f} ms, "
            f"plain {statistics.median(pages['plain']) * 1e3:.1f} ms"
        )
        # A walk: the next page from a cursor the service gave, as a client pages.
        walk: dict[str, list[float]] = {"asof": [], "plain": []}
        cursors: dict[str, str | None] = {"asof": None, "plain": None}
        for _ in range(args.walk):
            for kind in ("plain", "asof"):
                params = {"limit": limit}
                if kind == "asof" and cursors[kind] is None:
                    params["as_of"] = as_of
                if cursors[kind]:
                    params["cursor"] = str(cursors[kind])
                started = time.perf_counter()
                r = get(client, "/v1/partner/beneficiaries", params, "application/json")
                walk[kind].append(time.perf_counter() - started)
                cursors[kind] = r.json()["next_cursor"]
        log(
            f"walk from the start: as-of median {statistics.median(walk['asof']) * 1e3:.1f} ms, "
            f"plain {statistics.median(walk['plain']) * 1e3:.1f} ms"
        )
        stream(client, {"province": args.province})  # warm-up
        for i in range(args.runs):
            streams["plain"].append(stream(client, {"province": args.province}))
            streams["asof"].append(stream(client, {"province": args.province, "as_of": as_of}))
            log(
                f"stream run {i + 1}: as-of {streams['asof'][-1][0]} in "
                f"{streams['asof'][-1][1]:.1f} s, plain {streams['plain'][-1][0]} in "
                f"{streams['plain'][-1][1]:.1f} s"
            )
        client.close()
    assert all(n == streams["plain"][0][0] for n, _ in streams["asof"] + streams["plain"])
    asof_ms = statistics.median(pages["asof"]) * 1e3
    plain_ms = statistics.median(pages["plain"]) * 1e3
    asof_rate = statistics.median(n / s for n, s in streams["asof"])
    plain_rate = statistics.median(n / s for n, s in streams["plain"])
    return {
        "households": n_households,
        "history_rows_after_t": changed,
        "page_limit": args.limit,
        "pages": len(pages["asof"]),
        "page_asof_ms_median": round(asof_ms, 1),
        "page_plain_ms_median": round(plain_ms, 1),
        "page_asof_ms_p90": round(statistics.quantiles(pages["asof"], n=10)[-1] * 1e3, 1),
        "page_ratio": round(asof_ms / plain_ms, 2),
        "walk_asof_ms_median": round(statistics.median(walk["asof"]) * 1e3, 1),
        "walk_plain_ms_median": round(statistics.median(walk["plain"]) * 1e3, 1),
        "stream_province": args.province,
        "stream_households": streams["plain"][0][0],
        "stream_asof_households_per_s": round(asof_rate),
        "stream_plain_households_per_s": round(plain_rate),
        "stream_ratio": round(asof_rate / plain_rate, 2),
    }


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT max(id) FROM households"))
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=1_000_000)
    parser.add_argument("--reuse-db", default=None)
    parser.add_argument("--every", type=int, default=100, help="change 1 household in EVERY")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--walk", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--province", default="PK2")
    args = parser.parse_args()
    with bench_database(args.reuse_db, args.households) as url:
        result = measure(url, args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
