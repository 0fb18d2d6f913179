"""The restore drill: a point-in-time restore of the registry, and what it must show.

On a cluster of its own archived by pgBackRest (pitr_cluster.py, deploy/pgbackrest.conf):

1. a registry of N households is seeded (with a partner allowed category iv and v lists
   and address changes and deaths) and a **full backup** taken;
2. update batches are sent to `nser serve` (a separate `nser worker` applies them), each
   waited for until done;
3. an instant **T** is noted, with nothing being written;
4. more batches are sent and applied; the as-of list at T is read through the API
   (`GET /v1/partner/beneficiaries?as_of=T`, NDJSON, with dimensions);
5. the cluster is **restored to T** into a new data folder, started on another port and
   promoted; `nser serve` runs on it.

What the restore must show:

- the restored registry's *current* list equals the as-of list at T read before the
  restore: the same households, each with the same fields, members and dimensions (and
  it differs from the original's current list, so the batches after T were visible);
- every batch applied before T is in the restored ``update_batches`` (done, with all its
  records' outcomes), and none of those received after T;
- ``nser audit verify --full`` passes on the restored database (with the audit key of the
  service that wrote it) after the restored service has appended rows of its own.

:func:`run` returns the timings (backup, restore, replay) and sizes; the test
(test_restore.py) and ``bench/restore.py`` both call it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from pitr_cluster import ROOT, PitrCluster, Server, free_ports, pitr_cluster

sys.path.insert(0, str(ROOT / "tests" / "drill"))
from drill_stack import base_url, nser, run_nser, serving, token

# Each batch: this many households, each with an address change and, where the household
# has a living member besides its head, that member's death.
BATCH_HOUSEHOLDS = 20
BATCHES_BEFORE, BATCHES_AFTER = 3, 3
DIMENSIONS = "household_composition,education,employment,disability,room_count"
BENEFICIARIES = "/v1/partner/beneficiaries"


def log(message: str) -> None:
    print(f"[restore drill] {message}", file=sys.stderr, flush=True)


def service_env(cluster: PitrCluster, server: Server, roles: dict[str, str]) -> dict[str, str]:
    """The services' environment on ``server`` (secrets of the run kept in ``roles``)."""
    port = server.port
    return {
        **os.environ,
        "NSER_ENVIRONMENT": "production",
        "NSER_DATABASE_URL": f"postgresql://nser_service:{roles['service']}@127.0.0.1:{port}/nser",
        "NSER_OWNER_DATABASE_URL": f"postgresql://nser_owner:{roles['owner']}@127.0.0.1:{port}/nser",
        # The audit key (derived from it) must be the writer's for the verify to pass.
        "NSER_KEY_ENCRYPTION_SECRET": roles["key_secret"],
        "NSER_LOG_JSON": "true",
        "NSER_IN_PROCESS_WORKERS": "0",
        "NSER_PUBLIC_REFRESH_SECONDS": "3600",
        "NSER_PUBLIC_LOOKUP_LIMITS": "1000000/minute",
    }


def registry(cluster: PitrCluster, households: int) -> tuple[dict[str, str], dict[str, str]]:
    """The roles and the database, migrated and seeded, and a partner; the environment
    and the secrets (the partner's JSON in ``partner``)."""
    roles = {
        "owner": secrets.token_hex(12),
        "service": secrets.token_hex(12),
        "key_secret": secrets.token_urlsafe(48),
    }
    for sql in (
        f"CREATE ROLE nser_owner LOGIN PASSWORD '{roles['owner']}'",
        f"CREATE ROLE nser_service LOGIN PASSWORD '{roles['service']}'",
        "CREATE DATABASE nser OWNER nser_owner",
    ):
        cluster.query(cluster.primary, sql)
    env = service_env(cluster, cluster.primary, roles)
    run_nser(["db", "upgrade"], env)
    started = time.monotonic()
    run_nser(["seed", "--households", str(households), "--seed", "21"], env)
    log(f"seeded {households} households in {time.monotonic() - started:.1f} s")
    roles["partner"] = run_nser(
        [
            "partners",
            "create",
            "--json",
            "--name",
            "Restore Drill",
            "--type",
            "government",
            "--categories",
            "iv,v",
            "--dimensions",
            DIMENSIONS,
            "--update-kinds",
            "address_change,member_death",
            "--rate-limit",
            "1000000/minute",
        ],
        env,
    ).strip()
    return env, roles


