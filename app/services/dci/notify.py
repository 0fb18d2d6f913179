"""DCI ``notify``: registry changes sent to the subscriptions they match.

**What drives it.** The same history the as-of lists read: every applied change writes one
``household_history`` row per household it touches (app.services.registry.asof). The
notifier reads the rows past its high-water mark (``dci_notifier.last_history_id``) in id
order, maps each row's ``change`` to the DCI event types (:data:`KIND_EVENTS`; a row whose
``after`` carries a new PMT score, band or model is also a ``RESCORE``), matches it against
the active subscriptions of those types, enqueues a ``notify`` callback for every match
(ordering key: the household id, so one household's notifications arrive in the order of
its changes), writes the audit rows, and advances the mark, all in one transaction: a crash
before the commit leaves the rows to be read again (at least once), after it nothing is read
twice.

**Rows committed out of order.** History ids are taken when a row is written, not when its
transaction commits, so a row with a lower id can become visible after a higher one. The
notifier therefore never passes a missing id (a gap) unless it is final: a gap is final once
every transaction that was writing ``household_history`` when the ids up to it had been
taken (``pg_locks``, read before the rows) has ended, or at once when none was. A rolled
back change leaves a gap that is passed that way; a change still being written holds the
notifier back until it commits.

**Matching.** Each row is matched once: the active subscriptions are read by event type
(``ix_dci_subscriptions_active``), only those of the types the rows carry. Per subscription
the households its rows touch are read in one query, with the subscription's filter (the
search's query language) and its agreement's scope exactly as a DCI search reads them: the
agreement is loaded as a token would load it (a suspended, revoked or expired agreement, a
disabled client, an agreement without category iv: nothing), its geography bounds the
households, and the record is the search's Group record with the dimensions the agreement
lets the partner read. The record is the household as it stands when the row is matched
(at most a moment after the change). Cost per step: one read of the subscriptions of the
types present, one query per subscription with candidates; it grows with the rows times the
subscriptions of their types, never with the registry's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from app.auth.partner import Principal, load_principal
from app.auth.scopes import Scope
from app.db import server_settings
from app.errors import Forbidden, Unauthorized
from app.services.audit import trail as audit
from app.services.dci import callbacks, envelope, records
from app.services.dci import query as dci_query
from app.services.dci.search import shared_dimensions
from app.services.dci.subscriptions import filter_condition
from app.services.sharing.beneficiaries_sql import (
    Filters,
    Query,
    Restriction,
    household_document,
    household_where,
    member_count,
)
from app.settings import Settings

log = logging.getLogger("nser.dci")

ENDPOINT = "/dci/registry/notify"
BATCH = 500
# A history row's change -> the DCI event type it is (docs/api.md lists the mapping).
KIND_EVENTS = {
    "new_household": "REGISTER",
    "member_birth": "BIRTH",
    "member_death": "DEATH",
    "member_move_out": "MOVE",
    "member_move_in": "MOVE",
    "member_update": "UPDATE",
    "address_change": "UPDATE",
    "phone_change": "UPDATE",
    "household_survey": "UPDATE",
    "pmt_rescore": "RESCORE",
}
PMT_FIELDS = ("pmt_score", "poverty_band", "pmt_version")
_DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    OSError,
)


def events(change: str, after: dict[str, Any] | None) -> set[str]:
    """The DCI event types of one history row (an unknown change kind is an UPDATE)."""
    found = {KIND_EVENTS.get(change, "UPDATE")}
    if after and any(name in after for name in PMT_FIELDS):
        found.add("RESCORE")
    return found


# -- the high-water mark and its gaps -----------------------------------------------------

_WRITERS = """
SELECT pg_sequence_last_value(pg_get_serial_sequence('household_history', 'id')::regclass)
           AS taken,
       array(SELECT l.virtualtransaction FROM pg_locks l
              WHERE l.relation = 'household_history'::regclass AND l.granted
                AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid()) AS writers
