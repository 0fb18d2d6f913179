"""The synchronous DCI search and the status of its transactions.

A search message holds up to :data:`MAX_BATCH` requests. Every one is read and checked
before any is run (a message with one bad request is refused whole, nothing read, nothing
answered); then each runs as one page of ``/v1/partner/beneficiaries`` would, through the
sharing package: the agreement's categories (iv or v), its geography (every household
outside it is out of every query), the dimensions it lets the partner read, suspension
(checked with the token), and one audit row per request, written before it is answered.

A page is bounded by its size: the households of the page are chosen by ids first (an
index-ordered scan with the condition, the offset and the limit; through the location's
``(code, id)`` index when the query pins one code, see ``query.order_by``), and only those
are built into documents. ``total_count`` counts the matches without building any; a page
that is not full (or the first, empty) holds the last match, and its offset and length are
the count (no second statement: a CNIC search is one indexed query and one audit append).

What each search did (not the records) is kept in ``dci_transactions`` for ``txn/status``,
beside what each subscribe and unsubscribe message did (app.services.dci.subscriptions
records those through :func:`record`); a status answers each kind in the shape of that
action's own answer (:func:`txn_status_body`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.errors import Forbidden, ValidationFailed
from app.replicas import Reads
from app.services.audit import trail as audit
from app.services.dci import envelope, records
from app.services.dci import query as dci_query
from app.services.dci.envelope import DciError, Header, Rejected
from app.services.sharing import beneficiaries as beneficiary_service
from app.services.sharing import rules as sharing
from app.services.sharing.beneficiaries_sql import (
    Filters,
    Query,
    Restriction,
    household_where,
)

ENDPOINT = "/dci/registry/sync/search"
# The route a search's audit rows name: the sync route's, or the asynchronous route's when
# app.services.dci.jobs runs an accepted search on the worker.
AUDIT_ENDPOINT: ContextVar[str] = ContextVar("dci_audit_endpoint", default=ENDPOINT)
MAX_BATCH = 10
LOCALE = re.compile(r"[a-z]{3}", re.ASCII)
ITEM_FIELDS = ("reference_id", "timestamp", "search_criteria", "locale")


@dataclass
class Item:
    """One request of a search message: its ids, and its criteria or why it was refused."""

    reference_id: str
    timestamp: str
    locale: str | None
    criteria: dci_query.Criteria | None = None
    rejection: Rejected | None = None


def _item(raw: object, i: int, seen: set[str]) -> Item:
    if not isinstance(raw, dict):
        return Item("", "", None, rejection=Rejected(dci_query.CRITERIA, f"[{i}] not an object"))
    ref = raw.get("reference_id")
    shown = ref[:99] if isinstance(ref, str) and not envelope.has_control(ref) else ""
    item = Item(shown, envelope.now(), None)
    try:
        envelope.check_fields(raw, ITEM_FIELDS, f"search_request[{i}]", Rejected)
        try:
            envelope.identifier(ref, "reference_id")
        except DciError:
            raise Rejected(
                "rjct.reference_id.invalid",
                f"search_request[{i}].reference_id must be 1-99 printable characters",
            ) from None
        if shown in seen:
            raise Rejected("rjct.reference_id.duplicate", f"reference_id {shown!r} appears twice")
        seen.add(shown)
        if envelope.parse_timestamp(raw.get("timestamp")) is None:
            raise Rejected(
                "rjct.timestamp.invalid",
                f"search_request[{i}].timestamp must be an ISO 8601 date-time with its offset",
            )
        locale = raw.get("locale")
        if locale is not None and (not isinstance(locale, str) or not LOCALE.fullmatch(locale)):
            raise Rejected(
                dci_query.CRITERIA, f"search_request[{i}].locale must be 3 lowercase letters"
            )
        item.locale = locale
        if "search_criteria" not in raw:
            raise Rejected(dci_query.CRITERIA, f"search_request[{i}].search_criteria is required")
        item.criteria = dci_query.criteria(raw["search_criteria"])
    except Rejected as rejected:
        item.rejection = rejected
    return item


def parse_message(message: Mapping[str, Any], header: Header) -> tuple[str, list[Item]]:
    """The transaction id and the requests of a search message."""
    if "transaction_id" not in message:
        raise envelope.bad("message.transaction_id is required")
    transaction_id = envelope.identifier(message["transaction_id"], "message.transaction_id")
    requests = message.get("search_request")
    if not isinstance(requests, list) or not requests:
        raise envelope.bad("message.search_request must be a non-empty list")
    if len(requests) > MAX_BATCH:
        raise envelope.bad(f"message.search_request holds at most {MAX_BATCH} requests")
    if header.total_count != len(requests):
        raise envelope.bad(
            f"header.total_count is {header.total_count} but the message holds "
            f"{len(requests)} requests"
        )
    seen: set[str] = set()
    return transaction_id, [_item(raw, i, seen) for i, raw in enumerate(requests)]


def shared_dimensions(p: Principal) -> list[str]:
    """The dimensions a DCI record carries: every one the agreement lets the partner read
    (category v), none beyond the list's base fields with category iv alone."""
    if "v" not in p.categories:
        return []
    readable = sharing.readable_dimensions(p.categories, p.dimensions)
    return [d for d in sharing.DIMENSIONS if d in readable]