async def targets(owner_url: str, count: int) -> list[asyncpg.Record]:
    """``count`` households at random, each with its placement and a living member
    besides the head (null if none)."""
    conn = await asyncpg.connect(owner_url)
    try:
        return await conn.fetch(
            """SELECT h.id, h.address, h.district_code, h.tehsil_code, h.union_council_code,
                      (SELECT m.id FROM members m
                        WHERE m.household_id = h.id AND m.relationship <> 'head'
                          AND m.deceased_on IS NULL ORDER BY m.id LIMIT 1) AS member_id
                 FROM households h ORDER BY random() LIMIT $1""",
            count,
        )
    finally:
        await conn.close()


def batch_body(rows: list[asyncpg.Record], tag: str) -> dict[str, Any]:
    died = (datetime.now().date() - timedelta(days=1)).isoformat()
    records: list[dict[str, Any]] = []
    for row in rows:
        hid = row["id"]
        records.append(
            {
                "ref": f"{tag}-a{hid}",
                "kind": "address_change",
                "household_id": hid,
                "address": f"{tag} {row['address']}"[:500],
                "district": row["district_code"],
                "tehsil": row["tehsil_code"],
                "union_council": row["union_council_code"],
            }
        )
        if row["member_id"] is not None:
            records.append(
                {
                    "ref": f"{tag}-d{hid}",
                    "kind": "member_death",
                    "household_id": hid,
                    "member_id": row["member_id"],
                    "date_of_death": died,
                }
            )
    return {"records": records}


async def send_batches(
    client: httpx.AsyncClient, bearer: str, rows: list[asyncpg.Record], tag: str
) -> list[dict[str, Any]]:
    """One batch per BATCH_HOUSEHOLDS rows, each sent and waited for until done, every
    record applied; their final status answers."""
    done = []
    for start in range(0, len(rows), BATCH_HOUSEHOLDS):
        body = batch_body(rows[start : start + BATCH_HOUSEHOLDS], f"{tag}{start}")
        headers = {"Authorization": f"Bearer {bearer}", "Idempotency-Key": uuid.uuid4().hex}
        r = await client.post("/v1/partner/updates", json=body, headers=headers)
        assert r.status_code == 202, r.text
        batch_id = r.json()["batch_id"]
        deadline = time.monotonic() + 120
        while True:
            s = await client.get(f"/v1/partner/updates/{batch_id}", headers=headers)
            assert s.status_code == 200, s.text
            status = s.json()
            if status["status"] == "done":
                break
            assert time.monotonic() < deadline, f"batch {batch_id} not applied in 120 s"
            await asyncio.sleep(0.1)
        assert status["counts"]["applied"] == len(body["records"]), status["counts"]
        done.append(status)
    return done


async def read_list(client: httpx.AsyncClient, bearer: str, as_of: str | None) -> dict[str, str]:
    """The whole beneficiary list with every dimension, streamed (NDJSON): a digest of
    each household's object (keys sorted) by household id."""
    params = {"dimensions": DIMENSIONS}
    if as_of is not None:
        params["as_of"] = as_of
    headers = {"Authorization": f"Bearer {bearer}", "Accept": "application/x-ndjson"}
    digests: dict[str, str] = {}
    async with client.stream("GET", BENEFICIARIES, params=params, headers=headers) as r:
        if r.status_code != 200:
            await r.aread()
            raise AssertionError(f"{r.status_code} {r.text}")
        async for line in r.aiter_lines():
            if not line:
                continue
            item = orjson.loads(line)
            hid = item["household_id"]
            assert hid not in digests, f"household {hid} listed twice"
            canonical = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
            digests[hid] = hashlib.blake2b(canonical, digest_size=16).hexdigest()
    return digests


