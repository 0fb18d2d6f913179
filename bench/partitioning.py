"""What declarative partitioning would buy the registry, measured on a seeded database.

    .venv/bin/python bench/partitioning.py --reuse-db nser_bench_10m [--runs 5] [--keep]

Builds, in a schema of its own (``partition_bench``, dropped afterwards unless ``--keep``),
partitioned copies of the registry beside the plain tables it reads:

- ``households`` and ``members`` partitioned by province (LIST on ``province_code``; the
  members carry their household's province, as they would have to). CNIC uniqueness cannot
  come from a partitioned unique index (it would have to include the province), so a
  ``cnic_directory`` table (CNIC primary key -> household, province) keeps it, as the
  design would: every member insert and CNIC change writes it too.
- ``household_history`` and an ``audit_log``-shaped table partitioned by month (RANGE on the
  timestamp), filled with synthetic rows over 24 months, beside plain copies of the same.

Then it times, alternating plain and partitioned, medians of ``--runs``:

- look-up: the public score by CNIC, 500 random CNICs per run;
- export: every household of a province with its members (COPY to a null sink), and of
  one district;
- vacuum: after 1% of households changed across the country, ``VACUUM`` of the table
  (partitioned: of every partition); after 1% of one province's changed, of the table
  (plain) or of that province's partition;
- writes: 10,000 new members (births), with the CNIC directory's row when partitioned;
- re-score: the PMT's member aggregate joined to the households, for the whole registry
  (partitioned: partition-wise join and aggregate on) and for one province;
- history and audit: one household's history (the as-of read), one month's rows (a
  report or an archive), and the rows after an id (an incremental audit verify).

Prints a line per measure and, last, one JSON object with every median and ratio
(partitioned / plain: below 1 is a gain).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from common import database_url, log

SCHEMA = "partition_bench"
HISTORY_MONTHS = 24
HISTORY_PER_MONTH = int(os.environ.get("BENCH_HISTORY_PER_MONTH", "500000"))
AUDIT_PER_MONTH = int(os.environ.get("BENCH_AUDIT_PER_MONTH", "250000"))


async def _timed(conn: asyncpg.Connection, sql: str, *args: Any) -> float:
    started = time.perf_counter()
    await conn.execute(sql, *args)
    return time.perf_counter() - started


async def _null_copy(conn: asyncpg.Connection, query: str) -> tuple[float, int]:
    size = 0

    async def sink(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)

    started = time.perf_counter()
    await conn.copy_from_query(query, output=sink)
    return time.perf_counter() - started, size


async def build(
    conn: asyncpg.Connection, loaded: bool = False, indexed: bool = False
) -> dict[str, float]:
    """The partitioned copies; returns how long each took to load and index. ``loaded``:
    the copies of households and members are there already (an interrupted build)."""
    took: dict[str, float] = {}
    s = SCHEMA
    await conn.execute("SET maintenance_work_mem = '1GB'")
    if not loaded:
        took.update(await _load_registry(conn))
    if not indexed:
        await _index_registry(conn, took)
    await _history_and_audit(conn, took)
    log(f"  {took['load_history_audit']:.0f} s; ANALYZE")
    await conn.execute(f"ANALYZE {s}.households, {s}.members, {s}.cnic_directory")
    await conn.execute(
        f"ANALYZE {s}.history_plain, {s}.history_part, {s}.audit_plain, {s}.audit_part"
    )
    return took


async def _load_registry(conn: asyncpg.Connection) -> dict[str, float]:
    took: dict[str, float] = {}
    provinces = [
        r["code"]
        for r in await conn.fetch("SELECT code FROM geo_units WHERE level = 'province' ORDER BY 1")
    ]
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
    s = SCHEMA
    await conn.execute(
        f"""CREATE TABLE {s}.households (LIKE public.households INCLUDING DEFAULTS)
              PARTITION BY LIST (province_code);
            CREATE TABLE {s}.members (LIKE public.members INCLUDING DEFAULTS,
                                       province_code varchar(8) NOT NULL)
              PARTITION BY LIST (province_code);"""
    )
    for code in provinces:
        low = code.lower()
        await conn.execute(
            f"""CREATE TABLE {s}.households_{low} PARTITION OF {s}.households
                  FOR VALUES IN ('{code}');
                CREATE TABLE {s}.members_{low} PARTITION OF {s}.members
                  FOR VALUES IN ('{code}');"""
        )
    log("partitioned copies: households")
    took["load_households"] = await _timed(
        conn, f"INSERT INTO {s}.households SELECT * FROM public.households"
    )
    log(f"  {took['load_households']:.0f} s; members")
    columns = ", ".join(
        f"m.{r['attname']}"
        for r in await conn.fetch(
            """SELECT attname FROM pg_attribute WHERE attrelid = 'public.members'::regclass
                AND attnum > 0 AND NOT attisdropped ORDER BY attnum"""
        )
    )
    took["load_members"] = await _timed(
        conn,
        f"""INSERT INTO {s}.members SELECT {columns}, h.province_code
              FROM public.members m JOIN public.households h ON h.id = m.household_id""",
    )
    return took


async def _index_registry(conn: asyncpg.Connection, took: dict[str, float]) -> None:
    s = SCHEMA
    log("  indexes and the CNIC directory")
    started = time.perf_counter()
    # Foreign keys per province, partition to partition, added NOT VALID (PostgreSQL 15
    # has no NOT VALID key on a partitioned table): the rows are copies of valid ones, and
    # new rows are checked all the same (what the insert measure needs).
    provinces = [
        r["code"].lower()
        for r in await conn.fetch("SELECT code FROM geo_units WHERE level = 'province'")
    ]
    keys = [
        f"""ALTER TABLE {s}.members_{p} ADD FOREIGN KEY (province_code, household_id)
              REFERENCES {s}.households_{p} (province_code, id) NOT VALID"""
        for p in provinces
    ]
    for ddl in (
        f"ALTER TABLE {s}.households ADD PRIMARY KEY (province_code, id)",
        f"CREATE INDEX ON {s}.households (district_code, id)",
        f"CREATE INDEX ON {s}.households (tehsil_code, id)",
        f"CREATE INDEX ON {s}.households (union_council_code, id)",
        f"ALTER TABLE {s}.members ADD PRIMARY KEY (province_code, id)",
        f"CREATE INDEX ON {s}.members (household_id)",
        *keys,
        f"CREATE INDEX ON {s}.members (cnic) WHERE cnic IS NOT NULL",
        f"""CREATE TABLE {s}.cnic_directory (cnic varchar(13) NOT NULL,
                                             household_id bigint NOT NULL,
                                             province_code varchar(8) NOT NULL)""",
        f"""INSERT INTO {s}.cnic_directory
              SELECT cnic, household_id, province_code FROM {s}.members
               WHERE cnic IS NOT NULL""",
        f"ALTER TABLE {s}.cnic_directory ADD PRIMARY KEY (cnic)",
    ):
        await conn.execute(ddl)
        log(f"    {time.perf_counter() - started:.0f} s: {ddl.split('(')[0].strip()[:60]}")
    took["index_registry"] = time.perf_counter() - started


async def _history_and_audit(conn: asyncpg.Connection, took: dict[str, float]) -> None:
    s = SCHEMA
    log(f"  history and audit, {HISTORY_MONTHS} months")
    started = time.perf_counter()
    max_household = await conn.fetchval("SELECT max(id) FROM public.households")
    await conn.execute(
        f"""DROP TABLE IF EXISTS {s}.history_plain, {s}.history_part, {s}.audit_plain,
                                 {s}.audit_part CASCADE;
            CREATE TABLE {s}.history_plain (LIKE public.household_history INCLUDING DEFAULTS);
            CREATE TABLE {s}.history_part (LIKE public.household_history INCLUDING DEFAULTS)
              PARTITION BY RANGE (changed_at);
            CREATE TABLE {s}.audit_plain (LIKE public.audit_log INCLUDING DEFAULTS);
            CREATE TABLE {s}.audit_part (LIKE public.audit_log INCLUDING DEFAULTS)
              PARTITION BY RANGE (at);"""
    )
    for month in range(HISTORY_MONTHS):
        await conn.execute(
            f"""CREATE TABLE {s}.history_m{month} PARTITION OF {s}.history_part
                  FOR VALUES FROM (timestamptz '2025-01-01' + interval '{month} months')
                             TO (timestamptz '2025-01-01' + interval '{month + 1} months');
                CREATE TABLE {s}.audit_m{month} PARTITION OF {s}.audit_part
                  FOR VALUES FROM (timestamptz '2025-01-01' + interval '{month} months')
                             TO (timestamptz '2025-01-01' + interval '{month + 1} months');"""
        )
    total_history = HISTORY_MONTHS * HISTORY_PER_MONTH
    total_audit = HISTORY_MONTHS * AUDIT_PER_MONTH
    await conn.execute(
        f"""INSERT INTO {s}.history_plain (id, household_id, member_id, version, change,
                                           before, after, source, changed_at)
            SELECT g, 1 + (g::bigint * 7919) % {max_household}, NULL, 2, 'phone',
                   '{{"phone": "+923000000000"}}', '{{"phone": "+923111111111"}}',
                   'partner_batch',
                   timestamptz '2025-01-01'
                     + (g::float8 / {total_history}) * interval '{HISTORY_MONTHS * 30} days'
              FROM generate_series(1, {total_history}) g;
            INSERT INTO {s}.history_part SELECT * FROM {s}.history_plain
             WHERE changed_at < timestamptz '2025-01-01' + interval '{HISTORY_MONTHS} months';
            INSERT INTO {s}.audit_plain (id, at, actor_type, client_id, endpoint, filters,
                                         dimensions, households, members, prev_hash, hash,
                                         key_id)
            SELECT g, timestamptz '2025-01-01'
                        + (g::float8 / {total_audit}) * interval '{HISTORY_MONTHS * 30} days',
                   'partner', 'client-' || g % 50, 'GET /v1/partner/beneficiaries', '{{}}',
                   '{{}}', 100, 600, '\\x00', sha256(g::text::bytea), 'k1'
              FROM generate_series(1, {total_audit}) g;
            INSERT INTO {s}.audit_part SELECT * FROM {s}.audit_plain
             WHERE at < timestamptz '2025-01-01' + interval '{HISTORY_MONTHS} months';
            ALTER TABLE {s}.history_plain ADD PRIMARY KEY (id);
            CREATE INDEX ON {s}.history_plain (household_id, id);
            CREATE INDEX ON {s}.history_plain (changed_at, id);
            CREATE INDEX ON {s}.history_part (household_id, id);
            CREATE INDEX ON {s}.history_part (changed_at, id);
            CREATE INDEX ON {s}.history_part (id);
            ALTER TABLE {s}.audit_plain ADD PRIMARY KEY (id);
            CREATE INDEX ON {s}.audit_plain (client_id, at);
            CREATE INDEX ON {s}.audit_part (client_id, at);
            CREATE INDEX ON {s}.audit_part (id);"""
    )
    took["load_history_audit"] = time.perf_counter() - started


Timer = Callable[[], Awaitable[float]]


SKIP: set[str] = set()


async def compare(name: str, plain: Timer, partitioned: Timer, runs: int) -> dict[str, float]:
    """Median seconds of each, alternated run by run; ratio partitioned / plain."""
    if any(name.startswith(skipped) for skipped in SKIP):
        return {}
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        a.append(await plain())
        b.append(await partitioned())
    row = {
        "plain_s": round(statistics.median(a), 4),
        "partitioned_s": round(statistics.median(b), 4),
    }
    row["ratio"] = round(row["partitioned_s"] / row["plain_s"], 3) if row["plain_s"] else 0.0
    log(
        f"{name:<34} plain {row['plain_s']:>9.4f} s  partitioned {row['partitioned_s']:>9.4f} s"
        f"  ratio {row['ratio']:.2f}"
    )
    return row


_FEATURES = """count(*) AS size,
         count(*) FILTER (WHERE mb.date_of_birth > hh.surveyed_on - interval '15 years'
                            OR mb.date_of_birth <= hh.surveyed_on - interval '65 years')
           AS dependents,
         count(*) FILTER (WHERE cardinality(mb.disabilities) > 0) AS disabled"""


def aggregate_sql(partitioned: bool, province: str | None) -> str:
    """The read half of a re-score (``pmt.rescore_sql``): living members' aggregate joined
    to their households; partitioned, every join and group carries the province, so the
    planner can join and aggregate partition by partition."""
    if not partitioned:
        only = f"AND hh.province_code = '{province}'" if province else ""
        return f"""
