"""The asynchronous DCI search and txn status through HTTP, answered by callbacks to a real
receiver on 127.0.0.1 (loopback callbacks allowed in these settings), with the workers'
loops (jobs and callback delivery) run as the service runs them. Every message sent and
received is checked against the spdci schemas (tests/dci/schemas.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import ROOT, cli_env, fresh_database, make_settings, open_client, run_cli, service_url
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from dci.schemas import validate
from dci_receiver import Receiver, serve_receiver
from partner_helpers import bearer, create_partner, get_token

from app.services.dci import jobs, signing
from app.settings import Settings

ASYNC_SEARCH = "/dci/registry/search"
ASYNC_STATUS = "/dci/registry/txn/status"
SYNC_SEARCH = "/dci/registry/sync/search"
SYNC_STATUS = "/dci/registry/sync/txn/status"
TS = "2026-12-11T09:00:00+05:00"
DCI = {
    "in_process_workers": 0,
    "dci_allow_http_callbacks": True,
    "dci_allow_private_callbacks": True,
    "dci_callback_backoff_seconds": 0.05,
    "dci_callback_backoff_max_seconds": 0.2,
    "dci_callback_timeout_seconds": 3.0,
    "dci_callback_poll_seconds": 0.05,
    "token_limits": "10000/minute",
    "partner_default_limits": "100000/minute",
    "metrics_token": "dci-metrics-token-0123456789abcdefghijklmnop",
}
CLI_ENV = {"NSER_DCI_ALLOW_HTTP_CALLBACKS": "true", "NSER_DCI_ALLOW_PRIVATE_CALLBACKS": "true"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=400, seed=11) as u:
        yield u


@pytest.fixture(scope="module")
def settings(url: str) -> Settings:
    return make_settings(url, **DCI)


@pytest.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def db(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    yield conn
    await conn.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve_receiver() as r:
        yield r


@pytest.fixture(scope="module")
async def district(db: asyncpg.Connection) -> str:
    code: str = await db.fetchval(
        "SELECT district_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    return code


async def partner(
    api: httpx.AsyncClient,
    url: str,
    base: str | None,
    *,
    jwk: dict[str, str] | None = None,
    tmp_path: Path | None = None,
) -> dict[str, str]:
    """A partner (categories iv and v) with a token, registered for DCI under ``base``
    (with ``jwk`` as its signing key) when given."""
    made = create_partner(url, name=f"DCI async {uuid.uuid4().hex[:6]}", categories="iv,v")
    if base is not None:
        args = ["partners", "dci", "set", made["agreement_id"], "--callback-base-url", base]
        if jwk is not None:
            assert tmp_path is not None
            key_file = tmp_path / f"{made['agreement_id']}.jwk"
            key_file.write_text(json.dumps(jwk))
            args += ["--jwk-file", str(key_file)]
        run_cli(args, url, **CLI_ENV)
    return {**made, "token": await get_token(api, made["client_id"], made["client_secret"])}


def search_body(
    *criteria: dict[str, Any], sender_uri: str | None = None, message_id: str | None = None
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "version": "1.0.0",
        "message_id": message_id or uuid.uuid4().hex,
        "message_ts": TS,
        "action": "search",
        "sender_id": "spmis.example.org",
        "receiver_id": "nser",
        "total_count": len(criteria),
        "is_msg_encrypted": False,
    }
    if sender_uri is not None:
        header["sender_uri"] = sender_uri
    body = {
        "header": header,
        "message": {
            "transaction_id": uuid.uuid4().hex,
            "search_request": [
                {"reference_id": f"ref-{i}", "timestamp": TS, "search_criteria": c}
                for i, c in enumerate(criteria)
            ],
        },
    }
    validate("SearchEnvelope", body)
    return body


def status_body(
    attribute_type: str, value: object, *, sender_uri: str | None = None
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "message_id": uuid.uuid4().hex,
        "message_ts": TS,
        "action": "txn-status",
        "sender_id": "spmis.example.org",
        "total_count": 1,
    }
    if sender_uri is not None:
        header["sender_uri"] = sender_uri
    body = {
        "header": header,
        "message": {
            "transaction_id": uuid.uuid4().hex,
            "txnstatus_request": {
                "reference_id": "s-1",
                "txn_type": "search",
                "attribute_type": attribute_type,
                "attribute_value": value,
            },
        },
    }
    validate("TxnStatusEnvelope", body)
    return body


def in_district(district: str, size: int = 20) -> dict[str, Any]:
    return {
        "query_type": "predicate",
        "query": [
            {
                "seq_num": 1,
                "expression1": {
                    "attribute_name": "district",
                    "operator": "eq",
                    "attribute_value": district,
                },
            }
        ],
        "sort": [{"attribute_name": "poverty_score", "sort_order": "asc"}],
        "pagination": {"page_size": size, "page_number": 1},
    }


def by_household(household_id: int) -> dict[str, Any]:
    return {"query_type": "idtype-value", "query": {"type": "HOUSEHOLD_ID", "value": household_id}}


async def post(
    api: httpx.AsyncClient, token: str, path: str, body: dict[str, Any]
) -> httpx.Response:
    r = await api.post(path, json=body, headers=bearer(token))
    assert r.headers["content-type"].startswith("application/json"), r.text
    return r


async def accepted(api: httpx.AsyncClient, token: str, path: str, body: dict[str, Any]) -> str:
    """POST an asynchronous message; its ACK checked; the correlation id."""
    r = await post(api, token, path, body)
    assert r.status_code == 202, r.text
    ack = r.json()
    validate("Ack", ack)
    assert ack["message"]["ack_status"] == "ACK"
    return str(ack["message"]["correlation_id"])


def refused(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    validate("HttpErrorResponse", r.json())
    (error,) = r.json()["errors"]
    assert error["code"] == code, error
    return str(error["message"])


@asynccontextmanager
async def working(settings: Settings) -> AsyncIterator[None]:
    """The service's DCI workers (jobs and callback delivery) for the block's duration."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        jobs.runner(settings)(service_url(settings.database_url), None, stop)
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def calls_to(receiver: Receiver, prefix: str, n: int = 1) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len([c for c in receiver.to(prefix) if c.status == 200]) >= n

    return check


