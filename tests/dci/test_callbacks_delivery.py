"""Durable DCI callbacks against a real receiver on 127.0.0.1 and the real PostgreSQL.

Callbacks are enqueued through the Python interface (``callbacks.enqueue`` inside a
transaction, as a cause would) and delivered by the delivery loop (``run_delivery``, what
the service's workers and ``nser worker`` run); staff see and retry dead letters over HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from conftest import ROOT, cli_env, fresh_database, make_settings, open_client, run_cli, service_url
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dci_receiver import Receiver, serve_receiver
from partner_helpers import bearer, create_partner, create_staff, get_token
from prometheus_client import REGISTRY

from app.services.dci import callbacks, signing
from app.settings import Settings

DCI = {
    "in_process_workers": 0,
    "dci_allow_http_callbacks": True,
    "dci_allow_private_callbacks": True,
    "dci_callback_backoff_seconds": 0.05,
    "dci_callback_backoff_max_seconds": 0.2,
    "dci_callback_max_attempts": 3,
    "dci_callback_timeout_seconds": 3.0,
    "dci_callback_poll_seconds": 0.05,
}
CLI_ENV = {"NSER_DCI_ALLOW_HTTP_CALLBACKS": "true", "NSER_DCI_ALLOW_PRIVATE_CALLBACKS": "true"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database() as db:
        yield db


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


def agreement(url: str, base: str | None = None, **env: str) -> uuid.UUID:
    """A new partner agreement, registered for DCI under ``base`` when given."""
    ident = create_partner(url, name=f"DCI partner {uuid.uuid4().hex[:6]}")["agreement_id"]
    if base is not None:
        run_cli(
            ["partners", "dci", "set", ident, "--callback-base-url", base], url, **(CLI_ENV | env)
        )
    return uuid.UUID(ident)


def envelope(message_id: str = "m-1", action: str = "on-search") -> dict[str, Any]:
    return {
        "header": {
            "version": "1.0.0",
            "message_id": message_id,
            "message_ts": "2026-12-11T09:00:00+05:00",
            "action": action,
            "status": "succ",
            "sender_id": "nser",
        },
        "message": {"transaction_id": f"t-{message_id}", "search_response": []},
    }


async def enqueue(
    db: asyncpg.Connection,
    settings: Settings,
    agreement_id: uuid.UUID,
    url: str,
    *,
    message_id: str = "m-1",
    key: str | None = None,
) -> int:
    async with db.transaction():
        return await callbacks.enqueue(
            db,
            settings=settings,
            agreement_id=agreement_id,
            url=url,
            kind="on-search",
            payload=envelope(message_id),
            ordering_key=key,
        )


@asynccontextmanager
async def delivering(settings: Settings, **options: Any) -> AsyncIterator[None]:
    """The delivery loop, as the service's workers run it, for the block's duration."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        callbacks.run_delivery(
            service_url(settings.database_url), settings=settings, stop=stop, **options
        )
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


