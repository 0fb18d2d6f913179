"""The service through pgbouncer in transaction mode (Debian's 1.18, which does not track
prepared statements): NSER_DATABASE_URL points at pgbouncer with NSER_DB_STATEMENT_CACHE
off, NSER_DIRECT_DATABASE_URL at PostgreSQL for the connections that keep session state
(the ingest worker's staging tables, the public products' refresher's session lock).

pgbouncer gets 3 server connections per database and user, so the service's client
connections (its asyncpg pool and its SQLAlchemy engine, up to 10 each) share them at every
transaction. Through it: look-ups of both kinds, sent at once; an update batch, received
through pgbouncer and applied by the in-process worker on its direct connection; an export
streamed from one snapshot; and the transaction-level advisory locks the request paths
take: the audit chains' (every chain intact after audited reads sent at once) and the
idempotency key's (one batch for one key sent twice at once).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from conftest import (
    ADMIN_URL,
    SERVICE_ROLE,
    fresh_database,
    make_settings,
    open_client,
    run_cli,
    service_url,
)
from partner_helpers import bearer, create_staff, get_token
from pgbouncer_helpers import Bouncer, pgbouncer
from updates_helpers import updates_partner, wait_done


@dataclass(frozen=True)
class Setup:
    url: str  # the owner's, straight to PostgreSQL (the test's own checks)
    bouncer: Bouncer
    database: str


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    admin = ADMIN_URL.split("//", 1)[1].split("@", 1)[0]
    with (
        fresh_database(households=300, seed=5) as url,
        pgbouncer(ADMIN_URL, [admin, SERVICE_ROLE]) as bouncer,
    ):
        yield Setup(url, bouncer, url.rpartition("/")[2])


@pytest.fixture(scope="module")
async def client(setup: Setup) -> AsyncIterator[httpx.AsyncClient]:
    direct = service_url(setup.url)
    settings = make_settings(
        setup.url,
        database_url=setup.bouncer.url(direct),
        direct_database_url=direct,
        db_statement_cache=False,
        public_lookup_limits="100000/minute",
        token_limits="1000/minute",
        partner_default_limits="100000/minute",
        staff_read_limits="100000/minute",
        public_refresh_seconds=0.05,
    )
    async for c in open_client(settings):
        yield c


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_lookups_sent_at_once_answer_through_pgbouncer(
    setup: Setup, client: httpx.AsyncClient
) -> None:
    before = setup.bouncer.logins(setup.database, SERVICE_ROLE)
    known = await _fetch(
        setup.url,
        """SELECT m.cnic, m.household_id FROM members m
            WHERE m.cnic IS NOT NULL AND m.deceased_on IS NULL ORDER BY m.id LIMIT 40""",
    )
    partner = await updates_partner(setup.url, client, "Bouncer look-ups")
    auth = bearer(partner["token"])
    missing = "9000000000001"
    public = [client.get(f"/v1/public/scores/{row['cnic']}") for row in known]
    partners = [client.get(f"/v1/partner/scores/{row['cnic']}", headers=auth) for row in known]
    extra = [
        client.get(f"/v1/public/scores/{missing}"),
        client.get(f"/v1/partner/scores/{missing}", headers=auth),
    ]
    answers = await asyncio.gather(*public, *partners, *extra)
    n = len(known)
    assert [a.status_code for a in answers[: 2 * n]] == [200] * (2 * n), answers[0].text
    assert [a.status_code for a in answers[2 * n :]] == [404, 404]
    got = [a.json()["household_id"] for a in answers[n : 2 * n]]
    assert got == [str(row["household_id"]) for row in known]
    # The service's pools logged in through pgbouncer (its log names each client login).
    assert setup.bouncer.logins(setup.database, SERVICE_ROLE) > before


async def test_an_update_batch_is_received_through_pgbouncer_and_applied(
    setup: Setup, client: httpx.AsyncClient
) -> None:
    partner = await updates_partner(setup.url, client, "Bouncer updates")
    (household,) = await _fetch(setup.url, "SELECT id FROM households ORDER BY id LIMIT 1")
    record = {
        "ref": "phone",
        "kind": "phone_change",
        "household_id": household["id"],
        "phone": "0300 7654321",
    }
    sent = await client.post(
        "/v1/partner/updates",
        json={"records": [record]},
        headers={**bearer(partner["token"]), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert sent.status_code == 202, sent.text
    done = await wait_done(client, {**partner}, sent.json()["batch_id"])
    assert [r["outcome"] for r in done["results"]] == ["applied"], done
    (row,) = await _fetch(setup.url, "SELECT phone FROM households WHERE id = $1", household["id"])
    assert row["phone"].replace(" ", "").endswith("3007654321")


async def test_one_idempotency_key_sent_twice_at_once_makes_one_batch(
    setup: Setup, client: httpx.AsyncClient
) -> None:
    """The key's transaction-level advisory lock holds through transaction pooling."""
    partner = await updates_partner(setup.url, client, "Bouncer idempotency")
    (household,) = await _fetch(setup.url, "SELECT id FROM households ORDER BY id OFFSET 1 LIMIT 1")
    key = uuid.uuid4().hex
    body = {
        "records": [
            {
                "ref": "p",
                "kind": "phone_change",
                "household_id": household["id"],
                "phone": "0300 1112223",
            }
        ]
    }
    headers = {**bearer(partner["token"]), "Idempotency-Key": key}
    answers = await asyncio.gather(
        *(client.post("/v1/partner/updates", json=body, headers=headers) for _ in range(6))
    )
    assert {a.status_code for a in answers} <= {200, 202, 409}, [a.text for a in answers]
    batches = {a.json()["batch_id"] for a in answers if a.status_code in (200, 202)}
    assert len(batches) == 1, batches
    stored = await _fetch(
        setup.url,
        "SELECT count(*) AS n FROM update_batches WHERE client_id = $1",
        partner["client_id"],
    )
    assert stored[0]["n"] == 1