"""
_STILL_WRITING = """
SELECT count(*) FROM pg_locks l
 WHERE l.relation = 'household_history'::regclass AND l.granted
   AND l.mode = 'RowExclusiveLock' AND l.virtualtransaction = ANY($1::text[])
"""


@dataclass
class Gaps:
    """Up to which history id a missing id is final (never to be committed). Kept in
    memory: a restarted notifier starts from 0 and learns it again (a wait, never a loss).
    """

    final: int = 0
    waiting: tuple[list[str], int] | None = None

    async def final_upto(self, conn: asyncpg.Connection) -> int:
        """Read before the rows: every id taken by now belongs to a transaction that has
        ended (its row visible, or rolled back) or to one of ``writers``, still writing."""
        row = await conn.fetchrow(_WRITERS)
        assert row is not None
        taken = int(row["taken"] or 0)
        writers = list(row["writers"])
        if self.waiting is not None:
            still = await conn.fetchval(_STILL_WRITING, self.waiting[0])
            if not still:
                self.final = max(self.final, self.waiting[1])
                self.waiting = None
        if not writers:
            self.final = max(self.final, taken)
            self.waiting = None
        elif self.waiting is None:
            self.waiting = (writers, taken)
        return self.final


def ready(rows: list[asyncpg.Record], mark: int, final: int) -> list[asyncpg.Record]:
    """The rows after ``mark`` that may be matched now: in id order, up to the first gap
    that is not final."""
    out = []
    expected = mark + 1
    for row in rows:
        if row["id"] != expected and row["id"] - 1 > final:
            break
        out.append(row)
        expected = row["id"] + 1
    return out


# -- matching ---------------------------------------------------------------------------


@dataclass
class Subscription:
    id: int
    code: str
    client_id: str
    agreement_id: uuid.UUID
    sender_id: str
    transaction_id: str
    event_type: str
    node: dci_query.Node
    locale: str | None
    starts_at: Any
    ends_at: Any
    base: str | None
    rows: list[asyncpg.Record] = field(default_factory=list)

    def covers(self, row: asyncpg.Record) -> bool:
        at = row["changed_at"]
        if self.starts_at is not None and at < self.starts_at:
            return False
        return self.ends_at is None or at < self.ends_at


async def _subscriptions(conn: asyncpg.Connection, types: Iterable[str]) -> list[Subscription]:
    found = await conn.fetch(
        """SELECT s.id, s.code, s.client_id, s.agreement_id, s.sender_id, s.transaction_id,
                  s.event_type, s.filter_type, s.filter, s.locale, s.starts_at, s.ends_at,
                  r.callback_base_url AS base
             FROM dci_subscriptions s
             LEFT JOIN dci_registrations r ON r.agreement_id = s.agreement_id
            WHERE s.unsubscribed_at IS NULL AND s.event_type = ANY($1::text[])
            ORDER BY s.id""",
        sorted(types),
    )
    out = []
    for r in found:
        try:
            node = filter_condition(r["filter_type"], orjson.loads(r["filter"]))
        except envelope.Rejected:  # checked when made; a later narrowing of the language
            log.warning("DCI subscription filter no longer valid", extra={"code": r["code"]})
            continue
        out.append(
            Subscription(
                r["id"],
                r["code"],
                r["client_id"],
                r["agreement_id"],
                r["sender_id"],
                r["transaction_id"],
                r["event_type"],
                node,
                r["locale"],
                r["starts_at"],
                r["ends_at"],
                r["base"],
            )
        )
    return out


async def principal(
    conn: asyncpg.Connection, client_id: str, agreement_id: uuid.UUID
) -> Principal | None:
    """The subscriber as a token of it would be loaded now; None when it may read nothing
    (a suspended, revoked or expired agreement, a disabled client, no category iv)."""
    claims = {
        "sub": client_id,
        "agreement_id": str(agreement_id),
        "scope": Scope.BENEFICIARIES_READ,
    }
    try:
        p = await load_principal(conn, claims)
    except (Forbidden, Unauthorized):
        return None
    if Scope.BENEFICIARIES_READ not in p.scopes or not p.categories & {"iv", "v"}:
        return None
    return p


async def _documents(
    conn: asyncpg.Connection, p: Principal, sub: Subscription, ids: list[int]
) -> tuple[dict[int, tuple[dict[str, Any], int]], list[str]]:
    """Household id -> (its beneficiary-list document, its members) for the households of
    ``ids`` the subscription's filter and agreement let through."""
    dims = shared_dimensions(p)
    f = Filters(dimensions=list(dims))
    node = sub.node
    f.restriction = Restriction(endpoint=ENDPOINT, where=lambda param: dci_query.where(node, param))
    q = Query()
    q.where.append(f"h.id = ANY({q.param(ids)}::bigint[])")
    where = household_where(q, f, p.geo_codes, None)
    rows = await conn.fetch(
        f"SELECT h.id, {household_document(f)}::text AS doc, {member_count(f)} AS n "
        f"FROM households h WHERE {where}",
        *q.params,
    )
    return {r["id"]: (orjson.loads(r["doc"]), int(r["n"])) for r in rows}, dims


