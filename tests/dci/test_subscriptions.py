"""DCI subscribe / unsubscribe / notify through HTTP, against a receiver on 127.0.0.1.

The service runs with one in-process worker: it applies the update batches, runs the
callbacks' delivery loop and the notifier, as in production. Every message sent and every
callback received is checked against the spdci schemas (tests/dci/schemas.py), and the
callbacks' signatures against the keys NSER publishes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import fresh_database, make_settings, open_client, run_cli
from dci.schemas import validate
from dci_receiver import Call, Receiver, serve_receiver
from partner_helpers import bearer, create_partner, get_token
from updates_helpers import send, updates_partner

from app.services.dci import signing

SUBSCRIBE = "/dci/registry/subscribe"
UNSUBSCRIBE = "/dci/registry/unsubscribe"
TS = "2026-12-13T09:00:00+05:00"
CLI_ENV = {"NSER_DCI_ALLOW_HTTP_CALLBACKS": "true", "NSER_DCI_ALLOW_PRIVATE_CALLBACKS": "true"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=300, seed=11) as u:
        yield u


@pytest.fixture(scope="module")
async def c(url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        url,
        in_process_workers=1,
        token_limits="10000/minute",
        partner_default_limits="100000/minute",
        dci_allow_http_callbacks=True,
        dci_allow_private_callbacks=True,
        dci_callback_poll_seconds=0.05,
        dci_notify_poll_seconds=0.05,
        dci_callback_backoff_seconds=0.1,
        dci_callback_backoff_max_seconds=0.5,
    )
    async for client in open_client(settings):
        yield client


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


@pytest.fixture(scope="module")
async def updater(c: httpx.AsyncClient, url: str) -> dict[str, str]:
    return await updates_partner(url, c, "DCI notify updater")


async def subscriber(
    c: httpx.AsyncClient, url: str, receiver: Receiver, district: str
) -> dict[str, str]:
    """A partner limited to ``district``, registered for DCI callbacks at the receiver."""
    p = create_partner(
        url,
        name=f"SPMIS {uuid.uuid4().hex[:6]}",
        categories="iv,v",
        dimensions="education",
        geo=district,
    )
    run_cli(
        [
            "partners",
            "dci",
            "set",
            p["agreement_id"],
            "--callback-base-url",
            f"{receiver.base}/p/ok/",
        ],
        url,
        **CLI_ENV,
    )
    return {**p, "token": await get_token(c, p["client_id"], p["client_secret"])}


def header(action: str, total: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "version": "1.0.0",
        "message_id": uuid.uuid4().hex,
        "message_ts": TS,
        "action": action,
        "sender_id": "spmis.example.org",
        "receiver_id": "nser",
        "total_count": total,
        **extra,
    }


def criteria(event: str = "UPDATE", flt: object = None, **extra: Any) -> dict[str, Any]:
    return {
        "version": "1.0.0",
        "reg_type": "ns:org:RegistryType:Social",
        "reg_event_type": event,
        "filter_type": "predicate",
        "filter": flt
        if flt is not None
        else [
            {
                "seq_num": 1,
                "expression1": {
                    "attribute_name": "household_size",
                    "operator": "ge",
                    "attribute_value": 0,
                },
            }
        ],
        "notify_record_type": "Group",
        **extra,
    }


def subscribe_body(*crits: dict[str, Any], **head: Any) -> dict[str, Any]:
    body = {
        "signature": "",
        "header": header("subscribe", len(crits), **head),
        "message": {
            "transaction_id": uuid.uuid4().hex,
            "subscribe_request": [
                {
                    "reference_id": f"r-{i}",
                    "timestamp": TS,
                    "subscribe_criteria": crit,
                    "locale": "eng",
                }
                for i, crit in enumerate(crits)
            ],
        },
    }
    validate("SubscribeEnvelope", body)
    return body


def unsubscribe_body(*codes: str) -> dict[str, Any]:
    body = {
        "header": header("unsubscribe", 1),
        "message": {
            "transaction_id": uuid.uuid4().hex,
            "timestamp": TS,
            "subscription_codes": list(codes),
        },
    }
    validate("UnsubscribeEnvelope", body)
    return body


async def post(c: httpx.AsyncClient, p: dict[str, str], path: str, body: object) -> Any:
    r = await c.post(path, json=body, headers=bearer(p["token"]))
    assert r.headers["content-type"].startswith("application/json"), r.text
    return r


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def calls(receiver: Receiver, path: str, n: int = 1) -> list[Call]:
    await until(lambda: len(receiver.to(path)) >= n)
    return receiver.to(path)


async def verified(c: httpx.AsyncClient, call: Call) -> None:
    sig = signing.parse(call.body["signature"])
    jwks = (await c.get("/.well-known/jwks.json")).json()["keys"]
    (jwk,) = [k for k in jwks if k.get("kid") == sig.kid]
    signing.verify(call.body, signing.public_key_from_jwk(jwk))


async def subscribed(
    c: httpx.AsyncClient, p: dict[str, str], receiver: Receiver, *crits: dict[str, Any]
) -> dict[str, Any]:
    r = await post(c, p, SUBSCRIBE, subscribe_body(*crits))
    assert r.status_code == 200, r.text
    validate("Ack", r.json())
    assert r.json()["message"]["ack_status"] == "ACK"
    (call,) = await calls(receiver, "/p/ok/on-subscribe")
    validate("OnSubscribeEnvelope", call.body)
    await verified(c, call)
    assert call.body["message"]["correlation_id"] == r.json()["message"]["correlation_id"]
    return call.body


async def household(db: asyncpg.Connection, district: str, inside: bool) -> int:
    op = "=" if inside else "<>"
    ident: int = await db.fetchval(
        f"SELECT id FROM households WHERE district_code {op} $1 ORDER BY id LIMIT 1", district
    )
    return ident


def phone(hid: int, number: str) -> dict[str, Any]:
    return {
        "ref": uuid.uuid4().hex[:8],
        "kind": "phone_change",
        "household_id": hid,
        "phone": number,
    }


async def passed(db: asyncpg.Connection) -> None:
    """Wait until the notifier has matched every history row written so far."""
    last = await db.fetchval("SELECT max(id) FROM household_history")
    await until(
        lambda: _mark_at_least(db, last),
    )


async def _mark_at_least(db: asyncpg.Connection, last: int) -> bool:
    mark = await db.fetchval("SELECT last_history_id FROM dci_notifier")
    return bool(mark >= last)


async def test_subscribe_notify_in_order_then_unsubscribe(
    c: httpx.AsyncClient,
    url: str,
    db: asyncpg.Connection,
    receiver: Receiver,
    district: str,
    updater: dict[str, str],
) -> None:
    p = await subscriber(c, url, receiver, district)
    on_subscribe = await subscribed(c, p, receiver, criteria("UPDATE"))
    (answer,) = on_subscribe["message"]["subscribe_response"]
    assert answer["status"] == "succ", answer
    (sub,) = answer["subscriptions"]
    assert sub["status"] == "subscribe"
    assert sub["reg_event_type"] == "UPDATE"
    code = sub["code"]
    assert on_subscribe["header"]["receiver_id"] == "spmis.example.org"

    inside = await household(db, district, True)
    outside = await household(db, district, False)
    batch = await send(
        c,
        updater,
        [
            phone(inside, "0300 1111111"),
            phone(outside, "0300 2222222"),
            phone(inside, "0300 3333333"),
        ],
    )
    assert [r["outcome"] for r in batch["results"]] == ["applied"] * 3, batch
    notifies = await calls(receiver, "/p/ok/notify", 2)
    await passed(db)
    await asyncio.sleep(0.5)  # anything else would have arrived by now
    notifies = receiver.to("/p/ok/notify")
    assert len(notifies) == 2, [n.body for n in notifies]
    history = [
        r["id"]
        for r in await db.fetch(
            "SELECT id FROM household_history WHERE household_id = $1 AND change = "
            "'phone_change' ORDER BY id",
            inside,
        )
    ]
    seen = []
    for call in notifies:
        validate("NotifyEnvelope", call.body)
        await verified(c, call)
        assert call.body["header"]["action"] == "notify"
        assert call.body["header"]["meta"]["subscription_code"] == code
        (event,) = call.body["message"]["notify_event"]
        assert event["data"]["reg_event_type"] == "UPDATE"
        assert event["data"]["reg_record_type"] == "Group"
        group = event["data"]["reg_records"]
        assert group["@type"] == "Group"
        assert group["group_identifier"][0]["identifier_value"] == str(inside)
        assert group["address"]["sub_region_code"] == district
        seen.append(int(event["reference_id"].rsplit(".", 1)[1]))
    # One per change, in the order of the household's history.
    assert seen == history[-2:]
    audit = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE endpoint = '/dci/registry/notify' AND client_id = $1",
        p["client_id"],
    )
    assert audit >= 1

    r = await post(c, p, UNSUBSCRIBE, unsubscribe_body(code))
    assert r.status_code == 200, r.text
    validate("Ack", r.json())
    (call,) = await calls(receiver, "/p/ok/on-unsubscribe")
    validate("OnUnsubscribeEnvelope", call.body)
    await verified(c, call)
    message = call.body["message"]
    assert message["status"] == "succ"
    assert message["subscription_status"] == [{"code": code, "status": "unsubscribe"}]

    await send(c, updater, [phone(inside, "0300 4444444")])
    await passed(db)
    await asyncio.sleep(0.5)
    assert len(receiver.to("/p/ok/notify")) == 2


async def test_a_suspended_agreement_gets_nothing(
    c: httpx.AsyncClient,
    url: str,
    db: asyncpg.Connection,
    receiver: Receiver,
    district: str,
    updater: dict[str, str],
) -> None:
    p = await subscriber(c, url, receiver, district)
    await subscribed(c, p, receiver, criteria("UPDATE"))
    run_cli(["partners", "suspend", p["agreement_id"], "--reason", "spot check"], url)
    inside = await household(db, district, True)
    await send(c, updater, [phone(inside, "0300 5555555")])
    await passed(db)
    await asyncio.sleep(0.5)
    assert receiver.to("/p/ok/notify") == []


async def test_a_rescore_and_a_filter(
    c: httpx.AsyncClient,
    url: str,
    db: asyncpg.Connection,
    receiver: Receiver,
    district: str,
    updater: dict[str, str],
) -> None:
    # A filter on the household id: only that household's changes, as RESCORE or UPDATE.
    inside = await household(db, district, True)
    other = await db.fetchval(
        "SELECT id FROM households WHERE district_code = $1 AND id <> $2 ORDER BY id LIMIT 1",
        district,
        inside,
    )
    p = await subscriber(c, url, receiver, district)
    flt = {
        "type": "ns:org:QueryType:NoSql",
        "value": {
            "expression": {"collection": "Group", "query": {"household_id": {"$eq": inside}}}
        },
    }
    body = await subscribed(c, p, receiver, criteria("update", flt, filter_type="expression"))
    assert body["message"]["subscribe_response"][0]["status"] == "succ"
    await send(c, updater, [phone(other, "0300 6666666"), phone(inside, "0300 7777777")])
    (call,) = await calls(receiver, "/p/ok/notify")
    await passed(db)
    await asyncio.sleep(0.3)
    assert len(receiver.to("/p/ok/notify")) == 1
    group = call.body["message"]["notify_event"][0]["data"]["reg_records"]
    assert group["group_identifier"][0]["identifier_value"] == str(inside)


async def test_unsupported_filters_are_rejected_by_name(
    c: httpx.AsyncClient, url: str, db: asyncpg.Connection, receiver: Receiver, district: str
) -> None:
    p = await subscriber(c, url, receiver, district)
    bad_attribute = [
        {"expression1": {"attribute_name": "income", "operator": "lt", "attribute_value": 5}}
    ]
    bad_operator = {
        "type": "ns:org:QueryType:NoSql",
        "value": {
            "expression": {"collection": "Group", "query": {"poverty_score": {"$regex": "3.*"}}}
        },
    }
    body = await subscribed(
        c,
        p,
        receiver,
        criteria("UPDATE", bad_attribute),
        criteria("UPDATE", bad_operator, filter_type="expression"),
        criteria("MARRIAGE"),
        criteria("DEATH"),
    )
    answers = body["message"]["subscribe_response"]
    assert [a["status"] for a in answers] == ["rjct", "rjct", "rjct", "succ"]
    assert answers[0]["status_reason_code"] == "rjct.notify_details.invalid"
    assert "'income'" in answers[0]["status_reason_message"]
    assert answers[1]["status_reason_code"] == "rjct.notify_details.invalid"
    assert "'$regex'" in answers[1]["status_reason_message"]
    assert answers[2]["status_reason_code"] == "rjct.notify_types.invalid"
    assert "'MARRIAGE'" in answers[2]["status_reason_message"]
    stored = await db.fetch(
        "SELECT event_type FROM dci_subscriptions WHERE client_id = $1", p["client_id"]
    )
    assert [r["event_type"] for r in stored] == ["DEATH"]


async def test_a_frequency_schedule_is_refused_by_name(
    c: httpx.AsyncClient, url: str, db: asyncpg.Connection, receiver: Receiver, district: str
) -> None:
    """NSER notifies each change as it happens: a cron schedule it would not honour is
    refused, not kept and ignored."""
    p = await subscriber(c, url, receiver, district)
    schedule = {
        "start_time": "2026-12-13T00:00:00+05:00",
        "end_time": "2027-12-13T00:00:00+05:00",
        "frequency": "0 9 * * *",
    }
    body = await subscribed(
        c, p, receiver, criteria("UPDATE", frequency=schedule), criteria("DEATH")
    )
    answers = body["message"]["subscribe_response"]
    assert [a["status"] for a in answers] == ["rjct", "succ"]
    assert answers[0]["status_reason_code"] == "rjct.notify_details.invalid"
    assert "frequency.frequency" in answers[0]["status_reason_message"]
    stored = await db.fetch(
        "SELECT event_type, frequency FROM dci_subscriptions WHERE client_id = $1",
        p["client_id"],
    )
    assert [(r["event_type"], r["frequency"]) for r in stored] == [("DEATH", None)]


async def test_refusals(
    c: httpx.AsyncClient, url: str, db: asyncpg.Connection, receiver: Receiver, district: str
) -> None:
    p = await subscriber(c, url, receiver, district)
    # A sender_uri outside the registered base: nothing stored, nothing sent.
    body = subscribe_body(criteria(), sender_uri="http://127.0.0.1:1/elsewhere/on-subscribe")
    r = await post(c, p, SUBSCRIBE, body)
    assert r.status_code == 400, r.text
    validate("HttpErrorResponse", r.json())
    assert r.json()["errors"][0]["code"] == "err.sender_uri.invalid"
    # The standard's misspelt field is an unknown field.
    bad = unsubscribe_body("sub_x")
    bad["message"]["sunscription_codes"] = bad["message"].pop("subscription_codes")
    r = await post(c, p, UNSUBSCRIBE, bad)
    assert r.status_code == 400
    assert "sunscription_codes" in r.json()["errors"][0]["message"]
    # The wrong action, and no token.
    r = await post(c, p, SUBSCRIBE, unsubscribe_body("sub_x"))
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "err.request.bad"
    r = await c.post(SUBSCRIBE, json=subscribe_body(criteria()))
    assert r.status_code == 401
    assert (
        await db.fetchval(
            "SELECT count(*) FROM dci_subscriptions WHERE client_id = $1", p["client_id"]
        )
        == 0
    )
    # Another client's code: rjct, nothing changed.
    other = await subscriber(c, url, receiver, district)
    on_subscribe = await subscribed(c, other, receiver, criteria("BIRTH"))
    code = on_subscribe["message"]["subscribe_response"][0]["subscriptions"][0]["code"]
    r = await post(c, p, UNSUBSCRIBE, unsubscribe_body(code))
    assert r.status_code == 200
    (call,) = await calls(receiver, "/p/ok/on-unsubscribe")
    validate("OnUnsubscribeEnvelope", call.body)
    assert call.body["message"]["status"] == "rjct"
    assert call.body["message"]["status_reason_code"] == "rjct.subscription_code.invalid"
    assert (
        await db.fetchval("SELECT unsubscribed_at FROM dci_subscriptions WHERE code = $1", code)
        is None
    )


# -- txn/status of subscribe and unsubscribe transactions ----------------------------------

SYNC_STATUS = "/dci/registry/sync/txn/status"
ASYNC_STATUS = "/dci/registry/txn/status"


@pytest.fixture(scope="module")
async def txn_receiver() -> AsyncIterator[Receiver]:
    """One receiver for the txn/status tests, so they share two partners (each costs two
    CLI runs): callbacks are told apart by their correlation id."""
    async with serve_receiver() as r:
        yield r


@pytest.fixture(scope="module")
async def pair(
    c: httpx.AsyncClient, url: str, txn_receiver: Receiver, district: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Two partners registered at ``txn_receiver``: one subscribes, the other is another
    client."""
    return (
        await subscriber(c, url, txn_receiver, district),
        await subscriber(c, url, txn_receiver, district),
    )