async def authorize(reads: Reads, p: Principal, items: list[Item]) -> list[str]:
    """403 unless the agreement lets the partner read beneficiary lists; each request's
    geography checked as the list checks it (an unknown code rejects the request, a code
    outside the agreement's scope is 403). The dimensions records carry."""
    if Scope.BENEFICIARIES_READ not in p.scopes:
        raise DciError(403, envelope.FORBIDDEN, "the agreement does not grant beneficiaries:read")
    dims = shared_dimensions(p)
    try:
        await beneficiary_service.authorize(reads, p, Filters(dimensions=dims))
        for item in items:
            if item.criteria is None or not item.criteria.geography:
                continue
            try:
                geo = Filters(**item.criteria.geography)  # type: ignore[arg-type]
                await beneficiary_service.check_geography(reads, p, geo)
            except ValidationFailed as exc:
                item.rejection = Rejected(dci_query.FILTER, exc.detail)
    except Forbidden as exc:
        raise DciError(403, envelope.FORBIDDEN, exc.detail) from None
    return dims


def filters(dims: list[str], criteria: dci_query.Criteria) -> Filters:
    """The beneficiary list's filters of a request: the dimensions, and its condition."""
    f = Filters(dimensions=list(dims))
    condition = criteria.condition
    f.restriction = Restriction(
        endpoint=ENDPOINT,
        where=lambda param: dci_query.where(condition, param),
        audit=criteria.describe(),
    )
    return f


@dataclass(frozen=True)
class Statements:
    """A request's SQL: its page of records (``doc``, ``n`` members) and its count."""

    page: str
    page_params: list[object]
    count: str
    count_params: list[object]


def statements(p: Principal, f: Filters, criteria: dci_query.Criteria) -> Statements:
    """The page's households chosen by their ids first (condition, order, offset, limit)
    and only those built into records; the count of every match, none built."""
    order = dci_query.order_by(criteria.order, criteria.pinned)
    q = Query()
    where = household_where(q, f, p.geo_codes, None)
    limit_at = q.param(criteria.page.size)
    offset_at = q.param(criteria.page.offset)
    page_sql = (
        f"SELECT {records.group_sql(f)} AS doc, ms.n "
        f"FROM (SELECT h.* FROM households h WHERE {where} ORDER BY {order} "
        f"LIMIT {limit_at}::int OFFSET {offset_at}::int) h "
        f"CROSS JOIN {records.members_sql(f)} ORDER BY {order}"
    )
    c = Query()
    count_where = household_where(c, f, p.geo_codes, None)
    count_sql = f"SELECT count(*) FROM households h WHERE {count_where}"
    return Statements(page_sql, q.params, count_sql, c.params)