SELECT count(*), sum(m.size) FROM public.households h JOIN (
  SELECT mb.household_id, {_FEATURES}
    FROM public.members mb JOIN public.households hh ON hh.id = mb.household_id
   WHERE mb.deceased_on IS NULL {only}
   GROUP BY mb.household_id) m ON m.household_id = h.id
 WHERE true {only.replace("hh.", "h.")}"""
    only = f"AND mb.province_code = '{province}'" if province else ""
    return f"""
SELECT count(*), sum(m.size) FROM {SCHEMA}.households h JOIN (
  SELECT mb.province_code, mb.household_id, {_FEATURES}
    FROM {SCHEMA}.members mb JOIN {SCHEMA}.households hh
      ON hh.province_code = mb.province_code AND hh.id = mb.household_id
   WHERE mb.deceased_on IS NULL {only}
   GROUP BY mb.province_code, mb.household_id) m
  ON m.province_code = h.province_code AND m.household_id = h.id
 WHERE true {only.replace("mb.", "h.")}"""


async def measure(conn: asyncpg.Connection, runs: int) -> dict[str, Any]:
    s = SCHEMA
    out: dict[str, Any] = {}
    counts = {
        r["province_code"]: r["n"]
        for r in await conn.fetch(
            "SELECT province_code, count(*) AS n FROM public.households GROUP BY 1"
        )
    }
    # A mid-sized province (not the largest, whose export is half the country).
    province = sorted(counts, key=counts.__getitem__)[len(counts) // 2]
    district = await conn.fetchval(
        """SELECT district_code FROM public.households WHERE province_code = $1
            GROUP BY 1 ORDER BY count(*) DESC LIMIT 1""",
        province,
    )
    out["province"], out["district"] = province, district
    cnics = [
        r["cnic"]
        for r in await conn.fetch(
            "SELECT cnic FROM public.members TABLESAMPLE SYSTEM (1) WHERE cnic IS NOT NULL"
            " LIMIT 5000"
        )
    ]
    plain_lookup = await conn.prepare(
        """SELECT h.pmt_score, h.poverty_band FROM public.members m
             JOIN public.households h ON h.id = m.household_id WHERE m.cnic = $1"""
    )
    part_lookup = await conn.prepare(
        f"""SELECT h.pmt_score, h.poverty_band FROM {s}.cnic_directory d
              JOIN {s}.households h ON h.province_code = d.province_code
                                   AND h.id = d.household_id
             WHERE d.cnic = $1"""
    )

    def lookups(statement: asyncpg.prepared_stmt.PreparedStatement) -> Timer:
        async def run() -> float:
            picked = random.sample(cnics, min(500, len(cnics)))
            started = time.perf_counter()
            for cnic in picked:
                await statement.fetchrow(cnic)
            return (time.perf_counter() - started) / len(picked)

        return run

    out["lookup_per_cnic"] = await compare(
        "look-up (per CNIC)", lookups(plain_lookup), lookups(part_lookup), runs
    )

    def export(table_h: str, table_m: str, where: str) -> Timer:
        query = f"""SELECT h.*, m.* FROM {table_h} h JOIN {table_m} m ON m.household_id = h.id
                     WHERE {where}"""

        async def run() -> float:
            return (await _null_copy(conn, query))[0]

        return run

    out["export_province"] = await compare(
        f"export province {province}",
        export("public.households", "public.members", f"h.province_code = '{province}'"),
        export(
            f"{s}.households",
            f"{s}.members",
            f"h.province_code = '{province}' AND m.province_code = '{province}'",
        ),
        runs,
    )
    out["export_district"] = await compare(
        f"export district {district}",
        export("public.households", "public.members", f"h.district_code = '{district}'"),
        export(
            f"{s}.households",
            f"{s}.members",
            f"h.district_code = '{district}' AND h.province_code = '{province}'"
            f" AND m.province_code = '{province}'",
        ),
        runs,
    )

    await conn.execute("SET max_parallel_workers_per_gather = 0")
    await conn.execute("SET work_mem = '256MB'")

    def aggregate(partitioned: bool, where: str | None) -> Timer:
        sql = aggregate_sql(partitioned, where)

        async def run() -> float:
            if partitioned:
                await conn.execute(
                    "SET enable_partitionwise_join = on; SET enable_partitionwise_aggregate = on"
                )
            try:
                return await _timed(conn, sql)
            finally:
                await conn.execute(
                    "RESET enable_partitionwise_join; RESET enable_partitionwise_aggregate"
                )

        return run

    out["rescore_read_province"] = await compare(
        f"re-score read, province {province}",
        aggregate(False, province),
        aggregate(True, province),
        runs,
    )
    out["rescore_read_registry"] = await compare(
        "re-score read, whole registry",
        aggregate(False, None),
        aggregate(True, None),
        max(1, min(runs, 3)),
    )

    async def touch(table: str) -> None:
        await conn.execute(f"UPDATE {table} SET updated_at = updated_at WHERE id % 100 = 7")

    def vacuum(table: str, partitions: list[str] | None = None) -> Timer:
        async def run() -> float:
            await touch(table)
            started = time.perf_counter()
            for t in partitions or [table]:
                await conn.execute(f"VACUUM {t}")
            return time.perf_counter() - started

        return run

    partitions = [
        f"{s}.households_{r['code'].lower()}"
        for r in await conn.fetch("SELECT code FROM geo_units WHERE level = 'province'")
    ]
    out["vacuum_after_1pct"] = await compare(
        "vacuum households after 1% changed",
        vacuum("public.households"),
        vacuum(f"{s}.households", partitions),
        max(1, min(runs, 3)),
    )

    def vacuum_province(table: str, vacuumed: str) -> Timer:
        async def run() -> float:
            await conn.execute(
                f"UPDATE {table} SET updated_at = updated_at"
                f" WHERE province_code = '{province}' AND id % 100 = 7"
            )
            return await _timed(conn, f"VACUUM {vacuumed}")

        return run

    out["vacuum_one_province"] = await compare(
        f"vacuum after 1% of {province} changed",
        vacuum_province("public.households", "public.households"),
        vacuum_province(f"{s}.households", f"{s}.households_{province.lower()}"),
        runs,
    )

    # The write side: 10,000 new members (births), in a transaction rolled back.
    births = await conn.fetch(
        f"""SELECT id AS household_id, province_code FROM public.households
             WHERE province_code = '{province}' ORDER BY id LIMIT 10000"""
    )
    rows = [(b["household_id"], f"9{i:012d}", b["province_code"]) for i, b in enumerate(births)]

    def insert_births(partitioned: bool) -> Timer:
        async def run() -> float:
            started = time.perf_counter()
            tx = conn.transaction()
            await tx.start()
            try:
                if partitioned:
                    await conn.executemany(
                        f"""INSERT INTO {s}.members (id, household_id, cnic, name, gender,
                                 date_of_birth, relationship, marital_status, province_code)
                            VALUES (-$1::bigint, $1, $2, 'New Born', 'female', current_date,
                                    'daughter', 'never_married', $3)""",
                        rows,
                    )
                    await conn.executemany(
                        f"INSERT INTO {s}.cnic_directory VALUES ($2, $1, $3)", rows
                    )
                else:
                    await conn.executemany(
                        """INSERT INTO public.members (household_id, cnic, name, gender,
                                 date_of_birth, relationship, marital_status)
                           VALUES ($1, $2, 'New Born', 'female', current_date, 'daughter',
                                   'never_married')""",
                        [(r[0], r[1]) for r in rows],
                    )
                return time.perf_counter() - started
            finally:
                await tx.rollback()

        return run

    out["insert_10k_members"] = await compare(
        "insert 10,000 members", insert_births(False), insert_births(True), runs
    )

    households = [
        r["household_id"]
        for r in await conn.fetch(
            f"SELECT household_id FROM {s}.history_plain TABLESAMPLE SYSTEM (1) LIMIT 500"
        )
    ]

    def history_of(table: str) -> Timer:
        async def run() -> float:
            started = time.perf_counter()
            for hid in random.sample(households, min(200, len(households))):
                await conn.fetch(f"SELECT * FROM {table} WHERE household_id = $1 ORDER BY id", hid)
            return (time.perf_counter() - started) / min(200, len(households))

        return run

    out["history_one_household"] = await compare(
        "history of one household",
        history_of(f"{s}.history_plain"),
        history_of(f"{s}.history_part"),
        runs,
    )

    def month_of(table: str, column: str) -> Timer:
        query = f"""SELECT * FROM {table}
                     WHERE {column} >= timestamptz '2026-03-01'
                       AND {column} < timestamptz '2026-04-01'"""

        async def run() -> float:
            return (await _null_copy(conn, query))[0]

        return run

    out["history_one_month"] = await compare(
        "history, one month's rows",
        month_of(f"{s}.history_plain", "changed_at"),
        month_of(f"{s}.history_part", "changed_at"),
        runs,
    )
    out["audit_one_month"] = await compare(
        "audit, one month's rows",
        month_of(f"{s}.audit_plain", "at"),
        month_of(f"{s}.audit_part", "at"),
        runs,
    )
    last = await conn.fetchval(f"SELECT max(id) FROM {s}.audit_plain")

    def audit_tail(table: str) -> Timer:
        query = f"SELECT * FROM {table} WHERE id > {last - 10_000} ORDER BY id"

        async def run() -> float:
            return (await _null_copy(conn, query))[0]

        return run

    out["audit_after_id"] = await compare(
        "audit, rows after an id (verify)",
        audit_tail(f"{s}.audit_plain"),
        audit_tail(f"{s}.audit_part"),
        runs,
    )
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reuse-db", required=True, help="a seeded registry (name or URL)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the partitioned copies")
    parser.add_argument("--measure-only", action="store_true", help="copies exist (--keep)")
    parser.add_argument(
        "--loaded", action="store_true", help="households and members are copied: index on"
    )
    parser.add_argument(
        "--indexed", action="store_true", help="and indexed: go on from history and audit"
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated measure names (their starts) to skip"
    )
    args = parser.parse_args()
    SKIP.update(x for x in args.skip.split(",") if x)
    conn = await asyncpg.connect(database_url(args.reuse_db), command_timeout=None)
    try:
        households = await conn.fetchval("SELECT count(*) FROM public.households")
        log(f"{households} households")
        took = (
            {} if args.measure_only else await build(conn, loaded=args.loaded, indexed=args.indexed)
        )
        result = {"households": households, "build_s": {k: round(v, 1) for k, v in took.items()}}
        result.update(await measure(conn, args.runs))
        sizes = await conn.fetch(
            f"""SELECT c.relname, pg_total_relation_size(c.oid) AS bytes
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE (n.nspname = 'public' AND c.relname IN ('households', 'members'))
                    OR (n.nspname = '{SCHEMA}' AND c.relname = 'cnic_directory')"""
        )
        result["bytes"] = {r["relname"]: r["bytes"] for r in sizes}
        if not args.keep:
            await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    finally:
        # After a failure the copies stay, to resume (--loaded, --measure-only).
        await conn.close()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