async def nser_key(api: httpx.AsyncClient, signature: str) -> Ed25519PublicKey:
    """The public key the JWKS publishes under the signature's kid."""
    sig = signing.parse(signature)
    keys = (await api.get("/.well-known/jwks.json")).json()["keys"]
    (jwk,) = [k for k in keys if k.get("kid") == sig.kid]
    return signing.public_key_from_jwk(jwk)


async def job_rows(db: asyncpg.Connection, client_id: str) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM dci_jobs WHERE client_id = $1 ORDER BY id", client_id)


def without_times(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "timestamp"} for item in items]


# -- search -------------------------------------------------------------------------------


async def test_async_search_is_acked_then_answered_signed_as_the_sync_search(
    url: str,
    settings: Settings,
    api: httpx.AsyncClient,
    db: asyncpg.Connection,
    receiver: Receiver,
    district: str,
) -> None:
    base = f"{receiver.base}/a/"
    p = await partner(api, url, base)
    household = await db.fetchval(
        "SELECT id FROM households WHERE district_code = $1 ORDER BY id LIMIT 1", district
    )
    criteria = (in_district(district), by_household(household))
    body = search_body(*criteria, sender_uri=f"{base}ok/on-search")
    correlation_id = await accepted(api, p["token"], ASYNC_SEARCH, body)

    # Accepted, not yet run: the transaction is pending, nothing was sent or audited.
    transaction_id = body["message"]["transaction_id"]
    status = await post(api, p["token"], SYNC_STATUS, status_body("transaction_id", transaction_id))
    assert status.status_code == 200, status.text
    pending = status.json()["message"]["txnstatus_response"]["txn_status"]
    assert pending["correlation_id"] == correlation_id
    assert [a["status"] for a in pending["search_response"]] == ["pdng", "pdng"]
    audited = "SELECT count(*) FROM audit_log WHERE client_id = $1 AND endpoint LIKE '/dci/%'"
    assert await db.fetchval(audited, p["client_id"]) == 0
    assert receiver.to("/a/") == []

    async with working(settings):
        await until(calls_to(receiver, "/a/"))
    (call,) = receiver.to("/a/")
    assert call.path == "/a/ok/on-search"
    validate("OnSearchEnvelope", call.body)
    header, message = call.body["header"], call.body["message"]
    assert header["action"] == "on-search"
    assert header["status"] == "succ"
    assert (header["total_count"], header["completed_count"]) == (2, 2)
    assert header["meta"] == {"in_reply_to": body["header"]["message_id"]}
    assert message["transaction_id"] == transaction_id
    assert message["correlation_id"] == correlation_id
    # Signed with NSER's key, as the JWKS publishes it.
    signing.verify(call.body, await nser_key(api, call.body["signature"]))

    # The same records as the sync search answers for the same message.
    sync = await post(api, p["token"], SYNC_SEARCH, search_body(*criteria))
    assert sync.status_code == 200, sync.text
    assert without_times(message["search_response"]) == without_times(
        sync.json()["message"]["search_response"]
    )
    answers = message["search_response"]
    assert answers[0]["data"]["reg_records"]
    assert answers[1]["pagination"]["total_count"] == 1

    # Done: the transaction succeeded, the job holds no request, each page was audited.
    (job,) = await job_rows(db, p["client_id"])
    assert (job["state"], job["request"], job["attempts"]) == ("done", None, 1)
    assert job["callback_id"] is not None
    row = await db.fetchrow(
        "SELECT status, correlation_id FROM dci_transactions WHERE transaction_id = $1",
        transaction_id,
    )
    assert (row["status"], row["correlation_id"]) == ("succ", correlation_id)
    pages = await db.fetch(
        "SELECT endpoint, filters FROM audit_log WHERE client_id = $1 AND endpoint = $2",
        p["client_id"],
        "/dci/registry/search (page)",
    )
    assert len(pages) == 2
    assert {json.loads(a["filters"])["dci_transaction_id"] for a in pages} == {transaction_id}