async def partner_batches(owner_url: str, client_id: str) -> dict[str, asyncpg.Record]:
    """The partner's stored batches by id: status, when received and finished, and how
    many outcomes each has."""
    conn = await asyncpg.connect(owner_url)
    try:
        rows = await conn.fetch(
            """SELECT b.id::text AS id, b.status, b.received_at, b.finished_at, b.record_count,
                      (SELECT count(*) FROM update_results r WHERE r.batch_id = b.id) AS results
                 FROM update_batches b WHERE b.client_id = $1""",
            client_id,
        )
        return {r["id"]: r for r in rows}
    finally:
        await conn.close()


async def quiet_instant(owner_url: str) -> datetime:
    """T: the database's clock, read when no write transaction is open on the registry
    (so nothing committed after T began before it)."""
    conn = await asyncpg.connect(owner_url)
    try:
        while True:
            busy = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                " AND backend_xid IS NOT NULL"
            )
            if busy == 0:
                at: datetime = await conn.fetchval("SELECT clock_timestamp()")
                return at
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


def serve_port(cluster: PitrCluster) -> int:
    """A free port of the drill's range for `nser serve` (not one of the servers')."""
    (port,) = free_ports(1, {s.port for s in cluster.servers})
    return port


def differences(expected: dict[str, str], got: dict[str, str]) -> str:
    missing = sorted(set(expected) - set(got), key=int)
    extra = sorted(set(got) - set(expected), key=int)
    changed = sorted((k for k in set(expected) & set(got) if expected[k] != got[k]), key=int)
    return (
        f"{len(missing)} households missing {missing[:10]}, {len(extra)} extra {extra[:10]},"
        f" {len(changed)} different {changed[:10]}"
    )


async def before_restore(
    cluster: PitrCluster, env: dict[str, str], partner: dict[str, str], households: int
) -> dict[str, Any]:
    """Steps 2-4 against `nser serve` and `nser worker` on the original."""
    owner_url = env["NSER_OWNER_DATABASE_URL"]
    count = BATCH_HOUSEHOLDS * (BATCHES_BEFORE + BATCHES_AFTER)
    rows = list(await targets(owner_url, min(count, households)))
    split = BATCH_HOUSEHOLDS * BATCHES_BEFORE
    port = serve_port(cluster)
    with (
        serving(env, cluster.root, port),
        nser(["worker", "--poll-seconds", "0.2"], env, cluster.root / "worker.log"),
    ):
        async with httpx.AsyncClient(base_url=base_url(port), timeout=600) as client:
            bearer = await token(client, partner)
            applied = await send_batches(client, bearer, rows[:split], "before")
            await asyncio.sleep(1)
            t = await quiet_instant(owner_url)
            await asyncio.sleep(1)
            later = await send_batches(client, bearer, rows[split:], "after")
            started = time.monotonic()
            as_of = await read_list(client, bearer, t.isoformat())
            read_s = time.monotonic() - started
            current = await read_list(client, bearer, None)
    stored = await partner_batches(owner_url, partner["client_id"])
    before = {str(b["batch_id"]) for b in applied}
    after = {str(b["batch_id"]) for b in later}
    # The premise: the first batches finished before T, the others were received after it.
    assert all(stored[i]["finished_at"] < t for i in before), "a batch finished after T"
    assert all(stored[i]["received_at"] > t for i in after), "a batch was received before T"
    assert set(stored) == before | after, set(stored) ^ (before | after)
    assert len(as_of) == households, (len(as_of), households)
    assert as_of != current, "the batches after T changed nothing the list shows"
    return {
        "t": t,
        "as_of": as_of,
        "before": before,
        "after": after,
        "as_of_read_s": read_s,
        "changed_after_t": sum(1 for k in as_of if as_of[k] != current.get(k)),
    }


