"""Benchmark: a mixed batch of updates through POST /v1/partner/updates, 202 to ``done``.

In the same run the same changes are applied by a plain set-based SQL script (inside a
transaction that is rolled back, so both start from the same registry): the baseline.
Last line of output: one JSON object with the figures.

    .venv/bin/python bench/ingest.py --households 1000000 --records 100000
    .venv/bin/python bench/ingest.py --reuse-db nser_bench_ingest   # skip creating + seeding
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from common import ROOT, bench_database, create_partner

sys.path.insert(0, str(ROOT))

from app.main import create_app
from app.schemas.updates import UPDATE_KINDS
from app.settings import Settings

NEW_MEMBERS = (
    ("head", "male", 40, "married"),
    ("spouse", "female", 36, "married"),
    ("son", "male", 14, "never_married"),
    ("daughter", "female", 11, "never_married"),
    ("son", "male", 7, "never_married"),
    ("daughter", "female", 2, "never_married"),
)


async def make_records(conn: asyncpg.Connection, n: int) -> list[dict[str, Any]]:
    """A mixed batch: 30% phone, 30% survey, 15% address, 10% birth, 5% each of death,
    new household (six members with CNICs) and member move; one household per record."""
    rng = random.Random(11)
    hh = await conn.fetch(
        """SELECT h.id, h.province_code, h.division_code, h.district_code, h.tehsil_code,
                  h.union_council_code, h.village_code,
                  (SELECT m.cnic FROM members m WHERE m.household_id = h.id AND m.cnic IS NOT NULL
                     AND m.relationship <> 'head' AND m.deceased_on IS NULL LIMIT 1) AS cnic
             FROM households h TABLESAMPLE SYSTEM (20) LIMIT $1""",
        n,
    )
    today = date.today()
    # New people need CNICs and forms no earlier run registered (seeded CNICs start 1-8).
    run = uuid.uuid4().int % 100_000
    records: list[dict[str, Any]] = []
    for i in range(n):
        h = hh[i % len(hh)]
        pick = i % 20
        base: dict[str, Any] = {"ref": str(i), "household_id": h["id"]}
        if pick < 6:
            records.append({**base, "kind": "phone_change", "phone": f"+9230{i:08d}"})
        elif pick < 12:
            records.append(
                {
                    **base,
                    "kind": "household_survey",
                    "indicators": {
                        "rooms": rng.randint(1, 8),
                        "cows": rng.randint(0, 4),
                        "electrical": rng.sample(["refrigerator", "television", "air_cooler"], 2),
                    },
                }
            )
        elif pick == 12 and h["cnic"]:
            records.append(
                {
                    "ref": str(i),
                    "kind": "member_death",
                    "cnic": h["cnic"],
                    "date_of_death": (today - timedelta(days=1)).isoformat(),
                    "_household_id": h["id"],
                }
            )
        elif pick == 13 and h["cnic"]:
            records.append(
                {
                    "ref": str(i),
                    "kind": "member_move",
                    "cnic": h["cnic"],
                    "to_household_id": hh[(i + 1) % len(hh)]["id"],
                    "relationship": "other_relative",
                    "_household_id": h["id"],
                }
            )
        elif pick == 14:
            records.append(
                {
                    "ref": str(i),
                    "kind": "new_household",
                    "household": {
                        "form_number": f"BN{run:05d}{i:08d}",
                        "address": f"Plot {i}",
                        "district": h["district_code"],
                        "tehsil": h["tehsil_code"],
                        "union_council": h["union_council_code"],
                        "village": h["village_code"],
                        "surveyed_on": today.isoformat(),
                        "phone": f"+9231{i:08d}",
                        "rooms": rng.randint(1, 4),
                        "toilet_type": "open_pit",
                        "members": [
                            {
                                "name": f"Person {i}-{j}",
                                "gender": gender,
                                "date_of_birth": date(today.year - age, 3, 1).isoformat(),
                                "relationship": rel,
                                "marital_status": marital,
                                "cnic": f"9{run:05d}{i * 8 + j:07d}",
                            }
                            for j, (rel, gender, age, marital) in enumerate(NEW_MEMBERS)
                        ],
                    },
                    "_geo": h,
                }
            )
        elif pick < 18:
            records.append(
                {
                    **base,
                    "kind": "address_change",
                    "address": f"House {i}",
                    "district": h["district_code"],
                    "tehsil": h["tehsil_code"],
                    "union_council": h["union_council_code"],
                }
            )
        else:
            records.append(
                {
                    **base,
                    "kind": "member_birth",
                    "member": {
                        "name": f"Child {i}",
                        "gender": rng.choice(["male", "female"]),
                        "date_of_birth": (today - timedelta(days=rng.randint(1, 300))).isoformat(),
                        "relationship": "other_relative",
                    },
                }
            )
    return records


async def backend_cpu(conn: asyncpg.Connection) -> float:
    """CPU seconds used so far by the workers' PostgreSQL backends (same machine: /proc)."""
    pids = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'nser-worker'"
    )
    total = 0.0
    for r in pids:
        try:
            fields = Path(f"/proc/{r['pid']}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def own_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def wire(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records as sent: without the baseline's private ``_`` keys."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]