async def answer_to(receiver: Receiver, path: str, correlation_id: str) -> Call:
    """The callback to ``path`` that carries ``correlation_id``."""

    def mine() -> list[Call]:
        return [
            call
            for call in receiver.to(path)
            if call.body.get("message", {}).get("correlation_id") == correlation_id
        ]

    await until(lambda: len(mine()) == 1)
    return mine()[0]


def status_body(txn_type: str, attribute_type: str, value: object, **head: Any) -> dict[str, Any]:
    body = {
        "header": header("txn-status", 1, **head),
        "message": {
            "transaction_id": uuid.uuid4().hex,
            "txnstatus_request": {
                "reference_id": "s-1",
                "txn_type": txn_type,
                "attribute_type": attribute_type,
                "attribute_value": value,
            },
        },
    }
    if txn_type != "subscibe":  # the standard's misspelling, which the schemas correct
        validate("TxnStatusEnvelope", body)
    return body


async def txn_status(
    c: httpx.AsyncClient, p: dict[str, str], txn_type: str, attribute_type: str, value: object
) -> Any:
    """The sync txn/status, its body checked against the schemas (the answer, or the error)."""
    r = await post(c, p, SYNC_STATUS, status_body(txn_type, attribute_type, value))
    validate("TxnOnStatusEnvelope" if r.status_code == 200 else "HttpErrorResponse", r.json())
    return r


