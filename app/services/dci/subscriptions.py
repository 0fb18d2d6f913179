"""DCI subscriptions: ``subscribe`` and ``unsubscribe`` (spdci Social Registry API v1.0.0).

A subscription belongs to the client (one agreement's credentials) that made it and covers
one event type (:data:`EVENTS`) and a filter in the search's query language
(app.services.dci.query: the same attributes, operators and refusals). Each message is
checked as the other DCI messages are (the envelope, the token, the signature when the
agreement registered a key), then answered at once with an acknowledgement (``ACK``); what
became of each request follows as an ``on-subscribe`` / ``on-unsubscribe`` callback,
enqueued in the same transaction as the change it reports (app.services.dci.callbacks).

- A request NSER cannot take (an unknown event type, an unsupported attribute, operator or
  record type, a ``frequency`` schedule (changes are notified as they happen, never
  batched), a bad reference id or timestamp, a location code outside the agreement) is
  ``rjct`` in the callback with the standard's reason code and a message naming what was
  refused; the message's other requests are taken.
- What each message did (each request's status, reason and subscription code; the codes an
  unsubscribe ended) is kept in ``dci_transactions`` in the same transaction as the change,
  so ``txn/status`` (``txn_type`` ``subscribe`` / ``unsubscribe``) answers it as soon as the
  message is acknowledged. Never the filters: they may name a person (a CNIC).
- The callbacks go to ``header.sender_uri`` when given (it must lie under the agreement's
  registered callback base: ``err.sender_uri.invalid`` otherwise), else to
  ``<base>on-subscribe`` / ``<base>on-unsubscribe``. Notifications go to ``<base>notify``.

The spdci file misspells two fields of the unsubscribe request (``timesstamp``,
``sunscription_codes``): only the corrected names (``timestamp``, ``subscription_codes``) are
read; the misspellings are unknown fields.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.errors import Forbidden, ValidationFailed
from app.services.dci import callbacks, envelope, registration, signing
from app.services.dci import query as dci_query
from app.services.dci import search as dci_search
from app.services.dci.envelope import DciError, Header, Rejected
from app.services.sharing import beneficiaries as beneficiary_service
from app.services.sharing.beneficiaries_sql import Filters
from app.settings import Settings

# The event types a subscription covers, with the other names clients use for them.
EVENTS = ("REGISTER", "UPDATE", "DEATH", "BIRTH", "MOVE", "RESCORE")
EVENT_ALIASES = {
    "registration": "REGISTER",
    "register": "REGISTER",
    "update": "UPDATE",
    "death": "DEATH",
    "birth": "BIRTH",
    "newhouseholdmember": "BIRTH",
    "move": "MOVE",
    "rescore": "RESCORE",
    "re-score": "RESCORE",
}
MAX_BATCH = 10
MAX_ACTIVE = 100
MAX_CODES = 100
SENDER_URI_INVALID = "err.sender_uri.invalid"
# The standard's reason codes (SubscribeStatusReasonCode, UnSubscribeStatusReasonCode).
NOTIFY_TYPES = "rjct.notify_types.invalid"
NOTIFY_DETAILS = "rjct.notify_details.invalid"
ALREADY = "rjct.event.already_subscribed"
CODE_INVALID = "rjct.subscription_code.invalid"
ITEM_FIELDS = ("reference_id", "timestamp", "subscribe_criteria", "locale")
CRITERIA_FIELDS = (
    "version",
    "reg_type",
    "reg_event_type",
    "frequency",
    "filter_type",
    "filter",
    "notify_record_type",
    "authorize",
)
FREQUENCY_FIELDS = ("start_time", "end_time", "frequency")


def event_type(value: object) -> str:
    """The canonical event type of a client's ``reg_event_type``; Rejected otherwise."""
    if isinstance(value, str):
        if value in EVENTS:
            return value
        found = EVENT_ALIASES.get(value.lower())
        if found is not None:
            return found
    shown = value if isinstance(value, str) else type(value).__name__
    raise Rejected(
        NOTIFY_TYPES,
        f"reg_event_type {str(shown)[:64]!r} is not supported (one of {', '.join(EVENTS)})",
    )


def _filter_type(value: object, given: object) -> str:
    if given is not None:
        if given not in dci_query.QUERY_TYPES:
            raise Rejected(
                NOTIFY_DETAILS,
                f"filter_type {str(given)[:32]!r} is not supported "
                "(idtype-value, expression, predicate)",
            )
        return str(given)
    if isinstance(value, list):
        return "predicate"
    if isinstance(value, dict) and value.get("type", dci_query.NOSQL) == dci_query.NOSQL:
        return "expression"
    return "idtype-value"


