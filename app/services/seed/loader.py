"""``nser seed``: a deterministic synthetic registry, generated, scored and loaded with COPY.

Chunks of households are generated with numpy in a worker thread (each chunk's rng is keyed
by (seed, chunk index), so the output does not depend on timing) and scored there by the
PMT model's Python twin (``app.services.seed.scoring``), while the previous chunk is
streamed to PostgreSQL as CSV. Household ids continue after the registry's largest id;
member CNICs derive from (household id, position), so appends never collide. Loading is
one pass: nothing reads the loaded rows again except the index builds, so the seed's time
grows with the households it adds.

Into an empty registry the whole load is one transaction that drops the secondary indexes,
checks and foreign keys of ``households``/``members`` first and rebuilds them after the
COPY (several times faster than maintaining them row by row), and truncates the two empty
tables so the COPY can write its rows frozen; an append keeps every index and check.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import asyncpg
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from app.db import asyncpg_target
from app.services.pmt import model as pmt
from app.services.seed.geography import Villages, ensure_subunits, load_villages
from app.services.seed.households import households as generate_households
from app.services.seed.members import members as generate_members
from app.services.seed.scoring import scored

CHUNK = 25_000
PREFETCH = 2
_LOCK_KEY = 0x5EED_0001  # one seed at a time per database
_TABLES = ("households", "members")

# (stage, done, total): stages are "load" (households) and "index" (indexes and keys built).
Progress = Callable[[str, int, int], None]


@dataclass
class SeedResult:
    households: int
    members: int
    first_id: int
    last_id: int
    seconds: float
    bands: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0  # generating, scoring and COPY


@dataclass(frozen=True)
class _Chunk:
    households: bytes
    members: bytes
    household_count: int
    member_count: int


def _csv(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, batch_size=65_536))
    return sink.getvalue()


def build_chunk(
    villages: Villages,
    seed: int,
    index: int,
    first_id: int,
    size: int,
    today: date,
    model: pmt.PmtModel,
) -> tuple[pa.Table, pa.Table]:
    """Chunk ``index`` of a seed: its households (scored by ``model``) and members."""
    rng = np.random.default_rng([seed, index])
    frame, households = generate_households(rng, villages, first_id, size)
    members, totals = generate_members(rng, frame, villages, today)
    return scored(model, households, totals), members


def _encoded_chunk(
    villages: Villages,
    seed: int,
    index: int,
    first_id: int,
    size: int,
    today: date,
    model: pmt.PmtModel,
) -> _Chunk:
    hh, mm = build_chunk(villages, seed, index, first_id, size, today, model)
    return _Chunk(_csv(hh), _csv(mm), hh.num_rows, mm.num_rows)


async def _drop_secondary(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """Drop foreign keys, checks and plain indexes of the big tables; returns (table, DDL)
    to redo. Checks are validated again when they are added back (one scan per table)."""
    redo: list[tuple[str, str]] = []
    # Foreign keys, checks, and unique constraints no foreign key relies on (form_number).
    fks = await conn.fetch(
        """SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def
             FROM pg_constraint c
            WHERE conrelid = ANY($1::regclass[])
              AND (contype IN ('f', 'c')
                   OR (contype = 'u' AND NOT EXISTS (
                         SELECT 1 FROM pg_constraint f
                          WHERE f.contype = 'f' AND f.conindid = c.conindid)))
            ORDER BY contype""",
        list(_TABLES),
    )
    for fk in fks:
        await conn.execute(f'ALTER TABLE {fk["tbl"]} DROP CONSTRAINT "{fk["conname"]}"')
        redo.append(
            (fk["tbl"], f'ALTER TABLE {fk["tbl"]} ADD CONSTRAINT "{fk["conname"]}" {fk["def"]}')
        )
    indexes = await conn.fetch(
        """SELECT i.indrelid::regclass::text AS tbl, ci.relname, pg_get_indexdef(i.indexrelid)
                  AS def
             FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid
            WHERE i.indrelid = ANY($1::regclass[])
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)""",
        list(_TABLES),
    )
    for ix in indexes:
        await conn.execute(f'DROP INDEX "{ix["relname"]}"')
        redo.append((ix["tbl"], ix["def"]))
    return redo


async def _redo(conn: asyncpg.Connection, redo: list[tuple[str, str]], progress: Progress) -> None:
    # Indexes and unique constraints first (households before members), foreign keys last.
    for done, (_tbl, ddl) in enumerate(
        sorted(redo, key=lambda r: ("FOREIGN KEY" in r[1], r[0])), start=1
    ):
        await conn.execute(ddl)
        progress("index", done, len(redo))


async def _load(
    conn: asyncpg.Connection,
    villages: Villages,
    seed: int,
    first_id: int,
    count: int,
    today: date,
    model: pmt.PmtModel,
    progress: Progress,
    freeze: bool,
) -> int:
    loop = asyncio.get_running_loop()
    sizes = [min(CHUNK, count - start) for start in range(0, count, CHUNK)]
    members = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="seed-gen") as pool:
        pending: dict[int, Future[_Chunk]] = {}

        def submit(i: int) -> None:
            if i < len(sizes):
                pending[i] = pool.submit(
                    _encoded_chunk,
                    villages,
                    seed,
                    i,
                    first_id + i * CHUNK,
                    sizes[i],
                    today,
                    model,
                )

        for i in range(PREFETCH):
            submit(i)
        for i in range(len(sizes)):
            chunk = await asyncio.wrap_future(pending.pop(i), loop=loop)
            submit(i + PREFETCH)
            await conn.copy_to_table(
                "households",
                source=io.BytesIO(chunk.households),
                columns=_HOUSEHOLD_COLUMNS,
                format="csv",
                freeze=freeze,
            )
            await conn.copy_to_table(
                "members",
                source=io.BytesIO(chunk.members),
                columns=_MEMBER_COLUMNS,
                format="csv",
                freeze=freeze,
            )
            members += chunk.member_count
            progress("load", i * CHUNK + chunk.household_count, count)
    return members


_HOUSEHOLD_COLUMNS = [
    "id",
    "form_number",
    "province_code",
    "division_code",
    "district_code",
    "tehsil_code",
    "union_council_code",
    "village_code",
    "address",
    "lat",
    "lon",
    "phone",
    "surveyed_on",
    "rooms",
    "toilet_type",
    "electrical",
    "gas",
    "kitchen",
    "cows",
    "goats",
    "buffaloes",
    "bullocks",
    "lambs",
    "land_muraba",
    "land_acre",
    "land_kanal",
    "land_marla",
    "pmt_score",
    "poverty_band",
    "pmt_version",
]
_MEMBER_COLUMNS = [
    "household_id",
    "cnic",
    "name",
    "gender",
    "date_of_birth",
    "relationship",
    "marital_status",
    "disabilities",
    "education",
    "employment",
    "deceased_on",
]


def _quiet(_stage: str, _done: int, _total: int) -> None:
    return None


async def seed_registry(
    url: str,
    households: int,
    seed: int = 0,
    *,
    progress: Progress = _quiet,
    today: date | None = None,
) -> SeedResult:
    """Add ``households`` synthetic households (with members, scored) to the registry."""
    if households < 1:
        raise ValueError("--households must be at least 1")
    started = time.perf_counter()
    today = today or date.today()
    target = asyncpg_target(url)
    conn = await asyncpg.connect(dsn=target.dsn, host=target.host)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await ensure_subunits(conn)
        villages = await load_villages(conn)
        model = await pmt.current_model(conn)
        async with conn.transaction():
            await conn.execute("LOCK TABLE households, members IN SHARE ROW EXCLUSIVE MODE")
            first_id = await conn.fetchval("SELECT coalesce(max(id), 0) + 1 FROM households")
            empty = not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM members)")
            fresh = empty and first_id == 1
            redo = await _drop_secondary(conn) if fresh else []
            if fresh:
                # Empty, and nothing references them once the members' key is dropped:
                # truncated in this transaction, they take COPY FREEZE (rows written frozen,
                # so the index builds and the first reads do not rewrite every page).
                await conn.execute("TRUNCATE households, members")
            members = await _load(
                conn, villages, seed, first_id, households, today, model, progress, fresh
            )
            last_id = first_id + households - 1
            loaded = time.perf_counter()
            # Index sorts of tens of millions of rows stay in memory for this transaction.
            await conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
            await _redo(conn, redo, progress)
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('households', 'id'), $1)", last_id
            )
        await conn.execute("ANALYZE households, members, geo_units")
        bands = await conn.fetch(
            """SELECT poverty_band, count(*) AS n FROM households
                WHERE id BETWEEN $1 AND $2 GROUP BY 1""",
            first_id,
            last_id,
        )
    finally:
        await conn.close()
    return SeedResult(
        households=households,
        members=members,
        first_id=first_id,
        last_id=last_id,
        seconds=time.perf_counter() - started,
        bands={r["poverty_band"]: r["n"] for r in bands},
        load_seconds=loaded - started,
    )