# Writes what a message did, given its last request's answer, in that request's audited
# transaction (``Reads.audited``'s ``also``): the audit row and the record, one commit.
Keep = Callable[[asyncpg.Connection, dict[str, Any]], Awaitable[object]]


async def run(
    reads: Reads,
    p: Principal,
    dims: list[str],
    item: Item,
    transaction_id: str,
    keep: Keep | None = None,
) -> dict[str, Any]:
    """One request's page of households as Group records, audited (and ``keep`` run with
    the answer in the audit row's transaction)."""
    criteria = item.criteria
    assert criteria is not None
    f = filters(dims, criteria)
    sql = statements(p, f, criteria)
    size, offset = criteria.page.size, criteria.page.offset

    async def read(conn: asyncpg.Connection) -> tuple[list[asyncpg.Record], int]:
        rows = await conn.fetch(sql.page, *sql.page_params)
        if len(rows) < size and (rows or not offset):
            # The page holds the last match (or there is none): the count is the page's.
            return rows, offset + len(rows)
        total = await conn.fetchval(sql.count, *sql.count_params)
        return rows, int(total)

    def record(answer: tuple[list[asyncpg.Record], int]) -> audit.AuditRecord:
        rows = answer[0]
        filters = {
            **f.as_audit(),
            "dci_transaction_id": transaction_id,
            "dci_reference_id": item.reference_id,
        }
        return audit.AuditRecord.of(
            p,
            endpoint=f"{AUDIT_ENDPOINT.get()} (page)",
            filters=filters,
            dimensions=list(dims),
            households=len(rows),
            members=sum(r["n"] for r in rows),
        )

    built: list[dict[str, Any]] = []

    def answer_of(answer: tuple[list[asyncpg.Record], int]) -> dict[str, Any]:
        if not built:
            built.append(_answer(item, criteria, *answer))
        return built[0]

    async def also(conn: asyncpg.Connection, answer: tuple[list[asyncpg.Record], int]) -> None:
        assert keep is not None
        await keep(conn, answer_of(answer))

    value = await reads.audited(read, record, also=also if keep is not None else None)
    return answer_of(value)


def _answer(
    item: Item, criteria: dci_query.Criteria, rows: list[asyncpg.Record], total: int
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "reference_id": item.reference_id,
        "timestamp": envelope.now(),
        "status": "succ",
        "data": {
            "version": envelope.VERSION,
            # PostgreSQL's JSON text, as it is: never parsed and dumped again.
            "reg_records": orjson.Fragment(
                b"[" + b",".join(r["doc"].encode() for r in rows) + b"]"
            ),
        },
        "pagination": {
            "page_size": criteria.page.size,
            "page_number": criteria.page.number,
            "total_count": total,
        },
    }
    if item.locale:
        answer["locale"] = item.locale
    return answer


def _rejected(item: Item, reason: Rejected | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "reference_id": item.reference_id,
        "timestamp": envelope.now(),
        "status": "rjct",
    }
    if reason is not None:
        out["status_reason_code"] = reason.code
        out["status_reason_message"] = reason.message
    else:
        out["status_reason_message"] = "not run: another request of the message was rejected"
    if item.locale:
        out["locale"] = item.locale
    return out