def filter_condition(filter_type: str, value: object) -> dci_query.Node:
    """The filter as the query language's condition; Rejected (``rjct.notify_details``)
    naming an unsupported attribute, operator or value."""
    try:
        return dci_query.QUERY_TYPES[filter_type](value)
    except Rejected as exc:
        raise Rejected(NOTIFY_DETAILS, exc.message) from None


@dataclass
class Item:
    """One request of a subscribe message: what it asks, or why it was refused."""

    reference_id: str
    locale: str | None = None
    event: str = ""
    filter_type: str = ""
    filter: Any = None
    node: dci_query.Node | None = None
    record_type: str = "Group"
    reg_type: str | None = None
    frequency: dict[str, Any] | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    geography: dict[str, list[str]] = field(default_factory=dict)
    rejection: Rejected | None = None
    code: str | None = None

    @property
    def filter_key(self) -> str:
        canonical = orjson.dumps([self.filter_type, self.filter], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()


def _frequency(item: Item, value: object) -> None:
    if not isinstance(value, dict):
        raise Rejected(NOTIFY_DETAILS, "frequency must be an object")
    envelope.check_fields(value, FREQUENCY_FIELDS, "frequency", DciError)
    for name in ("start_time", "end_time"):
        if name in value and envelope.parse_timestamp(value[name]) is None:
            raise Rejected(
                NOTIFY_DETAILS, f"frequency.{name} must be an ISO 8601 date-time with its offset"
            )
    if "frequency" in value:
        # NSER sends each change as it happens; it does not batch changes on a schedule,
        # so a subscription that asks for one is refused rather than silently not honoured.
        raise Rejected(
            NOTIFY_DETAILS,
            "frequency.frequency (a schedule) is not supported: NSER notifies each change as "
            "it happens; send frequency with start_time and end_time only, or no frequency",
        )
    item.starts_at = envelope.parse_timestamp(value.get("start_time"))
    item.ends_at = envelope.parse_timestamp(value.get("end_time"))
    if item.starts_at and item.ends_at and item.ends_at <= item.starts_at:
        raise Rejected(NOTIFY_DETAILS, "frequency.end_time must be after its start_time")
    item.frequency = dict(value)


def _criteria(item: Item, value: object, at: str) -> None:
    if not isinstance(value, dict):
        raise Rejected(NOTIFY_DETAILS, f"{at} must be an object")
    for name in value:
        if name not in CRITERIA_FIELDS:
            raise Rejected(NOTIFY_DETAILS, f"{at}: unknown field {str(name)[:32]!r}")
    if value.get("version", "1.0.0") != "1.0.0":
        raise Rejected(NOTIFY_DETAILS, f"{at}.version must be '1.0.0'")
    reg_type = value.get("reg_type")
    if reg_type is not None and reg_type not in dci_query.REG_TYPES:
        raise Rejected(
            NOTIFY_DETAILS,
            f"reg_type {str(reg_type)[:64]!r} is not this registry "
            f"(one of {', '.join(sorted(dci_query.REG_TYPES))})",
        )
    item.reg_type = reg_type
    for name in ("reg_event_type", "filter", "notify_record_type"):
        if name not in value:
            raise Rejected(NOTIFY_DETAILS, f"{at}.{name} is required")
    item.event = event_type(value["reg_event_type"])
    record_type = value["notify_record_type"]
    if record_type not in dci_query.ENTITIES:
        raise Rejected(
            NOTIFY_DETAILS,
            f"notify_record_type {str(record_type)[:64]!r} is not supported "
            "(NSER notifies households: Group)",
        )
    item.record_type = "Group"
    if "authorize" in value and not isinstance(value["authorize"], dict):
        raise Rejected(NOTIFY_DETAILS, f"{at}.authorize must be an object")
    if "frequency" in value:
        _frequency(item, value["frequency"])
    item.filter_type = _filter_type(value["filter"], value.get("filter_type"))
    item.filter = value["filter"]
    item.node = filter_condition(item.filter_type, item.filter)
    geography: dict[str, list[str]] = {}
    for t in dci_query.tests(item.node):
        if t.attribute.level is not None:
            codes = t.value if isinstance(t.value, list) else [t.value]
            geography.setdefault(t.attribute.level, []).extend(str(c) for c in codes)
    item.geography = {level: list(dict.fromkeys(c)) for level, c in geography.items()}


def _item(raw: object, i: int, seen: set[str]) -> Item:
    if not isinstance(raw, dict):
        return Item("", rejection=Rejected(NOTIFY_DETAILS, f"subscribe_request[{i}] not an object"))
    ref = raw.get("reference_id")
    shown = ref[:99] if isinstance(ref, str) and not envelope.has_control(ref) else ""
    item = Item(shown)
    at = f"subscribe_request[{i}]"
    try:
        for name in raw:
            if name not in ITEM_FIELDS:
                raise Rejected(NOTIFY_DETAILS, f"{at}: unknown field {str(name)[:32]!r}")
        try:
            envelope.identifier(ref, "reference_id")
        except DciError:
            raise Rejected(
                "rjct.reference_id.invalid", f"{at}.reference_id must be 1-99 printable characters"
            ) from None
        if shown in seen:
            raise Rejected("rjct.reference_id.duplicate", f"reference_id {shown!r} appears twice")
        seen.add(shown)
        if envelope.parse_timestamp(raw.get("timestamp")) is None:
            raise Rejected(
                "rjct.timestamp.invalid", f"{at}.timestamp must be an ISO 8601 date-time"
            )
        locale = raw.get("locale")
        if locale is not None and (not isinstance(locale, str) or not dci_query_locale(locale)):
            raise Rejected(NOTIFY_DETAILS, f"{at}.locale must be 3 lowercase letters")
        item.locale = locale
        if "subscribe_criteria" not in raw:
            raise Rejected(NOTIFY_DETAILS, f"{at}.subscribe_criteria is required")
        _criteria(item, raw["subscribe_criteria"], f"{at}.subscribe_criteria")
    except Rejected as rejected:
        item.rejection = rejected
    except DciError as exc:  # an unknown field of frequency
        item.rejection = Rejected(NOTIFY_DETAILS, exc.message)
    return item


def dci_query_locale(value: str) -> bool:
    return len(value) == 3 and value.isascii() and value.isalpha() and value.islower()


def parse_subscribe(message: Mapping[str, Any], header: Header) -> tuple[str, list[Item]]:
    """The transaction id and the requests of a subscribe message (400 for the message's
    own faults; each request's faults kept as its rejection)."""
    if "transaction_id" not in message:
        raise envelope.bad("message.transaction_id is required")
    transaction_id = envelope.identifier(message["transaction_id"], "message.transaction_id")
    requests = message.get("subscribe_request")
    if not isinstance(requests, list) or not requests:
        raise envelope.bad("message.subscribe_request must be a non-empty list")
    if len(requests) > MAX_BATCH:
        raise envelope.bad(f"message.subscribe_request holds at most {MAX_BATCH} requests")
    if header.total_count != len(requests):
        raise envelope.bad(
            f"header.total_count is {header.total_count} but the message holds "
            f"{len(requests)} requests"
        )
    seen: set[str] = set()
    return transaction_id, [_item(raw, i, seen) for i, raw in enumerate(requests)]


async def check_message(conn: asyncpg.Connection, p: Principal, body: Mapping[str, Any]) -> None:
    """What every subscription message must pass before anything is read: the agreement lets
    the partner read beneficiary lists, has a DCI registration (callbacks need one), and the
    signature holds when it registered a key."""
    if Scope.BENEFICIARIES_READ not in p.scopes:
        raise DciError(403, envelope.FORBIDDEN, "the agreement does not grant beneficiaries:read")
    assert p.agreement_id is not None
    found = await registration.get(conn, p.agreement_id)
    if found is None:
        raise DciError(
            403,
            envelope.FORBIDDEN,
            "the agreement has no DCI registration: subscriptions need a callback base URL",
        )
    try:
        await registration.verify_message(conn, p.agreement_id, dict(body))
    except signing.SignatureError as exc:
        raise DciError(401, exc.code, str(exc) or "the signature does not hold") from None


def callback_url(base: str, header: Mapping[str, Any], kind: str) -> str:
    uri = header.get("sender_uri")
    return uri if isinstance(uri, str) and uri else base + kind


async def _scope(conn: asyncpg.Connection, p: Principal, item: Item) -> None:
    if not item.geography or item.rejection is not None:
        return
    try:
        geo = Filters(**item.geography)  # type: ignore[arg-type]
        await beneficiary_service.check_geography(conn, p, geo)
    except (ValidationFailed, Forbidden) as exc:
        item.rejection = Rejected(NOTIFY_DETAILS, exc.detail)


def new_code() -> str:
    return "sub_" + secrets.token_hex(12)


@dataclass
class Ack:
    correlation_id: str

    def body(self) -> dict[str, Any]:
        return {
            "message": {
                "ack_status": "ACK",
                "timestamp": envelope.now(),
                "correlation_id": self.correlation_id,
            }
        }


def _subscription(item: Item) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": envelope.VERSION,
        "code": item.code,
        "status": "subscribe",
        "timestamp": envelope.now(),
        "reg_type": item.reg_type or "ns:org:RegistryType:Social",
        "reg_event_type": item.event,
        "filter_type": item.filter_type,
        "filter": item.filter,
        "notify_record_type": item.record_type,
    }
    if item.frequency is not None:
        out["frequency"] = item.frequency
    if item.locale:
        out["locale"] = item.locale
    return out