def payload(
    sub: Subscription, row: asyncpg.Record, event: str, group: dict[str, Any]
) -> dict[str, Any]:
    """The ``notify`` envelope (without its signature) of one change for one subscription."""
    header = envelope.reply_header("notify", "succ", None, total=1, completed=1)
    header["receiver_id"] = sub.sender_id
    header["meta"] = {"subscription_code": sub.code}
    item: dict[str, Any] = {
        "reference_id": f"{sub.code}.{row['id']}",
        "timestamp": row["changed_at"].isoformat(timespec="milliseconds"),
        "data": {
            "version": envelope.VERSION,
            "reg_type": "ns:org:RegistryType:Social",
            "reg_event_type": event,
            "reg_record_type": "Group",
            "reg_records": group,
        },
    }
    if sub.locale:
        item["locale"] = sub.locale
    return {
        "header": header,
        "message": {"transaction_id": sub.transaction_id, "notify_event": [item]},
    }


async def match(conn: asyncpg.Connection, settings: Settings, rows: list[asyncpg.Record]) -> int:
    """Enqueue the notifications of ``rows`` (in the caller's transaction) and audit them;
    how many were enqueued."""
    kinds = {r["id"]: events(r["change"], _after(r)) for r in rows}
    types = set().union(*kinds.values()) if kinds else set()
    if not types:
        return 0
    subs = await _subscriptions(conn, types)
    people: dict[tuple[str, uuid.UUID], Principal | None] = {}
    matches: list[tuple[int, int, Subscription, asyncpg.Record, dict[str, Any]]] = []
    for sub in subs:
        sub.rows = [r for r in rows if sub.event_type in kinds[r["id"]] and sub.covers(r)]
        if not sub.rows or sub.base is None:
            continue
        key = (sub.client_id, sub.agreement_id)
        if key not in people:
            people[key] = await principal(conn, *key)
        p = people[key]
        if p is None:
            continue
        ids = sorted({r["household_id"] for r in sub.rows})
        docs, dims = await _documents(conn, p, sub, ids)
        sent = [r for r in sub.rows if r["household_id"] in docs]
        if not sent:
            continue
        for r in sent:
            matches.append((r["id"], sub.id, sub, r, docs[r["household_id"]][0]))
        await audit.append(
            conn,
            audit.AuditRecord.of(
                p,
                endpoint=ENDPOINT,
                filters={
                    "dci_subscription": sub.code,
                    "dci_event": sub.event_type,
                    "history_ids": [r["id"] for r in sent],
                },
                dimensions=list(dims),
                households=len({r["household_id"] for r in sent}),
                members=sum(docs[h][1] for h in {r["household_id"] for r in sent}),
            ),
        )
    matches.sort(key=lambda m: (m[0], m[1]))
    enqueued = 0
    for _, _, sub, row, doc in matches:
        assert sub.base is not None
        try:
            await callbacks.enqueue(
                conn,
                settings=settings,
                agreement_id=sub.agreement_id,
                url=sub.base + "notify",
                kind="notify",
                payload=payload(sub, row, sub.event_type, records.group(doc)),
                ordering_key=str(row["household_id"]),
            )
            enqueued += 1
        except callbacks.CallbackRefused as exc:
            log.warning("DCI notify not enqueued: %s", exc, extra={"code": sub.code})
    return enqueued


