"""Reads on a real streaming replica (NSER_READ_DATABASE_URL): where reads and writes go,
the lag rule, and a replica that stops.

The replica is a hot standby (pg_basebackup -R) of a primary of the test's own, both made
with the machine's PostgreSQL binaries on ports of their own (tests/replica.py). A paused
replay (``pg_wal_replay_pause()`` on the standby) makes
it lag on demand: a change committed on the primary then stays invisible on the replica,
which tells which server answered a read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import SERVICE_ROLE, make_settings, open_client, run_cli
from partner_helpers import bearer, create_partner, get_token
from prometheus_client.parser import text_string_to_metric_families
from replica import Pair, Server, primary_and_replica

from app.services.programmes.demo import ensure_demo_programmes

pytestmark = pytest.mark.slow

METRICS_TOKEN = "replica-tests-metrics-token-0123456789abcdef"
LIMITS = {"token_limits": "10000/minute", "partner_default_limits": "100000/minute"}


# -- the servers ---------------------------------------------------------------------------


DATABASE = "nser_replicas"


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with primary_and_replica() as servers:
        yield servers


@pytest.fixture(scope="module")
def standby(pair: Pair) -> Server:
    return pair.standby


def cli_urls(pair: Pair) -> dict[str, str]:
    """The service's and the owner's URLs of the test database on the primary."""
    return {
        "NSER_DATABASE_URL": pair.primary.url(DATABASE, user=SERVICE_ROLE),
        "NSER_OWNER_DATABASE_URL": pair.primary.url(DATABASE),
    }


@pytest.fixture(scope="module")
def primary_url(pair: Pair) -> str:
    """The owner's URL of a migrated, seeded registry on the primary (the replica has it
    as it commits)."""
    asyncio.run(execute(pair.primary.url(), f"CREATE ROLE {SERVICE_ROLE} LOGIN"))
    asyncio.run(execute(pair.primary.url(), f"CREATE DATABASE {DATABASE}"))
    url = pair.primary.url(DATABASE)
    run_cli(["db", "upgrade"], url, **cli_urls(pair))
    run_cli(["seed", "--households", "600", "--seed", "5"], url, **cli_urls(pair))
    return url


def database(url: str) -> str:
    return url.rpartition("/")[2]


def replica_url(standby: Server, primary_url: str) -> str:
    """The service's role on the replica (roles and grants come with the copy)."""
    return standby.url(database(primary_url), user=SERVICE_ROLE)