async def record(
    conn: asyncpg.Pool | asyncpg.Connection,
    p: Principal,
    txn_type: str,
    transaction_id: str,
    correlation_id: str,
    message_id: str,
    status: str,
    reference_ids: list[str],
    kept: list[dict[str, Any]],
) -> None:
    """Keep what a ``txn_type`` transaction (search, subscribe, unsubscribe) did, for
    ``txn/status``: its status, its requests' reference ids and what each came to (the
    caller passes no records nor filters). A message under a transaction id the client used
    before for the same kind replaces what was kept."""
    await conn.execute(
        """INSERT INTO dci_transactions (client_id, txn_type, transaction_id, agreement_id,
               correlation_id, status, message_id, reference_ids, requests)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::varchar[], $9::jsonb)
           ON CONFLICT (client_id, txn_type, transaction_id) DO UPDATE SET
               agreement_id = EXCLUDED.agreement_id, correlation_id = EXCLUDED.correlation_id,
               status = EXCLUDED.status, message_id = EXCLUDED.message_id,
               reference_ids = EXCLUDED.reference_ids, requests = EXCLUDED.requests,
               updated_at = now()""",
        p.client_id,
        txn_type,
        transaction_id,
        p.agreement_id,
        correlation_id,
        status,
        message_id,
        reference_ids,
        orjson.dumps(kept).decode(),
    )


async def record_transaction(
    pool: asyncpg.Pool | asyncpg.Connection,
    p: Principal,
    transaction_id: str,
    correlation_id: str,
    header: Header,
    status: str,
    answers: list[dict[str, Any]],
) -> None:
    """Keep what the search did (statuses, reasons, counts; never records)."""
    kept = [{k: v for k, v in a.items() if k != "data"} for a in answers]
    await record(
        pool,
        p,
        "search",
        transaction_id,
        correlation_id,
        header.message_id,
        status,
        [a["reference_id"] for a in answers],
        kept,
    )


@dataclass
class Reply:
    status_code: int
    body: dict[str, Any]


# -- the entry points the sync route and the asynchronous jobs share ---------------------

SEARCH_FIELDS = ("transaction_id", "search_request")


def parse_search(body: Mapping[str, Any]) -> tuple[Header, str, list[Item]]:
    """A search message's checked header, transaction id and requests (DciError when the
    message cannot be taken; a request NSER cannot run carries its ``rejection``)."""
    header, message = envelope.parse_envelope(body, "search", SEARCH_FIELDS)
    transaction_id, items = parse_message(message, header)
    return header, transaction_id, items


@dataclass
class Outcome:
    """What a search message came to: ``succ`` (every request answered) or ``rjct``."""

    status: str
    answers: list[dict[str, Any]]
    reason: str | None = None

    @property
    def completed(self) -> int:
        return len(self.answers) if self.status == "succ" else 0


async def answer_search(
    reads: Reads,
    p: Principal,
    transaction_id: str,
    items: list[Item],
    keep: Callable[[asyncpg.Connection | asyncpg.Pool, Outcome], Awaitable[object]] | None = None,
) -> Outcome:
    """Authorize, then run every request (or reject them all if one cannot run): what the
    sync search answers, and what an asynchronous search sends by callback. ``keep``
    records the outcome: in the last request's audited transaction when every request
    ran, else on the primary's pool."""
    dims = await authorize(reads, p, items)
    if any(item.rejection is not None for item in items):
        first = next(item.rejection for item in items if item.rejection is not None)
        answers = [_rejected(item, item.rejection) for item in items]
        outcome = Outcome("rjct", answers, f"rejected: {first.message}")
        if keep is not None:
            await keep(reads.primary, outcome)
        return outcome
    answers = [await run(reads, p, dims, item, transaction_id) for item in items[:-1]]

    async def last(conn: asyncpg.Connection, answer: dict[str, Any]) -> None:
        assert keep is not None
        await keep(conn, Outcome("succ", [*answers, answer]))

    answers.append(
        await run(reads, p, dims, items[-1], transaction_id, last if keep is not None else None)
    )
    return Outcome("succ", answers)


def refused(items: list[Item], message: str) -> Outcome:
    """Every request ``rjct`` for one reason that is the message's, not a request's (an
    agreement suspended since the message was accepted)."""
    answers: list[dict[str, Any]] = []
    for item in items:
        out = _rejected(item, None)
        out["status_reason_message"] = message[:999]
        answers.append(out)
    return Outcome("rjct", answers, message)