async def test_an_export_streams_through_pgbouncer(setup: Setup, client: httpx.AsyncClient) -> None:
    partner = await updates_partner(setup.url, client, "Bouncer export")
    (expected,) = await _fetch(
        setup.url, "SELECT count(*) AS n FROM households WHERE province_code = 'PK6'"
    )
    assert expected["n"] > 0
    lines = []
    async with client.stream(
        "GET",
        "/v1/partner/beneficiaries?province=PK6",
        headers={**bearer(partner["token"]), "Accept": "application/x-ndjson"},
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                lines.append(orjson.loads(line))
    assert len(lines) == expected["n"]
    assert all(doc["province"] == "PK6" for doc in lines)


async def test_audited_reads_sent_at_once_keep_every_audit_chain_intact(
    setup: Setup, client: httpx.AsyncClient
) -> None:
    """Each audit chain's lock is a transaction-level advisory lock: under transaction
    pooling it is held by the transaction that appends, on whichever server connection."""
    partner = await updates_partner(setup.url, client, "Bouncer audit")
    staff = create_staff(setup.url, "Bouncer officer")
    s = bearer(await get_token(client, staff["client_id"], staff["client_secret"]))
    p = bearer(partner["token"])
    (rows_before,) = await _fetch(setup.url, "SELECT count(*) AS n FROM audit_log")
    reads = [client.get("/v1/partner/scores/3520212345673", headers=p) for _ in range(30)]
    reads += [client.get("/v1/households/1/history", headers=s) for _ in range(10)]
    answers = await asyncio.gather(*reads)
    assert {a.status_code for a in answers} <= {200, 404}, [a.text for a in answers]
    (rows_after,) = await _fetch(setup.url, "SELECT count(*) AS n FROM audit_log")
    assert rows_after["n"] == rows_before["n"] + len(reads)
    verified = run_cli(["audit", "verify", "--full"], setup.url)
    assert f"audit log intact: {rows_after['n']} rows" in verified.stdout