async def execute(url: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def pause(standby: Server) -> None:
    await execute(standby.url("postgres"), "SELECT pg_wal_replay_pause()")


async def resume(standby: Server, primary_url: str) -> None:
    """Resume replay and wait until the replica holds everything the primary flushed."""
    await execute(standby.url("postgres"), "SELECT pg_wal_replay_resume()")
    target = await execute(primary_url, "SELECT pg_current_wal_flush_lsn()::text")
    await until(
        lambda: execute(
            standby.url("postgres"), "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", target
        ),
        what="the replica to replay the primary's WAL",
    )


async def until(
    check: Callable[[], Awaitable[Any]], timeout: float = 30, what: str = "the condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def programmes(primary_url: str) -> None:
    conn = await asyncpg.connect(primary_url)
    try:
        await ensure_demo_programmes(conn)
    finally:
        await conn.close()


def client_for(
    primary_url: str, read_urls: list[str], **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    values = {
        "database_url": primary_url.replace("postgres@", f"{SERVICE_ROLE}@", 1),
        "read_database_url": read_urls,
        "read_check_seconds": 0.1,
        "read_wait_seconds": 0.5,
        "read_max_lag_seconds": 120,
        "metrics_token": METRICS_TOKEN,
        # One refresh of the public products, at start: their answers stay put meanwhile.
        "public_refresh_seconds": 3600,
        **LIMITS,
        **settings,
    }
    return open_client(make_settings(primary_url, **values))


@pytest.fixture(scope="module")
async def api(
    primary_url: str, standby: Server, programmes: None
) -> AsyncIterator[httpx.AsyncClient]:
    """The service reading the replica, which it tolerates 120 s behind."""
    async for client in client_for(primary_url, [replica_url(standby, primary_url)]):
        await until(partial(replicas_on, client), what="the replica to take reads")
        yield client


@pytest.fixture(scope="module")
async def strict(
    primary_url: str, standby: Server, programmes: None
) -> AsyncIterator[httpx.AsyncClient]:
    """A second service process on the same replica that tolerates only 1 s of lag."""
    urls = [replica_url(standby, primary_url)]
    async for client in client_for(primary_url, urls, read_max_lag_seconds=1):
        await until(partial(replicas_on, client), what="the replica to take reads")
        yield client


@pytest.fixture(scope="module")
async def partner(api: httpx.AsyncClient, primary_url: str) -> dict[str, str]:
    made = create_partner(
        primary_url,
        categories="i,iii,iv,v,vi",
        programmes="cash-transfer",
        update_kinds="phone_change",
        name="Replica Reader",
    )
    token = await get_token(api, made["client_id"], made["client_secret"])
    return bearer(token)


async def readiness(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def replicas_on(client: httpx.AsyncClient) -> bool:
    return (await readiness(client))["reads"]["on"] == "replicas"


async def fallbacks(client: httpx.AsyncClient) -> dict[str, float]:
    """nser_db_read_fallbacks_total by reason (the metrics of this test process)."""
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        if family.name == "nser_db_read_fallbacks":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["reason"]] = sample.value
    return out


def increase(before: dict[str, float], after: dict[str, float], reason: str) -> float:
    return after.get(reason, 0) - before.get(reason, 0)


# -- the registry's data -------------------------------------------------------------------


async def some_member(primary_url: str, offset: int = 0) -> asyncpg.Record:
    conn = await asyncpg.connect(primary_url)
    try:
        row = await conn.fetchrow(
            """SELECT m.cnic, h.id AS household_id, h.pmt_score::float8 AS score,
                      h.district_code
                 FROM members m JOIN households h ON h.id = m.household_id
                WHERE m.cnic IS NOT NULL AND m.deceased_on IS NULL AND h.pmt_score IS NOT NULL
                ORDER BY m.id OFFSET $1 LIMIT 1""",
            offset,
        )
        assert row is not None
        return row
    finally:
        await conn.close()


async def set_score(primary_url: str, household_id: int, score: float) -> None:
    await execute(
        primary_url, "UPDATE households SET pmt_score = $1 WHERE id = $2", score, household_id
    )


async def public_score(client: httpx.AsyncClient, cnic: str) -> float:
    response = await client.get(f"/v1/public/scores/{cnic}")
    assert response.status_code == 200, response.text
    score: float = response.json()["pmt_score"]
    return score


async def audit_rows(primary_url: str) -> int:
    count: int = await execute(primary_url, "SELECT count(*) FROM audit_log")
    return count


async def read_connections(url: str, name: str) -> int:
    count: int = await execute(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
        name,
        "nser-read",
    )
    return count


# -- where reads and writes go ---------------------------------------------------------------


async def test_reads_reach_the_replica_and_writes_the_primary(
    api: httpx.AsyncClient,
    partner: dict[str, str],
    primary_url: str,
    standby: Server,
) -> None:
    member = await some_member(primary_url)
    cnic, before = member["cnic"], member["score"]
    assert await public_score(api, cnic) == pytest.approx(before)
    name = database(primary_url)
    # The service's read connections are on the replica, none on the primary.
    assert await read_connections(standby.url(name), name) >= 1
    assert await read_connections(primary_url, name) == 0

    await pause(standby)
    try:
        changed = round(before + 7.5 if before < 90 else before - 7.5, 2)
        await set_score(primary_url, member["household_id"], changed)
        # The primary has the change; every read of it here answers the replica's state.
        assert await public_score(api, cnic) == pytest.approx(before)
        audited = await audit_rows(primary_url)
        response = await api.get(f"/v1/partner/scores/{cnic}", headers=partner)
        assert response.status_code == 200, response.text
        assert response.json()["pmt_score"] == pytest.approx(before)
        # ...and its audit row was appended on the primary (the replica cannot take it).
        assert await audit_rows(primary_url) == audited + 1
        endpoint = await execute(
            primary_url, "SELECT endpoint FROM audit_log ORDER BY id DESC LIMIT 1"
        )
        assert endpoint == "/v1/partner/scores/{cnic}"
        # A write through the API: a partner's update batch goes into the primary's queue.
        phone = "+923001234567"
        response = await api.post(
            "/v1/partner/updates",
            json={
                "records": [
                    {
                        "ref": "1",
                        "kind": "phone_change",
                        "household_id": member["household_id"],
                        "phone": phone,
                    }
                ]
            },
            headers={**partner, "Idempotency-Key": "replica-write-1"},
        )
        assert response.status_code == 202, response.text
        batch = response.json()["batch_id"]
        stored = await execute(
            primary_url, "SELECT count(*) FROM update_batches WHERE id::text = $1", batch
        )
        assert stored == 1
    finally:
        await resume(standby, primary_url)
    await until(
        lambda: _score_is(api, cnic, changed), what="the replica's answer to show the change"
    )


async def _score_is(client: httpx.AsyncClient, cnic: str, score: float) -> bool:
    return await public_score(client, cnic) == pytest.approx(score)


# -- lag -----------------------------------------------------------------------------------


async def _list(
    client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, Any]
) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    response = await client.get("/v1/partner/beneficiaries", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body, time.monotonic() - started


async def district_households(primary_url: str) -> tuple[str, list[int]]:
    """A district with a handful of scored households, and their ids in order."""
    conn = await asyncpg.connect(primary_url)
    try:
        district = await conn.fetchval(
            """SELECT district_code FROM households WHERE pmt_score IS NOT NULL
                GROUP BY district_code HAVING count(*) >= 6 ORDER BY count(*), 1 LIMIT 1"""
        )
        ids = [
            row["id"]
            for row in await conn.fetch(
                "SELECT id FROM households WHERE district_code = $1 ORDER BY id", district
            )
        ]
        return district, ids
    finally:
        await conn.close()


async def test_an_as_of_list_newer_than_the_replica_is_answered_by_the_primary(
    api: httpx.AsyncClient,
    partner: dict[str, str],
    primary_url: str,
    standby: Server,
) -> None:
    district, ids = await district_households(primary_url)
    first = ids[0]
    await pause(standby)
    try:
        await set_score(primary_url, first, 0.25)
        instant = await execute(primary_url, "SELECT clock_timestamp()")
        await asyncio.sleep(0.05)
        params = {"district": district, "limit": 2, "as_of": instant.isoformat()}
        counts = await fallbacks(api)
        page, took = await _list(api, partner, params)
        # The replica lacks the change (its replay is paused before it): the list waited
        # for it NSER_READ_WAIT_SECONDS, then came from the primary, with the change.
        assert took >= 0.5
        assert increase(counts, await fallbacks(api), "behind") == 1
        assert page["items"][0]["household_id"] == str(first)
        assert page["items"][0]["pmt_score"] == pytest.approx(0.25)
        snapshot = page["snapshot"]
        # The next page, by its cursor: still newer than the replica, still the primary.
        second, took = await _list(
            api, partner, {"district": district, "limit": 2} | {"cursor": page["next_cursor"]}
        )
        assert took >= 0.5
        assert second["snapshot"] == snapshot
    finally:
        await resume(standby, primary_url)
    # Replayed: the rest of the walk comes from the replica, the same snapshot throughout.
    counts = await fallbacks(api)
    third, took = await _list(
        api, partner, {"district": district, "limit": 2, "cursor": second["next_cursor"]}
    )
    assert third["snapshot"] == snapshot
    assert increase(counts, await fallbacks(api), "behind") == 0
    walked = [item["household_id"] for item in page["items"] + second["items"] + third["items"]]
    assert walked == [str(i) for i in ids[:6]]


async def test_an_as_of_list_waits_for_a_replica_that_catches_up(
    api: httpx.AsyncClient,
    partner: dict[str, str],
    primary_url: str,
    standby: Server,
) -> None:
    district, ids = await district_households(primary_url)
    await pause(standby)
    try:
        await set_score(primary_url, ids[1], 0.5)
        instant = await execute(primary_url, "SELECT clock_timestamp()")
        await asyncio.sleep(0.05)
        counts = await fallbacks(api)

        async def resume_soon() -> None:
            await asyncio.sleep(0.15)
            await execute(standby.url("postgres"), "SELECT pg_wal_replay_resume()")

        params = {"district": district, "limit": 2, "as_of": instant.isoformat()}
        (page, _), _ = await asyncio.gather(_list(api, partner, params), resume_soon())
    finally:
        await resume(standby, primary_url)
    # Replay resumed within the wait: the replica answered, with the change.
    assert increase(counts, await fallbacks(api), "behind") == 0
    assert page["items"][1]["household_id"] == str(ids[1])
    assert page["items"][1]["pmt_score"] == pytest.approx(0.5)


async def test_a_cursor_never_continues_on_an_older_state(
    api: httpx.AsyncClient,
    strict: httpx.AsyncClient,
    partner: dict[str, str],
    primary_url: str,
    standby: Server,
) -> None:
    """Page 1 read at a newer state than the replica holds (by a process that will not read
    a replica lagging over a second) makes its cursor carry that state: page 2, asked of a
    process that tolerates the lag, is not read from the older replica."""
    district, ids = await district_households(primary_url)
    first, later = ids[0], ids[3]
    low = {"district": district, "score_max": 3, "limit": 1}
    await set_score(primary_url, first, 1.0)
    await set_score(primary_url, later, 80.0)
    await resume(standby, primary_url)  # both visible everywhere
    await pause(standby)
    try:
        await set_score(primary_url, later, 2.0)  # joins the list, after the first page
        await until(lambda: _state(strict, "lagging"), what="the strict process to see lag")
        page, _ = await _list(strict, partner, low)  # the primary's (the replica lags)
        assert [item["household_id"] for item in page["items"]] == [str(first)]
        counts = await fallbacks(api)
        rest, took = await _list(
            api, partner, {**low, "limit": 1000, "cursor": page["next_cursor"]}
        )
        # The replica would have answered without the household that joined; the cursor
        # named a newer state, so the replica was waited for, then the primary answered.
        assert took >= 0.5
        assert increase(counts, await fallbacks(api), "behind") == 1
        assert str(later) in [item["household_id"] for item in rest["items"]]
        stale = await execute(
            standby.url(database(primary_url)),
            "SELECT pmt_score::float8 FROM households WHERE id = $1",
            later,
        )
        assert stale == pytest.approx(80.0)
    finally:
        await resume(standby, primary_url)


async def _state(client: httpx.AsyncClient, state: str) -> bool:
    replicas = (await readiness(client))["reads"]["replicas"]
    return all(replica["state"] == state for replica in replicas)


async def test_a_replica_beyond_the_lag_bound_is_not_read(
    strict: httpx.AsyncClient, primary_url: str, standby: Server
) -> None:
    member = await some_member(primary_url, offset=5)
    await pause(standby)
    try:
        await set_score(primary_url, member["household_id"], 33.33)
        await until(lambda: _state(strict, "lagging"), what="the replica to be lagging")
        ready = await readiness(strict)
        assert ready["reads"]["on"] == "primary"
        assert ready["reads"]["replicas"][0]["lag_seconds"] > 1
        counts = await fallbacks(strict)
        assert await public_score(strict, member["cnic"]) == pytest.approx(33.33)
        assert increase(counts, await fallbacks(strict), "lagging") == 1
    finally:
        await resume(standby, primary_url)
    await until(lambda: replicas_on(strict), what="the replica to take reads again")


# -- a replica that fails ------------------------------------------------------------------


async def _answers(
    client: httpx.AsyncClient, partner: dict[str, str], cnic: str, district: str
) -> list[tuple[int, Any]]:
    """What a client sees of the reads that go to replicas (status and body). A page's
    cursor is followed rather than compared: it names the WAL position its page was read
    at, which differs between servers (the pages it leads to must not)."""
    out: list[tuple[int, Any]] = []
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        (f"/v1/public/scores/{cnic}", {}, {}),
        (f"/v1/partner/scores/{cnic}", {}, partner),
        (f"/v1/partner/programmes/cash-transfer/eligibility/{cnic}", {}, partner),
        ("/v1/partner/beneficiaries", {"district": district, "limit": 3}, partner),
        (
            "/v1/partner/beneficiaries",
            {"district": district},
            {**partner, "Accept": "application/x-ndjson"},
        ),
        ("/v1/partner/extracts/anonymized", {"district": district}, partner),
        ("/v1/partner/summaries", {"group_by": "poverty_band"}, partner),
        ("/v1/public/summaries", {"group_by": "province,poverty_band"}, {}),
        ("/v1/public/geography", {"level": "province"}, {}),
    ]
    for path, params, headers in requests:
        response = await client.get(path, params=params, headers=headers)
        body: Any = response.content
        if response.headers["content-type"].startswith("application/json"):
            body = response.json()
            body.pop("query_id", None)  # a partner summary's: new for every query
            cursor = body.pop("next_cursor", None)
            if cursor is not None:
                follow = await client.get(
                    path, params={**params, "cursor": cursor}, headers=headers
                )
                assert follow.status_code == 200, follow.text
                body["next_page"] = follow.json()["items"]
        out.append((response.status_code, body))
    return out


async def test_a_stopped_replica_changes_nothing_a_client_sees(
    api: httpx.AsyncClient,
    partner: dict[str, str],
    primary_url: str,
    standby: Server,
) -> None:
    member = await some_member(primary_url, offset=11)
    district = member["district_code"]
    await until(
        lambda: _ready_summaries(api), what="the public summaries' first refresh", timeout=120
    )
    await resume(standby, primary_url)
    before = await _answers(api, partner, member["cnic"], district)
    assert [status for status, _ in before] == [200] * len(before)
    counts = await fallbacks(api)
    standby.stop("immediate")  # as a crash: every connection cut
    try:
        after = await _answers(api, partner, member["cnic"], district)
        assert after == before
        assert increase(counts, await fallbacks(api), "down") >= 1
        ready = await readiness(api)
        assert ready["reads"]["on"] == "primary"
        assert ready["reads"]["replicas"][0]["state"] == "down"
    finally:
        standby.start()
    await until(lambda: replicas_on(api), what="the restarted replica to take reads")
    assert await _answers(api, partner, member["cnic"], district) == before


async def _ready_summaries(client: httpx.AsyncClient) -> bool:
    response = await client.get("/v1/public/summaries", params={"group_by": "province"})
    return response.status_code == 200