async def row(db: asyncpg.Connection, ident: int) -> asyncpg.Record:
    found = await db.fetchrow("SELECT * FROM dci_callbacks WHERE id = $1", ident)
    assert found is not None
    return found


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def in_state(db: asyncpg.Connection, ident: int, state: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool((await row(db, ident))["state"] == state)

    return check


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("nser_dci_callbacks_total", {"outcome": outcome}) or 0.0


async def test_delivered_signed_and_verified_with_the_published_key(
    url: str, settings: Settings, api: httpx.AsyncClient, db: asyncpg.Connection, receiver: Receiver
) -> None:
    base = f"{receiver.base}/a/"
    agreement_id = agreement(url, base)
    before = counted("delivered")
    ident = await enqueue(db, settings, agreement_id, f"{base}ok/on-search")
    async with delivering(settings):
        await until(in_state(db, ident, "delivered"))
    (call,) = receiver.to("/a/")
    assert call.path == "/a/ok/on-search"
    assert call.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert call.headers["content-type"] == "application/json"
    assert {k: call.body[k] for k in ("header", "message")} == envelope()
    # The receiver verifies with the key the JWKS publishes under the signature's kid.
    sig = signing.parse(call.body["signature"])
    assert sig.key_id.startswith(f"{settings.dci_sender_id}|dci-")
    assert sig.key_id.endswith("|ed25519")
    jwks = (await api.get("/.well-known/jwks.json")).json()["keys"]
    (jwk,) = [k for k in jwks if k.get("kid") == sig.kid]
    assert jwk["kty"] == "OKP"
    assert jwk["use"] == "sig"
    assert "d" not in jwk
    signing.verify(call.body, signing.public_key_from_jwk(jwk))
    done = await row(db, ident)
    assert (done["attempts"], done["last_status"], done["claimed_by"]) == (1, 200, None)
    assert done["delivered_at"] is not None
    assert counted("delivered") == before + 1


async def test_a_callback_exists_only_if_its_cause_committed(
    url: str, settings: Settings, db: asyncpg.Connection
) -> None:
    agreement_id = agreement(url, "http://127.0.0.1:9/r/")
    before = await db.fetchval("SELECT count(*) FROM dci_callbacks")
    tx = db.transaction()
    await tx.start()
    await callbacks.enqueue(
        db,
        settings=settings,
        agreement_id=agreement_id,
        url="http://127.0.0.1:9/r/x",
        kind="notify",
        payload=envelope(),
    )
    await tx.rollback()
    assert await db.fetchval("SELECT count(*) FROM dci_callbacks") == before
    with pytest.raises(RuntimeError, match="transaction"):
        await callbacks.enqueue(
            db,
            settings=settings,
            agreement_id=agreement_id,
            url="http://127.0.0.1:9/r/x",
            kind="notify",
            payload=envelope(),
        )


async def test_a_receiver_failing_twice_gets_it_on_the_third_try(
    url: str, settings: Settings, db: asyncpg.Connection, receiver: Receiver
) -> None:
    base = f"{receiver.base}/b/"
    agreement_id = agreement(url, base)
    failed = counted("failed")
    ident = await enqueue(db, settings, agreement_id, f"{base}flaky")
    async with delivering(settings):
        await until(in_state(db, ident, "delivered"))
    assert [c.status for c in receiver.to("/b/")] == [500, 500, 200]
    done = await row(db, ident)
    assert (done["attempts"], done["last_status"], done["last_error"]) == (3, 200, None)
    assert counted("failed") == failed + 2
    # Each attempt is signed afresh, and each signature verifies.
    jwk_rows = await db.fetch("SELECT public_jwk FROM dci_signing_keys WHERE is_current")
    key = signing.public_key_from_jwk(orjson.loads(jwk_rows[0]["public_jwk"]))
    for call in receiver.to("/b/"):
        signing.verify(call.body, key)


async def test_dead_letters_after_the_cap_seen_and_retried_by_staff(
    url: str, settings: Settings, api: httpx.AsyncClient, db: asyncpg.Connection, receiver: Receiver
) -> None:
    base = f"{receiver.base}/c/"
    agreement_id = agreement(url, base)
    dead = counted("dead")
    first = await enqueue(db, settings, agreement_id, f"{base}down", message_id="d-1")
    second = await enqueue(db, settings, agreement_id, f"{base}down", message_id="d-2")
    async with delivering(settings):
        await until(in_state(db, first, "dead"))
        await until(in_state(db, second, "dead"))
    assert len(receiver.to("/c/")) == 6  # three attempts each, no more
    gone = await row(db, first)
    assert (gone["attempts"], gone["last_status"], gone["last_error"]) == (3, 503, "HTTP 503")
    assert counted("dead") == dead + 2

    officer = create_staff(url, "DCI officer", "officer")
    admin = create_staff(url, "DCI admin", "admin")
    committee = create_staff(url, "DCI committee", "committee")
    officer_h = bearer(await get_token(api, officer["client_id"], officer["client_secret"]))
    admin_h = bearer(await get_token(api, admin["client_id"], admin["client_secret"]))
    committee_h = bearer(await get_token(api, committee["client_id"], committee["client_secret"]))
    query = {"state": "dead", "agreement_id": str(agreement_id), "limit": "1"}
    page = await api.get("/v1/staff/dci/deliveries", params=query, headers=officer_h)
    assert page.status_code == 200, page.text
    (item,) = page.json()["items"]
    assert item["id"] == second
    assert page.json()["next_before"] == second
    assert item["state"] == "dead"
    assert item["last_status"] == 503
    assert item["attempts"] == 3
    assert item["url"] == f"{base}down"
    assert "payload" not in item
    page = await api.get(
        "/v1/staff/dci/deliveries", params=query | {"before": str(second)}, headers=admin_h
    )
    assert [i["id"] for i in page.json()["items"]] == [first]
    refused = await api.get("/v1/staff/dci/deliveries", params=query, headers=committee_h)
    assert refused.status_code == 403
    for bad in ({"state": "lost"}, {"limit": "0"}, {"before": "x"}, {"colour": "red"}):
        answer = await api.get("/v1/staff/dci/deliveries", params=bad, headers=officer_h)
        assert answer.status_code == 422, bad

    receiver.down = False
    retried = await api.post(f"/v1/staff/dci/deliveries/{first}/retry", headers=admin_h)
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "pending"
    assert retried.json()["attempts"] == 0
    again = await api.post(f"/v1/staff/dci/deliveries/{first}/retry", headers=admin_h)
    assert again.status_code == 409
    assert again.json()["state"] == "pending"
    missing = await api.post("/v1/staff/dci/deliveries/999999999/retry", headers=officer_h)
    assert missing.status_code == 404
    refused = await api.post(f"/v1/staff/dci/deliveries/{second}/retry", headers=committee_h)
    assert refused.status_code == 403
    async with delivering(settings):
        await until(in_state(db, first, "delivered"))
    assert (await row(db, second))["state"] == "dead"  # only the one retried
    audited = await db.fetch(
        """SELECT endpoint, client_id, filters FROM audit_log
            WHERE endpoint LIKE '%/v1/staff/dci/deliveries%' ORDER BY id"""
    )
    assert [(a["endpoint"], a["client_id"]) for a in audited] == [
        ("GET /v1/staff/dci/deliveries", officer["client_id"]),
        ("GET /v1/staff/dci/deliveries", admin["client_id"]),
        ("POST /v1/staff/dci/deliveries/{id}/retry", admin["client_id"]),
    ]


async def test_a_redirect_is_not_followed(
    url: str, settings: Settings, db: asyncpg.Connection, receiver: Receiver
) -> None:
    base = f"{receiver.base}/d/"
    agreement_id = agreement(url, base)
    ident = await enqueue(db, settings, agreement_id, f"{base}redirect")
    async with delivering(settings):
        await until(in_state(db, ident, "dead"))
    assert {c.path for c in receiver.to("/d/")} == {"/d/redirect"}  # never the target
    gone = await row(db, ident)
    assert gone["last_status"] == 302
    assert "redirect, not followed" in gone["last_error"]


async def test_urls_outside_the_registered_base_are_refused(
    url: str, settings: Settings, api: httpx.AsyncClient, db: asyncpg.Connection, receiver: Receiver
) -> None:
    base = f"{receiver.base}/e/"
    agreement_id = agreement(url, base)
    for outside in (
        f"{receiver.base}/other/ok",
        f"{receiver.base}/ex/ok",
        f"http://127.0.0.1:{receiver.port + 1}/e/ok",
        f"http://user@127.0.0.1:{receiver.port}/e/ok",
        f"{base}ok#fragment",
    ):
        with pytest.raises(callbacks.CallbackRefused):
            await enqueue(db, settings, agreement_id, outside)
    unregistered = agreement(url)
    with pytest.raises(callbacks.CallbackRefused, match="no DCI callback registration"):
        await enqueue(db, settings, unregistered, f"{base}ok")
    # Checked again when sent: the base moved since the callback was queued.
    ident = await enqueue(db, settings, agreement_id, f"{base}ok")
    officer = create_staff(url, "DCI officer 2", "officer")
    headers = bearer(await get_token(api, officer["client_id"], officer["client_secret"]))
    moved = await api.put(
        f"/v1/staff/agreements/{agreement_id}/dci",
        json={"callback_base_url": f"{receiver.base}/elsewhere/"},
        headers=headers,
    )
    assert moved.status_code == 200, moved.text
    async with delivering(settings):
        await until(in_state(db, ident, "dead"))
    assert receiver.to("/e/") == []
    assert "not under" in (await row(db, ident))["last_error"]


async def test_private_addresses_are_refused_unless_allowed(
    url: str, db: asyncpg.Connection, receiver: Receiver
) -> None:
    strict = make_settings(url, **(DCI | {"dci_allow_private_callbacks": False}))
    off = {"NSER_DCI_ALLOW_PRIVATE_CALLBACKS": "false"}
    ident = create_partner(url, name="DCI strict")["agreement_id"]
    literal = run_cli(
        ["partners", "dci", "set", ident, "--callback-base-url", f"{receiver.base}/f/"],
        url,
        check=False,
        **(CLI_ENV | off),
    )
    assert literal.returncode != 0
    assert "loopback" in literal.stderr + literal.stdout
    # A host name is checked where it resolves, at each attempt: localhost is loopback.
    base = f"http://localhost:{receiver.port}/f/"
    run_cli(["partners", "dci", "set", ident, "--callback-base-url", base], url, **(CLI_ENV | off))
    callback = await enqueue(db, strict, uuid.UUID(ident), f"{base}ok")
    async with delivering(strict):
        await until(in_state(db, callback, "dead"))
    assert receiver.to("/f/") == []
    error = (await row(db, callback))["last_error"]
    assert error.startswith("refused: localhost resolves to a loopback address"), error


async def test_a_slow_receiver_does_not_delay_another(
    url: str, settings: Settings, db: asyncpg.Connection, receiver: Receiver
) -> None:
    receiver.slow_seconds = 1.5
    slow_base, fast_base = f"{receiver.base}/g/", f"{receiver.base}/h/"
    slow, fast = agreement(url, slow_base), agreement(url, fast_base)
    slow_ids = [
        await enqueue(db, settings, slow, f"{slow_base}slow", message_id=f"s-{i}") for i in range(4)
    ]
    fast_id = await enqueue(db, settings, fast, f"{fast_base}ok")  # queued after them
    started = time.monotonic()
    async with delivering(settings):
        await until(in_state(db, fast_id, "delivered"))
        fast_done = time.monotonic() - started
        pending = await db.fetchval(
            "SELECT count(*) FROM dci_callbacks WHERE id = ANY($1) AND state = 'pending'",
            slow_ids,
        )
        for ident in slow_ids:
            await until(in_state(db, ident, "delivered"))
    assert fast_done < 1.0, fast_done  # well before the first slow answer
    assert pending == 4
    # The slow receiver never had more than its bound in flight.
    assert receiver.most_active["slow"] == settings.dci_callback_concurrency == 2


async def test_callbacks_of_one_key_arrive_in_order(
    url: str, settings: Settings, db: asyncpg.Connection, receiver: Receiver
) -> None:
    base = f"{receiver.base}/o/"
    agreement_id = agreement(url, base)
    receiver.fail_once = {"k1-2", "k2-1"}
    ids = []
    for i in range(1, 6):
        ids.append(
            await enqueue(
                db, settings, agreement_id, f"{base}ordered", message_id=f"k1-{i}", key="hh-1"
            )
        )
        if i <= 3:
            ids.append(
                await enqueue(
                    db, settings, agreement_id, f"{base}ordered", message_id=f"k2-{i}", key="hh-2"
                )
            )
    async with delivering(settings):
        for ident in ids:
            await until(in_state(db, ident, "delivered"))
    for prefix, expected in (
        ("k1-", ["k1-1", "k1-2", "k1-2", "k1-3", "k1-4", "k1-5"]),
        ("k2-", ["k2-1", "k2-1", "k2-2", "k2-3"]),
    ):
        calls = [c for c in receiver.to("/o/") if c.message_id.startswith(prefix)]
        assert [c.message_id for c in calls] == expected
        # One at a time: each call of a key starts after the one before it ended.
        assert all(b.started >= a.ended for a, b in itertools.pairwise(calls))


async def test_a_crashed_worker_loses_nothing(
    url: str, settings: Settings, db: asyncpg.Connection, receiver: Receiver
) -> None:
    base = f"{receiver.base}/k/"
    agreement_id = agreement(url, base)
    ident = await enqueue(db, settings, agreement_id, f"{base}ok")
    # A worker claims the row and dies before it sends or records anything.
    (claimed,) = await callbacks.claim(
        db, "crashed-worker", lease_seconds=1.5, per_receiver=2, limit=10
    )
    assert claimed.id == ident
    async with delivering(settings):
        await asyncio.sleep(0.8)
        assert receiver.to("/k/") == []  # its lease still holds
        await until(in_state(db, ident, "delivered"))
    assert len(receiver.to("/k/")) == 1
    assert (await row(db, ident))["attempts"] == 2


@pytest.mark.slow
async def test_a_killed_worker_process_loses_nothing(
    url: str, settings: Settings, db: asyncpg.Connection, receiver: Receiver
) -> None:
    # ``nser worker`` is SIGKILLed while the receiver holds the request; the row is still
    # due after its lease (timeout 1 s + 10 s) and the next worker delivers it.
    receiver.slow_seconds = 0.8
    base = f"{receiver.base}/w/"
    agreement_id = agreement(url, base)
    env = cli_env(url, **CLI_ENV, NSER_DCI_CALLBACK_TIMEOUT_SECONDS="1")
    ident = await enqueue(db, settings, agreement_id, f"{base}slow")
    first = subprocess.Popen([sys.executable, "-m", "app", "worker"], cwd=ROOT, env=env)
    try:
        await until(lambda: _true(bool(receiver.to("/w/"))), timeout=30)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=10)
    claimed = await row(db, ident)
    assert claimed["state"] == "pending"
    assert claimed["claimed_by"] is not None
    second = subprocess.Popen([sys.executable, "-m", "app", "worker"], cwd=ROOT, env=env)
    try:
        await until(in_state(db, ident, "delivered"), timeout=40)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=20)
    # At least once: sent again, never lost (on a loaded machine the second worker's first
    # try may also outlast its 1 s timeout against the 0.8 s receiver, and be sent a third
    # time).
    assert len(receiver.to("/w/")) >= 2