async def test_a_request_nser_cannot_run_is_answered_rjct_by_callback(
    url: str, settings: Settings, api: httpx.AsyncClient, receiver: Receiver, district: str
) -> None:
    base = f"{receiver.base}/r/ok/"
    p = await partner(api, url, base)
    bad_sort = {**in_district(district), "sort": [{"attribute_name": "name"}]}
    sync = await post(api, p["token"], SYNC_SEARCH, search_body(in_district(district), bad_sort))
    assert sync.status_code == 400
    # No sender_uri: the answer goes to the registered base URL itself.
    body = search_body(in_district(district), bad_sort)
    correlation_id = await accepted(api, p["token"], ASYNC_SEARCH, body)
    async with working(settings):
        await until(calls_to(receiver, "/r/"))
    (call,) = receiver.to("/r/")
    assert call.path == "/r/ok/"
    validate("OnSearchEnvelope", call.body)
    assert call.body["header"]["status"] == "rjct"
    assert call.body["message"]["correlation_id"] == correlation_id
    assert without_times(call.body["message"]["search_response"]) == without_times(
        sync.json()["message"]["search_response"]
    )
    assert call.body["message"]["search_response"][1]["status_reason_code"] == "rjct.sort.invalid"


async def test_the_envelope_is_checked_as_the_sync_search_checks_it(
    url: str, api: httpx.AsyncClient, db: asyncpg.Connection, receiver: Receiver, district: str
) -> None:
    p = await partner(api, url, f"{receiver.base}/e/")
    good = search_body(in_district(district))
    bad_bodies = [
        {"message": good["message"]},
        {**good, "header": {**good["header"], "version": "2.0.0"}},
        {**good, "header": {**good["header"], "total_count": 3}},
        {**good, "header": {**good["header"], "is_msg_encrypted": True}},
        {**good, "extra": 1},
    ]
    for bad in bad_bodies:
        sync = await post(api, p["token"], SYNC_SEARCH, bad)
        asynchronous = await post(api, p["token"], ASYNC_SEARCH, bad)
        assert (asynchronous.status_code, asynchronous.json()) == (sync.status_code, sync.json())
        assert asynchronous.status_code == 400
        validate("HttpErrorResponse", asynchronous.json())
    wrong_action = {**good, "header": {**good["header"], "action": "txn-status"}}
    refused(await post(api, p["token"], ASYNC_SEARCH, wrong_action), 400, "err.request.bad")
    no_token = await api.post(ASYNC_SEARCH, json=good)
    refused(no_token, 401, "err.request.unauthorized")
    assert await job_rows(db, p["client_id"]) == []