def found(r: Any, txn_type: str) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["header"]["action"] == "txn-on-status"
    assert body["header"]["status"] == "succ"
    response = body["message"]["txnstatus_response"]
    assert response["txn_type"] == txn_type
    status: dict[str, Any] = response["txn_status"]
    return status


def not_found(r: Any) -> str:
    assert r.status_code == 404, r.text
    (error,) = r.json()["errors"]
    assert error["code"] == "err.request.not_found"
    message: str = error["message"]
    return message


async def test_txn_status_of_subscribe_and_unsubscribe_transactions(
    c: httpx.AsyncClient,
    db: asyncpg.Connection,
    txn_receiver: Receiver,
    pair: tuple[dict[str, str], dict[str, str]],
) -> None:
    p, _ = pair
    body = subscribe_body(criteria("UPDATE"), criteria("MARRIAGE"))
    transaction_id = body["message"]["transaction_id"]
    r = await post(c, p, SUBSCRIBE, body)
    assert r.status_code == 200, r.text
    validate("Ack", r.json())
    correlation_id = r.json()["message"]["correlation_id"]

    # Right after the ACK, by transaction id: each request's status, reason and code.
    status = found(
        await txn_status(c, p, "subscribe", "transaction_id", transaction_id), "subscribe"
    )
    assert status["transaction_id"] == transaction_id
    assert status["correlation_id"] == correlation_id
    taken, refused = status["subscribe_response"]
    assert (taken["reference_id"], taken["status"]) == ("r-0", "succ")
    (sub,) = taken["subscriptions"]
    code = sub["code"]
    stored = await db.fetchval(
        "SELECT event_type FROM dci_subscriptions WHERE client_id = $1 AND code = $2",
        p["client_id"],
        code,
    )
    assert (stored, sub["status"], sub["reg_event_type"]) == ("UPDATE", "subscribe", "UPDATE")
    assert "filter" not in sub  # kept without the filter (it may name a person)
    assert (refused["reference_id"], refused["status"]) == ("r-1", "rjct")
    assert refused["status_reason_code"] == "rjct.notify_types.invalid"
    assert "'MARRIAGE'" in refused["status_reason_message"]

    # The on-subscribe callback says the same (the filter apart).
    call = await answer_to(txn_receiver, "/p/ok/on-subscribe", correlation_id)
    sent = call.body["message"]["subscribe_response"]
    del sent[0]["subscriptions"][0]["filter"]
    assert sent == status["subscribe_response"]

    # By correlation id, and the standard's misspelling: the same answer.
    by_correlation = await txn_status(c, p, "subscribe", "correlation_id", correlation_id)
    assert found(by_correlation, "subscribe") == status
    assert found(await txn_status(c, p, "subscibe", "transaction_id", transaction_id), "subscribe")
    # By reference ids: only those asked for.
    by_refs = found(await txn_status(c, p, "subscribe", "reference_id_list", ["r-1"]), "subscribe")
    assert by_refs["subscribe_response"] == [refused]
    # Another kind under the same ids is not found.
    for kind, attribute, value in (
        ("search", "transaction_id", transaction_id),
        ("unsubscribe", "transaction_id", transaction_id),
        ("search", "correlation_id", correlation_id),
        ("unsubscribe", "correlation_id", correlation_id),
        ("receipt", "transaction_id", transaction_id),
    ):
        message = not_found(await txn_status(c, p, kind, attribute, value))
        assert f"no {kind} transaction of this client" in message

    # An unsubscribe, by its transaction id and its correlation id.
    unsubscribe = unsubscribe_body(code)
    r = await post(c, p, UNSUBSCRIBE, unsubscribe)
    assert r.status_code == 200, r.text
    ended_at = r.json()["message"]["correlation_id"]
    unsubscribe_id = unsubscribe["message"]["transaction_id"]
    ended = found(
        await txn_status(c, p, "unsubscribe", "transaction_id", unsubscribe_id), "unsubscribe"
    )
    assert (ended["transaction_id"], ended["correlation_id"]) == (unsubscribe_id, ended_at)
    assert ended["status"] == "succ"
    assert ended["subscription_status"] == [{"code": code, "status": "unsubscribe"}]
    by_correlation = await txn_status(c, p, "unsubscribe", "correlation_id", ended_at)
    assert found(by_correlation, "unsubscribe") == ended
    call = await answer_to(txn_receiver, "/p/ok/on-unsubscribe", ended_at)
    assert call.body["message"] == ended
    not_found(await txn_status(c, p, "subscribe", "transaction_id", unsubscribe_id))

    # A rejected unsubscribe (a code that is not the client's): its reason.
    wrong = unsubscribe_body("sub_not_mine")
    assert (await post(c, p, UNSUBSCRIBE, wrong)).status_code == 200
    rejected = found(
        await txn_status(c, p, "unsubscribe", "transaction_id", wrong["message"]["transaction_id"]),
        "unsubscribe",
    )
    assert rejected["status"] == "rjct"
    assert rejected["status_reason_code"] == "rjct.subscription_code.invalid"
    assert rejected["subscription_status"] == []

    # A subscribe message whose every request is rejected: each one's reason.
    schedule = {
        "start_time": "2026-12-13T00:00:00+05:00",
        "end_time": "2027-12-13T00:00:00+05:00",
        "frequency": "0 9 * * *",
    }
    refused_all = subscribe_body(criteria("UPDATE", frequency=schedule))
    assert (await post(c, p, SUBSCRIBE, refused_all)).status_code == 200
    status = found(
        await txn_status(
            c, p, "subscribe", "transaction_id", refused_all["message"]["transaction_id"]
        ),
        "subscribe",
    )
    (only,) = status["subscribe_response"]
    assert only["status"] == "rjct"
    assert only["status_reason_code"] == "rjct.notify_details.invalid"
    assert "frequency.frequency" in only["status_reason_message"]