def _after(row: asyncpg.Record) -> dict[str, Any] | None:
    after = row["after"]
    if isinstance(after, str | bytes):
        loaded: dict[str, Any] = orjson.loads(after)
        return loaded
    if after is None:
        return None
    return dict(after)


@dataclass
class Step:
    rows: int
    enqueued: int
    mark: int | None


async def step(
    conn: asyncpg.Connection, settings: Settings, gaps: Gaps, *, batch: int = BATCH
) -> Step:
    """Match the history rows that are ready past the mark, enqueue their notifications and
    advance the mark, in one transaction. Another notifier holding the mark: nothing."""
    async with conn.transaction():
        mark = await conn.fetchval(
            "SELECT last_history_id FROM dci_notifier WHERE id = 1 FOR UPDATE SKIP LOCKED"
        )
        if mark is None:
            return Step(0, 0, None)
        final = await gaps.final_upto(conn)
        rows = await conn.fetch(
            """SELECT id, household_id, change, after, changed_at FROM household_history
                WHERE id > $1 ORDER BY id LIMIT $2""",
            mark,
            batch,
        )
        taken = ready(rows, int(mark), final)
        if not taken:
            return Step(0, 0, int(mark))
        enqueued = await match(conn, settings, taken)
        last = int(taken[-1]["id"])
        await conn.execute(
            "UPDATE dci_notifier SET last_history_id = $1, updated_at = now() WHERE id = 1",
            last,
        )
    return Step(len(taken), enqueued, last)


async def run_notifier(
    dsn: str,
    *,
    settings: Settings,
    host: str | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Match history against the subscriptions until ``stop`` is set, polling every
    NSER_DCI_NOTIFY_POLL_SECONDS (at once again after a full batch); survives database
    restarts. Several notifiers may run: one at a time holds the mark, the others wait."""
    stop = stop or asyncio.Event()
    gaps = Gaps()
    conn: asyncpg.Connection | None = None
    while not stop.is_set():
        full = False
        try:
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(
                    dsn, host=host, server_settings=server_settings("nser-dci-notifier")
                )
            started = time.monotonic()
            done = await step(conn, settings, gaps)
            full = done.rows >= BATCH
            if done.enqueued:
                log.info(
                    "DCI notifications enqueued",
                    extra={
                        "rows": done.rows,
                        "enqueued": done.enqueued,
                        "mark": done.mark,
                        "seconds": round(time.monotonic() - started, 3),
                    },
                )
        except _DB_ERRORS as exc:
            log.warning("database unavailable; retrying", extra={"error": str(exc)})
            conn = None
        except Exception:
            log.exception("DCI notifier error; retrying")
        if full:
            await asyncio.sleep(0)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.dci_notify_poll_seconds)
    if conn is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), timeout=5)


Runner = Callable[[str, str | None, asyncio.Event], Coroutine[Any, Any, None]]


def beside(deliver: Runner, settings: Settings) -> Runner:
    """The callbacks' delivery loop and, beside it, the notifier (the workers run both)."""

    async def both(dsn: str, host: str | None, stop: asyncio.Event) -> None:
        await asyncio.gather(
            deliver(dsn, host, stop),
            run_notifier(dsn, settings=settings, host=host, stop=stop),
        )

    return both