async def subscribe(
    pool: asyncpg.Pool, settings: Settings, p: Principal, body: Mapping[str, Any]
) -> Ack:
    """Store the message's valid requests as subscriptions and enqueue ``on-subscribe``,
    in one transaction; the acknowledgement."""
    header, message = envelope.parse_envelope(
        body, "subscribe", ("transaction_id", "subscribe_request")
    )
    transaction_id, items = parse_subscribe(message, header)
    correlation_id = envelope.new_id()
    assert p.agreement_id is not None
    async with pool.acquire() as conn:
        await check_message(conn, p, body)
        for item in items:
            await _scope(conn, p, item)
        async with conn.transaction():
            # One client's subscribe messages one at a time: the bound on active ones holds.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                f"dci-subscribe:{p.client_id}",
            )
            active = await conn.fetchval(
                "SELECT count(*) FROM dci_subscriptions "
                "WHERE client_id = $1 AND unsubscribed_at IS NULL",
                p.client_id,
            )
            answers = []
            for item in items:
                if item.rejection is None:
                    await _insert(conn, p, header, transaction_id, item, active)
                    if item.rejection is None:
                        active += 1
                answers.append(_answer(item))
            taken = sum(1 for item in items if item.rejection is None)
            status = "rjct" if taken == 0 else "succ"
            await dci_search.record(
                conn,
                p,
                "subscribe",
                transaction_id,
                correlation_id,
                header.message_id,
                status,
                [item.reference_id for item in items],
                [_kept(answer) for answer in answers],
            )
            head = envelope.reply_header(
                "on-subscribe", status, header, total=len(items), completed=len(items)
            )
            payload = {
                "header": head,
                "message": {
                    "transaction_id": transaction_id,
                    "correlation_id": correlation_id,
                    "subscribe_response": answers,
                },
            }
            base = await _base(conn, p)
            await _enqueue(
                conn,
                settings,
                p,
                callback_url(base, header_of(body), "on-subscribe"),
                "on-subscribe",
                payload,
            )
    return Ack(correlation_id)