def on_search(
    header: Header, transaction_id: str, correlation_id: str, outcome: Outcome
) -> dict[str, Any]:
    """The ``on-search`` envelope (without a signature) of ``outcome``."""
    head = envelope.reply_header(
        "on-search",
        outcome.status,
        header,
        total=len(outcome.answers),
        completed=outcome.completed,
        reason_message=outcome.reason,
    )
    return {
        "header": head,
        "message": {
            "transaction_id": transaction_id,
            "correlation_id": correlation_id,
            "search_response": outcome.answers,
        },
    }


async def sync_search(reads: Reads, p: Principal, body: Mapping[str, Any]) -> Reply:
    header, transaction_id, items = parse_search(body)
    await envelope.verify_signature(reads.primary, p.agreement_id, body)
    correlation_id = envelope.new_id()

    async def keep(conn: asyncpg.Connection | asyncpg.Pool, outcome: Outcome) -> None:
        await record_transaction(
            conn, p, transaction_id, correlation_id, header, outcome.status, outcome.answers
        )

    outcome = await answer_search(reads, p, transaction_id, items, keep)
    reply = on_search(header, transaction_id, correlation_id, outcome)
    return Reply(200 if outcome.status == "succ" else 400, reply)


# -- txn/status --------------------------------------------------------------------------

TXN_FIELDS = ("reference_id", "txn_type", "attribute_type", "attribute_value", "locale")
# The kinds of transaction a status is asked for, as the client may write them, and the kind
# kept in dci_transactions. The standard spells it "subscibe" (both spellings are read) and
# has no "unsubscribe" (NSER's extension); "receipt" is read and never found.
STORED_TYPES = {
    "search": "search",
    "subscribe": "subscribe",
    "subscibe": "subscribe",
    "unsubscribe": "unsubscribe",
}
TXN_TYPES = ("search", "subscribe", "subscibe", "unsubscribe", "receipt")
# What holds each kind's answers in ``txn_status`` (the unsubscribe's has its fields there).
RESPONSE_FIELDS = {"search": "search_response", "subscribe": "subscribe_response"}
MAX_REFERENCES = 100


@dataclass(frozen=True)
class TxnQuery:
    """A checked txn-status message: what it asks for, by which key."""

    header: Header
    transaction_id: str
    txn_type: str
    kind: str
    key: str | None = None
    wanted: list[str] | None = None

    @property
    def answered_type(self) -> str:
        """The ``txn_type`` the answer names: the corrected spelling of ``subscibe``."""
        return STORED_TYPES.get(self.txn_type, self.txn_type)


def parse_txn_status(body: Mapping[str, Any]) -> TxnQuery:
    """A txn-status message checked (DciError when it cannot be taken)."""
    header, message = envelope.parse_envelope(
        body, "txn-status", ("transaction_id", "txnstatus_request")
    )
    if "transaction_id" not in message:
        raise envelope.bad("message.transaction_id is required")
    transaction_id = envelope.identifier(message["transaction_id"], "message.transaction_id")
    request = message.get("txnstatus_request")
    if not isinstance(request, dict):
        raise envelope.bad("message.txnstatus_request must be an object")
    envelope.check_fields(request, TXN_FIELDS, "txnstatus_request", DciError)
    for name in ("reference_id", "txn_type", "attribute_type", "attribute_value"):
        if name not in request:
            raise envelope.bad(f"txnstatus_request.{name} is required")
    envelope.identifier(request["reference_id"], "txnstatus_request.reference_id")
    locale = request.get("locale")
    if locale is not None and (not isinstance(locale, str) or not LOCALE.fullmatch(locale)):
        raise envelope.bad("txnstatus_request.locale must be 3 lowercase letters")
    txn_type = request["txn_type"]
    if txn_type not in TXN_TYPES:
        raise envelope.bad(f"txn_type must be one of {', '.join(TXN_TYPES)}")
    kind = request["attribute_type"]
    value = request["attribute_value"]
    if kind in ("transaction_id", "correlation_id"):
        key = envelope.identifier(value, f"attribute_value (a {kind})")
        return TxnQuery(header, transaction_id, txn_type, kind, key=key)
    if kind == "reference_id_list":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_REFERENCES:
            raise envelope.bad(
                f"attribute_value must be a list of 1-{MAX_REFERENCES} reference ids"
            )
        wanted = [envelope.identifier(v, "attribute_value[]") for v in value]
        return TxnQuery(header, transaction_id, txn_type, kind, wanted=wanted)
    raise envelope.bad("attribute_type must be transaction_id, reference_id_list or correlation_id")


