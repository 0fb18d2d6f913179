"""The failover drill (`make drill`): the primary is lost under load, twice.

etcd, two Patroni nodes and HAProxy run from deploy/ (tests/drill/ha_cluster.py); a
registry of 10,000 households is seeded through the libpq multi-host URL
(``target_session_attrs=read-write``). While public look-ups, NDJSON exports and update
batches run against `nser serve`, with `nser worker` applying the batches:

- **crash**: the service on the multi-host URL; the primary's Patroni and PostgreSQL are
  SIGKILLed (a machine dying). The dead node is then started again and must rejoin as
  the synchronous standby;
- **hang**: the service through HAProxy; the new primary's Patroni and PostgreSQL are
  SIGSTOPped (a machine that stops answering).

Each time the drill shows:

1. look-ups answer 503 with Retry-After for at most the failover window, then 200 again
   from the same `nser serve` (no restart);
2. every acknowledged update batch is applied exactly once: one outcome per record, one
   history row and one version step per record, the last phone sent in place;
3. an export cut by the failover ends with an error the client sees (the chunked body is
   aborted, not terminated), never a body that looks complete; every export that ended
   cleanly holds every household.

Synchronous replication is what makes (2) hold: just before the crash, the primary's WAL
sender is frozen (SIGSTOP), so what is written from then on never reaches the standby, and
one more batch is sent; it must *not* be acknowledged while the standby cannot have it. It
is acknowledged after the failover, once. (With ``synchronous_mode: false`` in
deploy/patroni.yml this drill fails: that batch and the others acknowledged in those
seconds are lost.) The windows and the other timings are printed (make drill shows them).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from drill_load import (
    Batch,
    Export,
    Lookup,
    Recorder,
    check_batches,
    export,
    export_open,
    exports,
    failover_window,
    lookups,
    now,
    phone_batch,
    send,
    updates,
    wait_applied,
)
from drill_stack import base_url, nser, partner_of, registry, serving, token
from ha_cluster import HAPROXY_PORT, HACluster, ha_cluster, missing_tools

pytestmark = pytest.mark.slow

HOUSEHOLDS = 10_000
# The look-ups may fail for at most this long: ttl + loop_wait of deploy/patroni.yml
# (10 + 2 s: the leader key expiring, the standby's next loop) and the promotion, with
# room for a machine shared with other work.
WINDOW_LIMIT = 30.0
# How long the primary's WAL sender is frozen before the kill.
FROZEN = 2.0
# The held export's receive buffer (the kernel doubles it): a few lines of a body of
# megabytes, so the service is still writing when the fault comes.
HELD_RCVBUF = 16 * 1024
# `nser serve` on the multi-host URL (the crash), and through HAProxy (the hang).
CRASH_PORT, HANG_PORT = 5570, 5571


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HACluster]:
    missing = missing_tools()
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make drill-deps` first")
    logs = tmp_path_factory.mktemp("drill-logs")
    with ha_cluster(keep_logs=logs) as started:
        print(f"\ndrill logs (etcd, Patroni, nser serve and worker) kept in {logs}", flush=True)
        yield started


def walsender(cluster: HACluster, name: str) -> psutil.Process:
    """The process of node ``name`` that streams its WAL to the standby."""
    for process in cluster.nodes[name].postgres_processes():
        with suppress(psutil.Error):
            if "walsender" in " ".join(process.cmdline()):
                return process
    raise AssertionError(f"{name} has no WAL sender")


def test_failover_drill(cluster: HACluster) -> None:
    env = registry(cluster, HOUSEHOLDS, categories="iv")
    # 1. The primary's machine dies; the service names both nodes in its URL.
    with (
        serving(env, cluster.root, CRASH_PORT) as serve,
        nser(["worker", "--poll-seconds", "0.2"], env, cluster.root / "worker-crash.log"),
    ):
        crash = asyncio.run(drill(cluster, env, base_url(CRASH_PORT), "crash"))
        assert serve.poll() is None, "nser serve exited during the drill"
    # The dead node comes back and rejoins as the synchronous standby (rewound if needed).
    started = time.monotonic()
    cluster.restart(crash["failed"])
    cluster.wait(lambda: cluster.sync_standby() == crash["failed"], 90, "the rejoin")
    crash["rejoined_s"] = round(time.monotonic() - started, 1)

    # 2. The new primary's machine stops answering; the service goes through HAProxy.
    proxied = {
        **env,
        "NSER_DATABASE_URL": through_haproxy(cluster, env["NSER_DATABASE_URL"]),
        "NSER_OWNER_DATABASE_URL": through_haproxy(cluster, env["NSER_OWNER_DATABASE_URL"]),
    }
    with (
        serving(proxied, cluster.root, HANG_PORT) as serve,
        nser(["worker", "--poll-seconds", "0.2"], proxied, cluster.root / "worker-hang.log"),
    ):
        hang = asyncio.run(drill(cluster, proxied, base_url(HANG_PORT), "hang"))
        assert serve.poll() is None, "nser serve exited during the drill"
    print_report(crash, hang)


def through_haproxy(cluster: HACluster, url: str) -> str:
    proxied = url.replace(cluster.hosts(), f"127.0.0.1:{HAPROXY_PORT}")
    assert proxied != url, url
    return proxied


async def drill(cluster: HACluster, env: dict[str, str], base: str, fault: str) -> dict[str, Any]:
    """Load, then the leader ``crash``es (SIGKILL) or ``hang``s (SIGSTOP); the checks; the
    figures of the report."""
    partner = partner_of(env)
    owner_url = env["NSER_OWNER_DATABASE_URL"]
    conn = await asyncpg.connect(owner_url)
    try:
        since = await conn.fetchval("SELECT now()")
        cnics = [
            r["cnic"]
            for r in await conn.fetch(
                "SELECT cnic FROM members WHERE cnic IS NOT NULL AND deceased_on IS NULL"
                " ORDER BY id LIMIT 500"
            )
        ]
        versions = {
            r["id"]: r["version"] for r in await conn.fetch("SELECT id, version FROM households")
        }
    finally:
        await conn.close()
    household_ids = sorted(versions)

    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        bearer = await token(client, partner)
        rec = Recorder()
        stop = asyncio.Event()
        # Two update streams over disjoint households, so each household's last phone is
        # the one its stream sent last.
        halves = (household_ids[0::2], household_ids[1::2])
        tasks = [
            *(asyncio.create_task(lookups(client, cnics, stop, rec.lookups)) for _ in range(3)),
            asyncio.create_task(exports(client, bearer, stop, rec.exports, pause=1.0)),
            *(
                asyncio.create_task(updates(client, bearer, half, stop, rec.batches, 25, 1.0))
                for half in halves
            ),
        ]
        # A steady state before the fault: a few seconds, and at least one whole export.
        steady_until = now() + 60
        await asyncio.sleep(5)
        while not any(e.clean_end for e in rec.exports) and now() < steady_until:
            await asyncio.sleep(0.5)
        healthy = [r.status for r in rec.lookups]
        assert healthy, "no look-up answered in the steady state"
        assert set(healthy) == {200}, Counter(healthy)
        assert any(e.clean_end for e in rec.exports), rec.exports

        leader = await asyncio.to_thread(cluster.leader)
        standby = await asyncio.to_thread(cluster.sync_standby)
        assert leader is not None, "no leader"
        assert standby not in (None, leader), standby

        # An export held mid-body (its snapshot open on the primary) across the fault, on
        # a connection of its own whose receive buffer is small and fixed: with the
        # kernel's autotuning (tcp_rmem up to 32 MiB here) the whole body could sit in the
        # client's socket before the fault, and the export would end complete.
        first_line, hold = asyncio.Event(), asyncio.Event()
        held_client = httpx.AsyncClient(
            base_url=base,
            timeout=120,
            transport=httpx.AsyncHTTPTransport(
                socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, HELD_RCVBUF)]
            ),
        )
        slow = asyncio.create_task(export(held_client, bearer, first_line=first_line, hold=hold))
        await asyncio.wait_for(first_line.wait(), 30)
        # The premise: the service is still inside the export's snapshot on the primary.
        assert await export_open(cluster.superuser_url("nser")), "the held export ended early"

        probe: Batch | None = None
        held_unacked = True
        if fault == "crash":
            # Synchronous replication: with the primary's WAL sender frozen, nothing more
            # reaches the standby, and a batch must not be acknowledged (its commit waits
            # for the standby). The sender dies frozen with the primary: what it did not
            # send is lost.
            sender = await asyncio.to_thread(walsender, cluster, leader)
            probe = phone_batch([household_ids[0]])
            sender.suspend()
            try:
                tasks.append(asyncio.create_task(send(client, bearer, probe)))
                await asyncio.sleep(FROZEN)
                held_unacked = probe.acked_at is None
                fault_at = now()
                await asyncio.to_thread(cluster.crash, leader)
            finally:
                with suppress(psutil.Error):  # only if the crash did not happen
                    sender.resume()
        else:
            fault_at = now()
            await asyncio.to_thread(cluster.freeze, leader)
        hold.set()

        # Until look-ups have answered 200 again for 10 s (or the drill gives up).
        promoted_at = None
        deadline = fault_at + 90
        while now() < deadline:
            if promoted_at is None and await asyncio.to_thread(cluster.leader) == standby:
                promoted_at = now()
            window = failover_window(rec.lookups)
            if window is not None and now() - window.recovered > 10 and promoted_at is not None:
                break
            await asyncio.sleep(0.2)
        stop.set()
        # The clients finish what they started (a batch is re-sent until acknowledged).
        await asyncio.wait_for(asyncio.gather(*tasks), 150)
        try:
            cut = await asyncio.wait_for(slow, 150)
        finally:
            await held_client.aclose()
        rec.exports.append(cut)
        if probe is not None:
            rec.batches.append(probe)

        done_within = await wait_applied(owner_url, rec.batches)
        await check_batches(owner_url, rec.batches, partner["client_id"], since, versions)

    window = failover_window(rec.lookups)
    check_lookups(rec.lookups, fault_at)
    check_exports(rec.exports, cut, HOUSEHOLDS)
    assert held_unacked, (
        "an update batch was acknowledged while the standby could not have it: "
        "synchronous replication is off"
    )
    assert window is not None
    assert window.recovered - fault_at <= WINDOW_LIMIT, (
        f"look-ups failed for {window.recovered - fault_at:.1f} s after the fault"
    )
    failures = [r for r in rec.lookups if r.status != 200]
    return {
        "fault": fault,
        "failed": leader,
        "promoted": standby,
        "window_s": round(window.seconds, 2),
        "first_failure_after_fault_s": round(window.first_failure - fault_at, 2),
        "recovered_after_fault_s": round(window.recovered - fault_at, 2),
        "promoted_after_fault_s": round(promoted_at - fault_at, 2) if promoted_at else None,
        "slowest_lookup_s": round(max(r.end - r.start for r in rec.lookups), 2),
        "lookups": len(rec.lookups),
        "lookups_503": len(failures),
        "exports": Counter(_export_kind(e) for e in rec.exports),
        "batches_acknowledged": len(rec.batches),
        "batches_retried": sum(1 for b in rec.batches if len(b.attempts) > 1),
        "batches_replayed_200": sum(1 for b in rec.batches if b.attempts[-1][1] == 200),
        "all_applied_within_s": round(done_within, 1),
    }


def _export_kind(e: Export) -> str:
    if e.status != 200:
        return f"status {e.status}"
    return "complete" if e.clean_end else "cut"


def check_lookups(results: list[Lookup], fault_at: float) -> None:
    statuses = Counter(r.status for r in results)
    assert set(statuses) <= {200, 503}, statuses  # never a 500, never a dropped connection
    assert statuses[503] > 0, "no look-up failed: the fault did not reach the service"
    missing = [r for r in results if r.status == 503 and not r.retry_after]
    assert not missing, f"{len(missing)} 503s without Retry-After"
    window = failover_window(results)
    assert window is not None, "look-ups never answered 200 again"
    # 200 before the fault and after the window, only 503 in between.
    for r in results:
        if r.status != 200:
            assert window.first_failure <= r.end <= window.recovered, r
            assert r.end >= fault_at, r


def check_exports(results: list[Export], cut: Export, households: int) -> None:
    for e in results:
        assert e.status in (200, 503), e
        if e.status == 503:
            assert e.retry_after, e
        elif e.clean_end:  # a body that ends as complete bodies end is complete
            assert e.lines == e.households == households, e
        else:
            assert e.error is not None, e
            assert e.lines < households, e
    assert cut.status == 200, cut
    assert not cut.clean_end, f"the held export was not cut: {cut}"
    assert "RemoteProtocolError" in (cut.error or ""), cut


def print_report(crash: dict[str, Any], hang: dict[str, Any]) -> None:
    how = {
        "crash": "killed (SIGKILL of its Patroni and PostgreSQL: a machine dying), the service"
        " on the multi-host URL",
        "hang": "frozen (SIGSTOP of its Patroni and PostgreSQL: a machine that stops"
        " answering), the service through HAProxy",
    }
    lines = ["", "failover drill"]
    for r in (crash, hang):
        lines += [
            f"{r['fault']}: primary {r['failed']} {how[r['fault']]}",
            f"  {r['promoted']} promoted {r['promoted_after_fault_s']} s after the fault",
            f"  failover window (first failed look-up to the first 200 after it):"
            f" {r['window_s']} s; the first failure {r['first_failure_after_fault_s']} s"
            f" after the fault, 200 again {r['recovered_after_fault_s']} s after it;"
            f" slowest look-up {r['slowest_lookup_s']} s",
            f"  look-ups: {r['lookups']}, of which 503 with Retry-After: {r['lookups_503']}",
            f"  exports: {dict(r['exports'])}",
            f"  update batches acknowledged and applied exactly once:"
            f" {r['batches_acknowledged']} ({r['batches_retried']} re-sent,"
            f" {r['batches_replayed_200']} answered 200 as already stored); all applied"
            f" {r['all_applied_within_s']} s after the load stopped",
        ]
    lines += [
        f"  crash: a batch sent while the primary's WAL sender was frozen stayed"
        f" unacknowledged for {FROZEN} s, then was acknowledged once after the failover",
        f"  crash: {crash['failed']} restarted and back as the synchronous standby in"
        f" {crash['rejoined_s']} s",
    ]
    print("\n".join(lines), flush=True)