def header_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    header = body.get("header")
    return header if isinstance(header, dict) else {}


async def _base(conn: asyncpg.Connection, p: Principal) -> str:
    base: str | None = await conn.fetchval(
        "SELECT callback_base_url FROM dci_registrations WHERE agreement_id = $1", p.agreement_id
    )
    if base is None:
        raise DciError(403, envelope.FORBIDDEN, "the agreement has no DCI registration")
    return base


async def _enqueue(
    conn: asyncpg.Connection,
    settings: Settings,
    p: Principal,
    url: str,
    kind: str,
    payload: dict[str, Any],
) -> None:
    assert p.agreement_id is not None
    try:
        await callbacks.enqueue(
            conn,
            settings=settings,
            agreement_id=p.agreement_id,
            url=url,
            kind=kind,
            payload=payload,
        )
    except callbacks.CallbackRefused as exc:
        raise DciError(
            400, SENDER_URI_INVALID, f"header.sender_uri cannot be answered: {exc}"
        ) from None


async def _insert(
    conn: asyncpg.Connection,
    p: Principal,
    header: Header,
    transaction_id: str,
    item: Item,
    active: int,
) -> None:
    if active >= MAX_ACTIVE:
        item.rejection = Rejected(
            NOTIFY_DETAILS,
            f"a client may hold at most {MAX_ACTIVE} active subscriptions; unsubscribe some",
        )
        return
    item.code = new_code()
    inserted = await conn.fetchval(
        """INSERT INTO dci_subscriptions (code, client_id, agreement_id, sender_id,
               transaction_id, reference_id, event_type, filter_type, filter, filter_key,
               notify_record_type, locale, frequency, starts_at, ends_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13::jsonb,
                   $14, $15)
           ON CONFLICT (client_id, event_type, filter_key) WHERE unsubscribed_at IS NULL
           DO NOTHING RETURNING id""",
        item.code,
        p.client_id,
        p.agreement_id,
        header.sender_id,
        transaction_id,
        item.reference_id,
        item.event,
        item.filter_type,
        orjson.dumps(item.filter).decode(),
        item.filter_key,
        item.record_type,
        item.locale,
        orjson.dumps(item.frequency).decode() if item.frequency is not None else None,
        item.starts_at,
        item.ends_at,
    )
    if inserted is None:
        item.code = None
        item.rejection = Rejected(
            ALREADY,
            f"an active subscription of this client already covers {item.event} with this filter",
        )