async def baseline(conn: asyncpg.Connection, records: list[dict[str, Any]]) -> float:
    """The same changes by set-based SQL (last write per household wins), then rolled back."""
    phone = {r["household_id"]: r["phone"] for r in records if r["kind"] == "phone_change"}
    survey = {
        r["household_id"]: r["indicators"] for r in records if r["kind"] == "household_survey"
    }
    addr = {r["household_id"]: r["address"] for r in records if r["kind"] == "address_change"}
    deaths = {r["cnic"]: r["date_of_death"] for r in records if r["kind"] == "member_death"}
    births = [r for r in records if r["kind"] == "member_birth"]
    moves = [r for r in records if r["kind"] == "member_move"]
    new = [r for r in records if r["kind"] == "new_household"]
    tr = conn.transaction()
    await tr.start()
    t = time.perf_counter()
    await conn.execute(
        "UPDATE households h SET phone = v.p, version = version + 1 FROM unnest($1::bigint[],"
        " $2::text[]) v(id, p) WHERE h.id = v.id",
        list(phone),
        list(phone.values()),
    )
    await conn.execute(
        """UPDATE households h SET rooms = v.r, cows = v.c, electrical = v.e, version = version + 1
             FROM (SELECT * FROM jsonb_to_recordset($1::jsonb)
                   AS x(id bigint, rooms smallint, cows smallint, electrical text[])) v(id, r, c, e)
            WHERE h.id = v.id""",
        json.dumps([{"id": k, **v} for k, v in survey.items()]),
    )
    await conn.execute(
        "UPDATE households h SET address = v.a, version = version + 1 FROM unnest($1::bigint[],"
        " $2::text[]) v(id, a) WHERE h.id = v.id",
        list(addr),
        list(addr.values()),
    )
    await conn.execute(
        "UPDATE members m SET deceased_on = v.d::date FROM unnest($1::text[], $2::text[]) v(c, d)"
        " WHERE m.cnic = v.c",
        list(deaths),
        list(deaths.values()),
    )
    await conn.execute(
        """INSERT INTO members (household_id, name, gender, date_of_birth, relationship,
                                marital_status)
           SELECT h, n, g, d::date, 'other_relative', 'never_married'
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) v(h, n, g, d)""",
        [r["household_id"] for r in births],
        [r["member"]["name"] for r in births],
        [r["member"]["gender"] for r in births],
        [r["member"]["date_of_birth"] for r in births],
    )
    await conn.execute(
        """UPDATE members m SET household_id = v.h, relationship = v.r
             FROM unnest($1::text[], $2::bigint[], $3::text[]) v(c, h, r) WHERE m.cnic = v.c""",
        [r["cnic"] for r in moves],
        [r["to_household_id"] for r in moves],
        [r["relationship"] for r in moves],
    )
    await conn.execute(
        "UPDATE households SET version = version + 1 WHERE id = ANY($1::bigint[])",
        [r["_household_id"] for r in moves] + [r["to_household_id"] for r in moves],
    )
    geo = [r["_geo"] for r in new]
    hh = [r["household"] for r in new]
    rows = await conn.fetch(
        """INSERT INTO households (form_number, province_code, division_code, district_code,
                                   tehsil_code, union_council_code, village_code, address, phone,
                                   surveyed_on, rooms, toilet_type)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::text[], $7::text[], $8::text[], $9::text[], $10::date[],
                                $11::smallint[], $12::text[])
        RETURNING id""",
        [h["form_number"] for h in hh],
        *(
            [g[c] for g in geo]
            for c in (
                "province_code",
                "division_code",
                "district_code",
                "tehsil_code",
                "union_council_code",
                "village_code",
            )
        ),
        [h["address"] for h in hh],
        [h["phone"] for h in hh],
        [date.fromisoformat(h["surveyed_on"]) for h in hh],
        [h["rooms"] for h in hh],
        [h["toilet_type"] for h in hh],
    )
    new_ids = [r["id"] for r in rows]
    people = [(hid, m) for hid, h in zip(new_ids, hh, strict=True) for m in h["members"]]
    await conn.execute(
        """INSERT INTO members (household_id, cnic, name, gender, date_of_birth, relationship,
                                marital_status)
           SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::date[],
                                $6::text[], $7::text[])""",
        [hid for hid, _ in people],
        *([m[c] for _, m in people] for c in ("cnic", "name", "gender")),
        [date.fromisoformat(m["date_of_birth"]) for _, m in people],
        *([m[c] for _, m in people] for c in ("relationship", "marital_status")),
    )
    touched = sorted(
        set(survey)
        | {r["household_id"] for r in births}
        | {r["_household_id"] for r in records if r["kind"] == "member_death"}
        | {r["_household_id"] for r in moves}
        | {r["to_household_id"] for r in moves}
        | set(new_ids)
    )
    from app.services.pmt import model as pmt

    await pmt.rescore_households(conn, touched)
    seconds = time.perf_counter() - t
    await tr.rollback()
    return seconds


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    households = await conn.fetchval("SELECT count(*) FROM households")
    records = await make_records(conn, args.records)
    # Both runs start from a vacuumed registry (the seed's re-score and the rolled-back
    # baseline leave dead row versions that would otherwise tax whichever runs next) and
    # right after a checkpoint (so both pay the same full-page writes, and neither shares
    # the disk with the flushing of what came before).
    await conn.execute("VACUUM (ANALYZE) households, members")
    await conn.execute("CHECKPOINT")
    base_s = await baseline(conn, records)
    print(f"baseline: {len(records)} records in {base_s:.2f}s", flush=True)
    await conn.execute("VACUUM (ANALYZE) households, members")
    await conn.execute("CHECKPOINT")
    partner = create_partner(url, "iii", update_kinds="member_birth")
    await conn.execute(
        "UPDATE agreements SET update_kinds = $1 WHERE id = $2::uuid",
        list(UPDATE_KINDS),
        partner["agreement_id"],
    )
    settings = Settings(
        database_url=url,
        environment="test",
        log_level="WARNING",
        updates_max_records=len(records) + 1,
        # One agreement sends every run's records within the hour.
        updates_records_per_hour=100_000_000,
        updates_max_body_bytes=512 * 1024 * 1024,
        in_process_workers=args.workers,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=600
        ) as c:
            tok = (
                await c.post(
                    "/v1/auth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": partner["client_id"],
                        "client_secret": partner["client_secret"],
                    },
                )
            ).json()["access_token"]
            h = {"Authorization": f"Bearer {tok}", "Idempotency-Key": uuid.uuid4().hex}
            body = json.dumps({"records": wire(records)}).encode()
            await asyncio.sleep(1)  # the workers' connections are open
            pg0, py0 = await backend_cpu(conn), own_cpu()
            t0 = time.perf_counter()
            r = await c.post(
                "/v1/partner/updates",
                content=body,
                headers={**h, "Content-Type": "application/json"},
            )
            assert r.status_code == 202, r.text
            t202 = time.perf_counter()
            batch = r.json()["batch_id"]
            while True:
                s = (await c.get(f"/v1/partner/updates/{batch}?results=false", headers=h)).json()
                if s["status"] == "done":
                    break
                await asyncio.sleep(0.25)
            done = time.perf_counter()
            pg1, py1 = await backend_cpu(conn), own_cpu()
    await conn.close()
    seconds = done - t202
    rate = len(records) / seconds
    base_rate = len(records) / base_s
    return {
        "bench": "ingest",
        "households": households,
        "records": len(records),
        "receive_seconds": round(t202 - t0, 2),
        "process_seconds": round(seconds, 2),
        "records_per_second": round(rate),
        "service_cpu_seconds": round(py1 - py0, 2),
        "postgres_worker_cpu_seconds": round(pg1 - pg0, 2),
        "baseline_seconds": round(base_s, 2),
        "baseline_records_per_second": round(base_rate),
        "ratio_to_baseline": round(rate / base_rate, 3),
        "counts": s["counts"],
        "database": url.rpartition("/")[2],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--households", type=int, default=1_000_000)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--reuse-db", default="", help="an existing seeded database (name or URL)")
    args = p.parse_args()
    with bench_database(args.reuse_db, args.households) as url:
        result = asyncio.run(run(args, url))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