async def _true(value: bool) -> bool:
    return value


async def test_the_service_workers_deliver(
    url: str, db: asyncpg.Connection, receiver: Receiver
) -> None:
    # With NSER_IN_PROCESS_WORKERS the service runs the delivery loop itself.
    service = make_settings(url, **(DCI | {"in_process_workers": 1}))
    base = f"{receiver.base}/s/"
    agreement_id = agreement(url, base)
    ident = await enqueue(db, service, agreement_id, f"{base}ok")
    async for _client in open_client(service):
        await until(in_state(db, ident, "delivered"))
    assert len(receiver.to("/s/")) == 1


def self_signed(folder: Path, name: str) -> tuple[str, str, str]:
    """A self-signed certificate for ``name``: (certificate file, key file, PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(folder / "cert.pem"), str(folder / "key.pem"), pem.decode()


async def test_https_connects_to_the_checked_address_under_the_url_s_name(
    url: str, settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # The host name is resolved (here to 127.0.0.1) and checked; the connection goes to that
    # address, with the name in the TLS server name, the certificate check and Host.
    cert, key, pem = self_signed(tmp_path, "receiver.test")
    looked_up: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["127.0.0.1"]

    trusted = ssl.create_default_context(cadata=pem)
    async with serve_receiver(certfile=cert, keyfile=key) as receiver:
        good = f"https://receiver.test:{receiver.port}/t/"
        wrong = f"https://other.test:{receiver.port}/u/"  # the certificate does not name it
        ok_id = await enqueue(db, settings, agreement(url, good), f"{good}ok")
        wrong_id = await enqueue(db, settings, agreement(url, wrong), f"{wrong}ok")
        async with delivering(settings, resolver=resolver, verify=trusted):
            await until(in_state(db, ok_id, "delivered"))
            await until(in_state(db, wrong_id, "dead"))
        (call,) = receiver.to("/t/")
        assert call.headers["host"] == f"receiver.test:{receiver.port}"
        assert receiver.to("/u/") == []
    assert set(looked_up) == {"receiver.test", "other.test"}
    error = (await row(db, wrong_id))["last_error"]
    assert "CERTIFICATE_VERIFY_FAILED" in error, error