async def after_restore(
    cluster: PitrCluster, env: dict[str, str], partner: dict[str, str], seen: dict[str, Any]
) -> None:
    """Step 5's checks on the restored, promoted server."""
    port = serve_port(cluster)
    with serving(env, cluster.root, port):
        async with httpx.AsyncClient(base_url=base_url(port), timeout=600) as client:
            bearer = await token(client, partner)
            restored = await read_list(client, bearer, None)
    assert restored == seen["as_of"], "the restored registry is not the as-of list at T: " + (
        differences(seen["as_of"], restored)
    )
    stored = await partner_batches(env["NSER_OWNER_DATABASE_URL"], partner["client_id"])
    assert set(stored) == seen["before"], (
        f"restored batches: {len(set(stored) & seen['before'])} of the"
        f" {len(seen['before'])} applied before T, {len(set(stored) & seen['after'])} of"
        f" the {len(seen['after'])} received after T"
    )
    for row in stored.values():
        assert row["status"] == "done", dict(row)
        assert row["results"] == row["record_count"], dict(row)


def run(
    households: int, keep_logs: Path | None = None, *, copy_baseline: bool = False
) -> dict[str, Any]:
    """The whole drill on a registry of ``households``; its timings and sizes. With
    ``copy_baseline``, also the seconds of a plain copy of the data folder right after the
    backup (what copying the files costs on this disk, without compression, encryption
    or the repository)."""
    with pitr_cluster(keep_logs) as cluster:
        try:
            return _run(cluster, households, copy_baseline)
        except BaseException:
            log("failed; the servers' and pgBackRest's last lines:\n" + cluster.logs())
            raise


def _run(cluster: PitrCluster, households: int, copy_baseline: bool) -> dict[str, Any]:
    env, roles = registry(cluster, households)
    partner: dict[str, str] = json.loads(roles["partner"])
    database_bytes = int(cluster.query(cluster.primary, "SELECT pg_database_size('nser')"))

    backup_s = cluster.backup("full")
    log(f"full backup in {backup_s:.1f} s")
    plain_copy_s = None
    if copy_baseline:  # the files a backup copies: pg_wal's are the archive's business
        started = time.monotonic()
        shutil.copytree(
            cluster.primary.data,
            cluster.root / "copy",
            symlinks=True,
            ignore=lambda folder, _: ["pg_wal"] if folder == str(cluster.primary.data) else [],
        )
        plain_copy_s = round(time.monotonic() - started, 1)
        shutil.rmtree(cluster.root / "copy")
    seen = asyncio.run(before_restore(cluster, env, partner, households))
    t: datetime = seen["t"]
    # Everything written so far (the batches after T included) reaches the archive: the
    # replay must see a commit after T to know where T is.
    cluster.check()
    server, copy_s, replay_s = cluster.restore(str(t))
    log(f"restored to {t}: files {copy_s:.1f} s, replay and promotion {replay_s:.1f} s")
    restored_env = service_env(cluster, server, roles)
    asyncio.run(after_restore(cluster, restored_env, partner, seen))
    verified = run_nser(["audit", "verify", "--full"], restored_env)
    assert "audit log intact" in verified, verified
    backup = cluster.info()["backup"][-1]["info"]
    return {
        "households": households,
        "database_bytes": database_bytes,
        "backup_s": round(backup_s, 1),
        "backup_repository_bytes": backup["repository"]["size"],
        "data_folder_copy_s": plain_copy_s,
        "restore_files_s": round(copy_s, 1),
        "restore_replay_s": round(replay_s, 1),
        "restore_s": round(copy_s + replay_s, 1),
        "batches_before_t": len(seen["before"]),
        "batches_after_t": len(seen["after"]),
        "households_changed_after_t": seen["changed_after_t"],
        "as_of_list_read_s": round(seen["as_of_read_s"], 1),
        "audit": verified.strip().splitlines()[0],
    }