def txn_status_body(
    txn_type: str,
    transaction_id: str,
    correlation_id: str,
    kept: list[dict[str, Any]],
) -> dict[str, Any]:
    """The ``txn_status`` of a ``txn_type`` transaction: the shape of the action's own answer
    (``on-search``: ``search_response``; ``on-subscribe``: ``subscribe_response``;
    ``on-unsubscribe``: its status, reason and ``subscription_status``) with what was kept.
    An unsubscribe ``kept`` empty (nothing found) is ``rjct`` with no codes."""
    body: dict[str, Any] = {"transaction_id": transaction_id, "correlation_id": correlation_id}
    if txn_type == "unsubscribe":
        if kept:
            body.update(kept[0])
        else:
            body.update(timestamp=envelope.now(), status="rjct", subscription_status=[])
        return body
    body[RESPONSE_FIELDS.get(txn_type, "search_response")] = kept
    return body


async def answer_txn_status(
    pool: asyncpg.Pool | asyncpg.Connection,
    p: Principal,
    q: TxnQuery,
    correlation_id: str | None = None,
) -> Reply:
    """The ``txn-on-status`` answer to ``q``; DciError 404 ``err.request.not_found`` when
    no transaction of the caller's of that kind matches (another client's alike)."""
    stored = STORED_TYPES.get(q.txn_type)
    args: list[object]
    if q.wanted is None:
        column = "transaction_id" if q.kind == "transaction_id" else "correlation_id"
        sql = (
            "SELECT * FROM dci_transactions "
            f"WHERE client_id = $1 AND txn_type = $2 AND {column} = $3"
        )
        args = [p.client_id, stored, q.key]
    else:
        sql = (
            "SELECT * FROM dci_transactions WHERE client_id = $1 AND txn_type = $2 "
            "AND reference_ids && $3::varchar[] ORDER BY updated_at DESC LIMIT 1"
        )
        args = [p.client_id, stored, q.wanted]
    row = await pool.fetchrow(sql, *args) if stored is not None else None
    if row is None:
        raise DciError(
            404,
            envelope.NOT_FOUND,
            f"no {q.answered_type} transaction of this client matches that {q.kind}",
        )
    answers: list[dict[str, Any]] = orjson.loads(row["requests"])
    if q.wanted is not None:
        answers = [a for a in answers if a.get("reference_id") in set(q.wanted)]
    head = envelope.reply_header("txn-on-status", "succ", q.header, total=1, completed=1)
    return Reply(
        200,
        {
            "header": head,
            "message": {
                "transaction_id": q.transaction_id,
                "correlation_id": correlation_id or envelope.new_id(),
                "txnstatus_response": {
                    "txn_type": row["txn_type"],
                    "txn_status": txn_status_body(
                        row["txn_type"], row["transaction_id"], row["correlation_id"], answers
                    ),
                },
            },
        },
    )


async def txn_status(pool: asyncpg.Pool, p: Principal, body: Mapping[str, Any]) -> Reply:
    q = parse_txn_status(body)
    await envelope.verify_signature(pool, p.agreement_id, body)
    return await answer_txn_status(pool, p, q)
