"""Benchmark: what synchronous replication costs (Patroni ``synchronous_mode``, deploy/).

On the drill's two-node cluster (etcd and two Patroni nodes on this machine, ports
5540-5599, data under /tmp/failover-*; tests/drill/ha_cluster.py), migrated through the
multi-host URL, sessions with ``synchronous_commit = on`` (a commit waits for the
standby's flush: what every write of the service does under ``synchronous_mode``) against
sessions with ``local`` (the primary's own flush only: the baseline), the two taking turns
so that both see the machine in the same state:

- **commits**: one connection per mode inserting one row per transaction, C (1,000)
  commits each, alternated one by one; the medians;
- **audit appends**: the service's own ``audit.append`` (what every audited read, export
  and staff action does) from 8 connections per mode, in turns of T (0.5) s until each
  mode had S (20) s; appends hold the chain's lock until they commit, so they are
  serialized: appends per second and the median append.

Both nodes share this machine's disk and the network is loopback, so the wait is the
standby's flush; between machines add a network round trip per commit. Needs
`make drill-deps`. Last line of output: one JSON object.

    .venv/bin/python bench/failover_sync.py [--commits C] [--seconds S] [--turn T]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "drill"))

from drill_stack import database  # noqa: E402
from ha_cluster import ha_cluster, missing_tools  # noqa: E402

from app.services.audit import keys  # noqa: E402
from app.services.audit import trail as audit  # noqa: E402

MODES = ("local", "on")
CONNECTIONS = 8


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def connect(url: str, mode: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, server_settings={"synchronous_commit": mode})


async def commits(url: str, pairs: int) -> dict[str, list[float]]:
    """Seconds of single-row INSERT + COMMITs, one connection per mode, the modes taking
    turns commit by commit (so both see the same machine at the same moment)."""
    conns = {mode: await connect(url, mode) for mode in MODES}
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for i in range(pairs):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                started = time.perf_counter()
                await conns[mode].execute("INSERT INTO bench_commits (n) VALUES ($1)", i)
                times[mode].append(time.perf_counter() - started)
        return times
    finally:
        for conn in conns.values():
            await conn.close()


async def appends(url: str, seconds: float, turn: float) -> dict[str, tuple[int, list[float]]]:
    """Audit appends from CONNECTIONS sessions of each mode, the modes taking turns of
    ``turn`` seconds until each had ``seconds``: per mode, the appends made and how long
    each took."""
    conns = {mode: [await connect(url, mode) for _ in range(CONNECTIONS)] for mode in MODES}
    record = audit.AuditRecord(
        "partner", "bench", None, None, "GET /bench", {"cnic": "bench"}, [], 1, 1, None
    )
    times: dict[str, list[float]] = {mode: [] for mode in MODES}

    async def session(conn: asyncpg.Connection, mode: str, end: float) -> None:
        while time.perf_counter() < end:
            started = time.perf_counter()
            await audit.append(conn, record)
            times[mode].append(time.perf_counter() - started)

    try:
        for i in range(round(seconds / turn)):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                end = time.perf_counter() + turn
                await asyncio.gather(*(session(c, mode, end) for c in conns[mode]))
        return {mode: (len(times[mode]), times[mode]) for mode in MODES}
    finally:
        for group in conns.values():
            for conn in group:
                await conn.close()


async def measure(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    owner_url, service_url = env["NSER_OWNER_DATABASE_URL"], env["NSER_DATABASE_URL"]
    audit.use_keyring(keys.keyring("", env["NSER_KEY_ENCRYPTION_SECRET"]))
    conn = await asyncpg.connect(owner_url)
    try:
        await conn.execute("CREATE TABLE bench_commits (n int)")
    finally:
        await conn.close()
    await appends(service_url, 1, 0.5)  # warm-up
    commit = {m: statistics.median(t) for m, t in (await commits(owner_url, args.commits)).items()}
    log(f"commits: {commit['local'] * 1000:.2f} ms local, {commit['on'] * 1000:.2f} ms on")
    made = await appends(service_url, args.seconds, args.turn)
    per_s = {m: made[m][0] / args.seconds for m in MODES}
    one = {m: statistics.median(made[m][1]) for m in MODES}
    log(f"audit appends: {per_s['local']:.0f}/s local, {per_s['on']:.0f}/s on")
    return {
        "commits_per_mode": args.commits,
        "append_seconds_per_mode": args.seconds,
        "commit_ms_local": round(commit["local"] * 1000, 3),
        "commit_ms_sync": round(commit["on"] * 1000, 3),
        "commit_ratio_sync_to_local": round(commit["on"] / commit["local"], 2),
        "audit_appends_per_s_local": round(per_s["local"]),
        "audit_appends_per_s_sync": round(per_s["on"]),
        "audit_appends_ratio_sync_to_local": round(per_s["on"] / per_s["local"], 2),
        "audit_append_median_ms_local": round(one["local"] * 1000, 2),
        "audit_append_median_ms_sync": round(one["on"] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--turn", type=float, default=0.5)
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run `make drill-deps` first")
    with ha_cluster() as cluster:
        log(f"cluster up under {cluster.root}")
        env = database(cluster)
        result = asyncio.run(measure(env, args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