def _kept(answer: dict[str, Any]) -> dict[str, Any]:
    """A request's answer as ``txn/status`` keeps it: without the subscription's filter."""
    kept = dict(answer)
    if "subscriptions" in kept:
        kept["subscriptions"] = [
            {k: v for k, v in sub.items() if k != "filter"} for sub in kept["subscriptions"]
        ]
    return kept


def _answer(item: Item) -> dict[str, Any]:
    out: dict[str, Any] = {
        "reference_id": item.reference_id,
        "timestamp": envelope.now(),
        "status": "succ" if item.rejection is None else "rjct",
    }
    if item.rejection is not None:
        out["status_reason_code"] = item.rejection.code
        out["status_reason_message"] = item.rejection.message
    else:
        out["subscriptions"] = [_subscription(item)]
    if item.locale:
        out["locale"] = item.locale
    return out


# -- unsubscribe -------------------------------------------------------------------------

UNSUBSCRIBE_FIELDS = ("transaction_id", "timestamp", "subscription_codes")


async def unsubscribe(
    pool: asyncpg.Pool, settings: Settings, p: Principal, body: Mapping[str, Any]
) -> Ack:
    """End the caller's subscriptions named by code and enqueue ``on-unsubscribe``, in one
    transaction. A code that is not one of the caller's (another client's alike) makes the
    whole request ``rjct`` and changes nothing."""
    header, message = envelope.parse_envelope(body, "unsubscribe", UNSUBSCRIBE_FIELDS)
    for name in UNSUBSCRIBE_FIELDS:
        if name not in message:
            raise envelope.bad(f"message.{name} is required")
    transaction_id = envelope.identifier(message["transaction_id"], "message.transaction_id")
    if envelope.parse_timestamp(message["timestamp"]) is None:
        raise envelope.bad("message.timestamp must be an ISO 8601 date-time with its offset")
    codes = message["subscription_codes"]
    if not isinstance(codes, list) or not 1 <= len(codes) <= MAX_CODES:
        raise envelope.bad(f"message.subscription_codes must be a list of 1-{MAX_CODES} codes")
    wanted = list(dict.fromkeys(envelope.identifier(c, "subscription_codes[]") for c in codes))
    if header.total_count not in (1, len(wanted), len(codes)):
        raise envelope.bad(f"header.total_count is {header.total_count}: 1, or the number of codes")
    correlation_id = envelope.new_id()
    async with pool.acquire() as conn:
        await check_message(conn, p, body)
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT code FROM dci_subscriptions WHERE client_id = $1 AND code = ANY($2) "
                "FOR UPDATE",
                p.client_id,
                wanted,
            )
            mine = {r["code"] for r in rows}
            unknown = [c for c in wanted if c not in mine]
            out: dict[str, Any] = {
                "transaction_id": transaction_id,
                "correlation_id": correlation_id,
                "timestamp": envelope.now(),
            }
            if unknown:
                out["status"] = "rjct"
                out["status_reason_code"] = CODE_INVALID
                out["status_reason_message"] = (
                    f"subscription code {unknown[0]!r} is not one of this client's; "
                    "nothing was unsubscribed"
                )[:999]
                out["subscription_status"] = []
            else:
                await conn.execute(
                    "UPDATE dci_subscriptions SET unsubscribed_at = now() "
                    "WHERE client_id = $1 AND code = ANY($2) AND unsubscribed_at IS NULL",
                    p.client_id,
                    wanted,
                )
                out["status"] = "succ"
                out["subscription_status"] = [{"code": c, "status": "unsubscribe"} for c in wanted]
            await dci_search.record(
                conn,
                p,
                "unsubscribe",
                transaction_id,
                correlation_id,
                header.message_id,
                out["status"],
                [],
                [{k: v for k, v in out.items() if k not in ("transaction_id", "correlation_id")}],
            )
            head = envelope.reply_header(
                "on-unsubscribe", out["status"], header, total=1, completed=1
            )
            base = await _base(conn, p)
            await _enqueue(
                conn,
                settings,
                p,
                callback_url(base, header_of(body), "on-unsubscribe"),
                "on-unsubscribe",
                {"header": head, "message": out},
            )
    return Ack(correlation_id)


__all__ = ["EVENTS", "Ack", "event_type", "subscribe", "unsubscribe"]