async def test_a_sender_uri_outside_the_registered_base_is_refused(
    url: str, api: httpx.AsyncClient, db: asyncpg.Connection, receiver: Receiver, district: str
) -> None:
    base = f"{receiver.base}/u/"
    p = await partner(api, url, base)
    for elsewhere in (
        f"{receiver.base}/ux/on-search",
        f"{receiver.base}/other/on-search",
        f"http://127.0.0.1:{receiver.port + 1}/u/on-search",
        "https://spmis.example.org/u/on-search",
        f"{base}../on-search",
        "not a url",
    ):
        body = search_body(in_district(district), sender_uri=elsewhere)
        message = refused(
            await post(api, p["token"], ASYNC_SEARCH, body), 400, "err.sender_uri.invalid"
        )
        assert "sender_uri" in message
        status = status_body("transaction_id", "t-1", sender_uri=elsewhere)
        refused(await post(api, p["token"], ASYNC_STATUS, status), 400, "err.sender_uri.invalid")
    # An agreement without a DCI registration has nowhere to be answered.
    unregistered = await partner(api, url, None)
    body = search_body(in_district(district), sender_uri=f"{base}on-search")
    message = refused(
        await post(api, unregistered["token"], ASYNC_SEARCH, body), 400, "err.sender_uri.invalid"
    )
    assert "registration" in message
    # Nothing was stored, no transaction recorded.
    assert await job_rows(db, p["client_id"]) == []
    assert await job_rows(db, unregistered["client_id"]) == []
    recorded = "SELECT count(*) FROM dci_transactions WHERE client_id = $1"
    assert await db.fetchval(recorded, p["client_id"]) == 0