async def test_another_clients_subscribe_transaction_is_not_found(
    c: httpx.AsyncClient, pair: tuple[dict[str, str], dict[str, str]]
) -> None:
    p, other = pair
    body = subscribe_body(criteria("DEATH"))
    r = await post(c, p, SUBSCRIBE, body)
    assert r.status_code == 200, r.text
    transaction_id = body["message"]["transaction_id"]
    correlation_id = r.json()["message"]["correlation_id"]
    found(await txn_status(c, p, "subscribe", "transaction_id", transaction_id), "subscribe")

    theirs = not_found(await txn_status(c, other, "subscribe", "transaction_id", transaction_id))
    unknown = not_found(await txn_status(c, other, "subscribe", "transaction_id", "no-such-txn"))
    assert theirs == unknown  # nothing tells one from the other
    theirs = not_found(await txn_status(c, other, "subscribe", "correlation_id", correlation_id))
    unknown = not_found(await txn_status(c, other, "subscribe", "correlation_id", "no-such-one"))
    assert theirs == unknown
    not_found(await txn_status(c, other, "subscribe", "reference_id_list", ["r-0"]))


async def test_async_txn_status_of_a_subscribe_answers_as_the_sync_one(
    c: httpx.AsyncClient, txn_receiver: Receiver, pair: tuple[dict[str, str], dict[str, str]]
) -> None:
    p, other = pair
    body = subscribe_body(criteria("BIRTH"))
    assert (await post(c, p, SUBSCRIBE, body)).status_code == 200
    transaction_id = body["message"]["transaction_id"]
    sync = found(await txn_status(c, p, "subscribe", "transaction_id", transaction_id), "subscribe")

    asked: dict[str, str] = {}
    for who, path, kind, value in (
        (p, "mine", "subscribe", transaction_id),
        (other, "theirs", "subscribe", transaction_id),
        (p, "none", "unsubscribe", "no-such-txn"),
    ):
        status = status_body(
            kind, "transaction_id", value, sender_uri=f"{txn_receiver.base}/p/ok/{path}"
        )
        r = await post(c, who, ASYNC_STATUS, status)
        assert r.status_code == 202, r.text
        validate("Ack", r.json())
        asked[path] = r.json()["message"]["correlation_id"]

    answers = {}
    for path, correlation_id in asked.items():
        call = await answer_to(txn_receiver, f"/p/ok/{path}", correlation_id)
        validate("TxnOnStatusEnvelope", call.body)
        await verified(c, call)
        assert call.body["header"]["action"] == "txn-on-status"
        assert call.body["message"]["correlation_id"] == correlation_id
        answers[path] = call.body

    mine = answers["mine"]
    assert mine["header"]["status"] == "succ"
    assert mine["message"]["txnstatus_response"] == {"txn_type": "subscribe", "txn_status": sync}
    theirs = answers["theirs"]
    assert theirs["header"]["status"] == "rjct"
    assert "no subscribe transaction" in theirs["header"]["status_reason_message"]
    assert theirs["message"]["txnstatus_response"] == {
        "txn_type": "subscribe",
        "txn_status": {
            "transaction_id": transaction_id,
            "correlation_id": "",
            "subscribe_response": [],
        },
    }
    none = answers["none"]["message"]["txnstatus_response"]
    assert none["txn_type"] == "unsubscribe"
    assert none["txn_status"]["status"] == "rjct"
    assert none["txn_status"]["subscription_status"] == []