def sign(body: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    signed = {k: v for k, v in body.items() if k != "signature"}
    signed["signature"] = signing.sign(signed, key, key_id="spmis.example.org|k1|ed25519")
    return signed


async def test_a_signed_agreement_needs_a_good_signature_sync_and_async(
    url: str,
    settings: Settings,
    api: httpx.AsyncClient,
    db: asyncpg.Connection,
    receiver: Receiver,
    district: str,
    tmp_path: Path,
) -> None:
    key = Ed25519PrivateKey.generate()
    base = f"{receiver.base}/g/"
    jwk = signing.public_jwk(key.public_key())
    p = await partner(api, url, base, jwk=jwk, tmp_path=tmp_path)
    other = Ed25519PrivateKey.generate()

    def bodies() -> list[tuple[str, dict[str, Any]]]:
        return [
            (ASYNC_SEARCH, search_body(in_district(district), sender_uri=f"{base}ok")),
            (SYNC_SEARCH, search_body(in_district(district))),
            (ASYNC_STATUS, status_body("transaction_id", "t-1", sender_uri=f"{base}ok")),
            (SYNC_STATUS, status_body("transaction_id", "t-1")),
        ]

    for path, body in bodies():
        refused(await post(api, p["token"], path, body), 400, "err.signature.missing")
        refused(await post(api, p["token"], path, sign(body, other)), 400, "err.signature.invalid")
        tampered = sign(body, key)
        tampered["header"] = {**tampered["header"], "sender_id": "someone.else"}
        refused(await post(api, p["token"], path, tampered), 400, "err.signature.invalid")
    assert await job_rows(db, p["client_id"]) == []

    (search_path, search), (_, sync), (status_path, status), (_, sync_status) = bodies()
    correlation_id = await accepted(api, p["token"], search_path, sign(search, key))
    assert (await post(api, p["token"], SYNC_SEARCH, sign(sync, key))).status_code == 200
    await accepted(api, p["token"], status_path, sign(status, key))
    answer = await post(api, p["token"], SYNC_STATUS, sign(sync_status, key))
    refused(answer, 404, "err.request.not_found")
    async with working(settings):
        await until(calls_to(receiver, "/g/", 2))
    actions = sorted(c.body["header"]["action"] for c in receiver.to("/g/"))
    assert actions == ["on-search", "txn-on-status"]
    (on_search,) = [c for c in receiver.to("/g/") if c.body["header"]["action"] == "on-search"]
    assert on_search.body["message"]["correlation_id"] == correlation_id


async def test_a_suspended_agreement_gets_every_request_rejected(
    url: str,
    settings: Settings,
    api: httpx.AsyncClient,
    db: asyncpg.Connection,
    receiver: Receiver,
    district: str,
) -> None:
    p = await partner(api, url, f"{receiver.base}/s/ok/")
    body = search_body(in_district(district), by_household(1))
    correlation_id = await accepted(api, p["token"], ASYNC_SEARCH, body)
    # Suspended after the message was accepted: the agreement is read again at run time.
    run_cli(["partners", "suspend", p["agreement_id"], "--reason", "test"], url)
    async with working(settings):
        await until(calls_to(receiver, "/s/"))
    (call,) = receiver.to("/s/")
    validate("OnSearchEnvelope", call.body)
    assert call.body["header"]["status"] == "rjct"
    assert "suspended" in call.body["header"]["status_reason_message"]
    assert call.body["message"]["correlation_id"] == correlation_id
    answers = call.body["message"]["search_response"]
    assert [a["status"] for a in answers] == ["rjct", "rjct"]
    assert all("data" not in a for a in answers)
    assert all("suspended" in a["status_reason_message"] for a in answers)
    status = await db.fetchval(
        "SELECT status FROM dci_transactions WHERE transaction_id = $1",
        body["message"]["transaction_id"],
    )
    assert status == "rjct"
    audited = "SELECT count(*) FROM audit_log WHERE client_id = $1 AND endpoint LIKE '/dci/%'"
    assert await db.fetchval(audited, p["client_id"]) == 0


async def test_nul_characters_are_taken_and_answered_as_the_sync_search_answers_them(
    url: str, settings: Settings, api: httpx.AsyncClient, receiver: Receiver, district: str
) -> None:
    p = await partner(api, url, f"{receiver.base}/z/ok/")
    body = search_body(
        {"query_type": "idtype-value", "query": {"type": "UIN\u0000", "value": "1\u0000"}},
        {**in_district(district, 2), "consent": {"note": "\u0000"}},
        {
            "query_type": "predicate",
            "query": [
                {
                    "expression1": {
                        "attribute_name": "sex",
                        "operator": "eq",
                        "attribute_value": "f\u0000",
                    }
                }
            ],
        },
    )
    body["header"]["meta"] = {"x\u0000": "\u0000"}
    sync = await post(api, p["token"], SYNC_SEARCH, body)
    assert sync.status_code == 400, sync.text
    body["header"]["message_id"] = uuid.uuid4().hex
    correlation_id = await accepted(api, p["token"], ASYNC_SEARCH, body)
    async with working(settings):
        await until(calls_to(receiver, "/z/"))
    (call,) = receiver.to("/z/")
    validate("OnSearchEnvelope", call.body)
    assert call.body["message"]["correlation_id"] == correlation_id
    assert without_times(call.body["message"]["search_response"]) == without_times(
        sync.json()["message"]["search_response"]
    )


# -- txn status ---------------------------------------------------------------------------


async def test_async_txn_status_of_a_known_and_an_unknown_transaction(
    url: str, settings: Settings, api: httpx.AsyncClient, receiver: Receiver, district: str
) -> None:
    base = f"{receiver.base}/t/"
    p = await partner(api, url, base)
    search = search_body(in_district(district, 5))
    done = await post(api, p["token"], SYNC_SEARCH, search)
    assert done.status_code == 200, done.text
    transaction_id = search["message"]["transaction_id"]

    known = status_body("transaction_id", transaction_id, sender_uri=f"{base}ok/known")
    sync = await post(api, p["token"], SYNC_STATUS, known)
    assert sync.status_code == 200, sync.text
    known_id = await accepted(api, p["token"], ASYNC_STATUS, known)
    unknown = status_body("correlation_id", "no-such-one", sender_uri=f"{base}ok/unknown")
    refused(await post(api, p["token"], SYNC_STATUS, unknown), 404, "err.request.not_found")
    unknown_id = await accepted(api, p["token"], ASYNC_STATUS, unknown)
    # Another client's transaction is unknown to this one, as in the sync status.
    other = await partner(api, url, base)
    theirs = status_body("transaction_id", transaction_id, sender_uri=f"{base}ok/theirs")
    theirs_id = await accepted(api, other["token"], ASYNC_STATUS, theirs)

    async with working(settings):
        await until(calls_to(receiver, "/t/", 3))
    calls = {c.path: c.body for c in receiver.to("/t/")}
    for answer in calls.values():
        validate("TxnOnStatusEnvelope", answer)
        assert answer["header"]["action"] == "txn-on-status"
        signing.verify(answer, await nser_key(api, answer["signature"]))

    found = calls["/t/ok/known"]
    assert found["header"]["status"] == "succ"
    assert found["message"]["correlation_id"] == known_id
    assert found["message"]["transaction_id"] == known["message"]["transaction_id"]
    assert found["message"]["txnstatus_response"] == sync.json()["message"]["txnstatus_response"]
    assert (
        found["message"]["txnstatus_response"]["txn_status"]["search_response"][0]["status"]
        == "succ"
    )

    for path, correlation_id in (("/t/ok/unknown", unknown_id), ("/t/ok/theirs", theirs_id)):
        missing = calls[path]
        assert missing["header"]["status"] == "rjct"
        assert "no search transaction" in missing["header"]["status_reason_message"]
        assert missing["message"]["correlation_id"] == correlation_id
        assert missing["message"]["txnstatus_response"]["txn_status"]["search_response"] == []


# -- metrics ------------------------------------------------------------------------------


async def metric_values(api: httpx.AsyncClient) -> dict[str, float]:
    """The ``nser_dci_jobs`` samples of ``/metrics`` by their line's name and labels."""
    token = DCI["metrics_token"]
    r = await api.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    values = {}
    for line in r.text.splitlines():
        if line.startswith("nser_dci_jobs"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


async def test_the_job_loop_counts_its_jobs_and_shows_the_pending_ones(
    url: str,
    settings: Settings,
    api: httpx.AsyncClient,
    db: asyncpg.Connection,
    receiver: Receiver,
    district: str,
) -> None:
    done = 'nser_dci_jobs_total{kind="search",outcome="done"}'
    before = (await metric_values(api)).get(done, 0.0)
    base = f"{receiver.base}/m/"
    p = await partner(api, url, base)
    ran = search_body(in_district(district, 3), sender_uri=f"{base}ok/ran")
    await accepted(api, p["token"], ASYNC_SEARCH, ran)
    # A second job waits (as after a back-off): still pending when the loop has run.
    waiting = search_body(in_district(district, 3), sender_uri=f"{base}ok/waiting")
    await accepted(api, p["token"], ASYNC_SEARCH, waiting)
    await db.execute(
        "UPDATE dci_jobs SET next_attempt_at = now() + interval '1 hour', "
        "created_at = now() - interval '90 seconds' WHERE transaction_id = $1",
        waiting["message"]["transaction_id"],
    )
    pending = await db.fetchval("SELECT count(*) FROM dci_jobs WHERE state = 'pending'")

    async with working(settings):
        await until(calls_to(receiver, "/m/"))
    after = await metric_values(api)
    assert after[done] == before + 1
    assert after["nser_dci_jobs_pending"] == pending - 1
    assert after["nser_dci_jobs_oldest_pending_seconds"] >= 90
    # The waiting job is not for the other tests' workers.
    await db.execute(
        "DELETE FROM dci_jobs WHERE transaction_id = $1", waiting["message"]["transaction_id"]
    )


# -- durability ---------------------------------------------------------------------------


async def test_the_job_outlives_a_stopped_and_a_dead_worker(
    url: str,
    settings: Settings,
    api: httpx.AsyncClient,
    db: asyncpg.Connection,
    receiver: Receiver,
    district: str,
) -> None:
    p = await partner(api, url, f"{receiver.base}/w/ok/")
    # A worker runs, then stops; the message is accepted while no worker runs.
    async with working(settings):
        await asyncio.sleep(0.2)
    body = search_body(in_district(district, 3))
    correlation_id = await accepted(api, p["token"], ASYNC_SEARCH, body)
    await asyncio.sleep(0.3)
    assert receiver.to("/w/") == []
    # A worker claims it and dies before running it (its lease then runs out).
    claimed = await jobs.claim(db, "dead-worker", lease_seconds=1.5)
    assert claimed is not None
    assert claimed.correlation_id == correlation_id
    async with working(settings):
        await asyncio.sleep(0.7)
        assert receiver.to("/w/") == []  # the dead worker's lease still holds
        await until(calls_to(receiver, "/w/"))
        await asyncio.sleep(0.5)  # nothing more comes
    (call,) = receiver.to("/w/")
    assert call.body["message"]["correlation_id"] == correlation_id
    (job,) = await job_rows(db, p["client_id"])
    assert (job["state"], job["attempts"]) == ("done", 2)
    # The next worker finds nothing left to do.
    async with working(settings):
        await asyncio.sleep(0.5)
    assert len(receiver.to("/w/")) == 1


async def test_a_message_sent_twice_is_one_job_and_one_answer(
    url: str,
    settings: Settings,
    api: httpx.AsyncClient,
    db: asyncpg.Connection,
    receiver: Receiver,
    district: str,
) -> None:
    p = await partner(api, url, f"{receiver.base}/d/ok/")
    body = search_body(in_district(district, 3))
    first = await accepted(api, p["token"], ASYNC_SEARCH, body)
    again = await accepted(api, p["token"], ASYNC_SEARCH, body)
    assert again == first
    # Sent again at once, concurrently: still the one job.
    both = await asyncio.gather(*(accepted(api, p["token"], ASYNC_SEARCH, body) for _ in range(3)))
    assert set(both) == {first}
    # The same message id for another message is refused.
    other = search_body(by_household(1), message_id=body["header"]["message_id"])
    message = refused(await post(api, p["token"], ASYNC_SEARCH, other), 400, "err.request.bad")
    assert "message_id" in message
    status = status_body("transaction_id", "t-1")
    status["header"]["message_id"] = body["header"]["message_id"]
    refused(await post(api, p["token"], ASYNC_STATUS, status), 400, "err.request.bad")
    assert len(await job_rows(db, p["client_id"])) == 1
    async with working(settings):
        await until(calls_to(receiver, "/d/"))
        await asyncio.sleep(0.5)
    assert len(receiver.to("/d/")) == 1
    # Once answered, the same message is still acknowledged with its id, and not run again.
    assert await accepted(api, p["token"], ASYNC_SEARCH, body) == first
    async with working(settings):
        await asyncio.sleep(0.5)
    assert len(receiver.to("/d/")) == 1


@pytest.mark.slow
async def test_nser_worker_runs_the_jobs(
    url: str, api: httpx.AsyncClient, db: asyncpg.Connection, receiver: Receiver, district: str
) -> None:
    p = await partner(api, url, f"{receiver.base}/n/ok/")
    correlation_id = await accepted(
        api, p["token"], ASYNC_SEARCH, search_body(in_district(district, 2))
    )
    env = cli_env(url, **CLI_ENV, NSER_DCI_CALLBACK_POLL_SECONDS="0.1")
    worker = subprocess.Popen([sys.executable, "-m", "app", "worker"], cwd=ROOT, env=env)
    try:
        await until(calls_to(receiver, "/n/"), timeout=40)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
    (call,) = receiver.to("/n/")
    assert call.body["message"]["correlation_id"] == correlation_id
    (job,) = await job_rows(db, p["client_id"])
    assert job["state"] == "done"
