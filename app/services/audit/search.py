"""Searching the audit log: whose accesses, in a bounded time range, a page at a time.

A search names at least one of a partner (``organization_id``), an agreement
(``agreement_id``), a household (the ``household_id`` a staff read of a household records in
its ``filters``) or a staff member (``client_id``, the staff id), and a time range of at most
:data:`MAX_DAYS` days. Each of the four has an index whose columns end in ``(at, id)``
(``ix_audit_log_organization_at``, ``ix_audit_log_agreement_at``,
``ix_audit_log_household_at``, ``ix_audit_log_client_at``), so a page is one backward range
scan of one index from the cursor on: its cost is the page (and the rows the other named
keys filter out, within the range), whatever the size of the log. There is no search
without a key and no unbounded range: nothing here reads the whole log.

Pages run newest first, ordered by ``(at, id)``; the cursor is the last row's ``(at, id)``
(:class:`Cursor`, its text form ``<microseconds since 1970>.<id>``), so a page is as cheap
deep in the results as at their start, and rows appended meanwhile do not shift it.

Every search is itself audited (:data:`ENDPOINT`, the criteria and the cursor) before its
rows are handed back, in the same transaction.

Verification for a request (:func:`last_verification`, :func:`verify_recent`): the last
checkpoint ``nser audit verify`` recorded (its seal checked), and an incremental
verification from it, refused when more than :data:`VERIFY_MAX_ROWS` rows were added since
(the CLI verifies those; a full walk is never run for a page).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import orjson

from app.errors import Conflict, ValidationFailed
from app.services.audit import trail

MAX_DAYS = 31
PAGE = 50
VERIFY_MAX_ROWS = 200_000
ENDPOINT = "GET /staff/audit"
VERIFY_ENDPOINT = "POST /staff/audit/verify"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field}: {message}",
        errors=[
            {"loc": ["query", field], "field": field, "message": message, "type": "value_error"}
        ],
    )


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: its last row's time and id (the next page is older)."""

    at: datetime
    id: int

    def __str__(self) -> str:
        micros = (self.at - _EPOCH) // timedelta(microseconds=1)
        return f"{micros}.{self.id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        micros, dot, row = text.partition(".")
        if not dot or not micros.lstrip("-").isdigit() or not row.isdigit() or len(text) > 40:
            raise _invalid("after", "not a cursor of this search")
        try:
            at = _EPOCH + timedelta(microseconds=int(micros))
        except OverflowError:
            raise _invalid("after", "not a cursor of this search") from None
        return cls(at, int(row))


@dataclass(frozen=True)
class Query:
    """Rows of ``start``..``end`` (UTC days, inclusive) with every key given."""

    start: date
    end: date
    organization_id: uuid.UUID | None = None
    agreement_id: uuid.UUID | None = None
    household_id: uuid.UUID | None = None
    staff_id: str | None = None

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise _invalid("from", "must be on or before to")
        if (self.end - self.start).days + 1 > MAX_DAYS:
            raise _invalid("to", f"the range is at most {MAX_DAYS} days")
        if not self.keys():
            raise _invalid("who", "name a partner, an agreement, a household or a staff member")

    def keys(self) -> dict[str, str]:
        found = {
            "organization_id": self.organization_id,
            "agreement_id": self.agreement_id,
            "household_id": self.household_id,
            "staff_id": self.staff_id,
        }
        return {k: str(v) for k, v in found.items() if v is not None}

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time(), UTC)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time(), UTC)


@dataclass(frozen=True)
class Entry:
    id: int
    at: datetime
    actor_type: str
    client_id: str | None
    agreement_id: uuid.UUID | None
    organization_id: uuid.UUID | None
    endpoint: str
    filters: dict[str, Any]
    dimensions: list[str]
    households: int
    members: int
    request_id: str | None


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    next: Cursor | None  # None: the last page


def _where(q: Query, after: Cursor | None) -> tuple[str, list[Any]]:
    conditions = ["at >= $1", "at < $2"]
    args: list[Any] = [q.since, q.until]

    def add(sql: str, value: Any) -> None:
        args.append(value)
        conditions.append(sql.format(f"${len(args)}"))

    if q.organization_id is not None:
        add("organization_id = {}", q.organization_id)
    if q.agreement_id is not None:
        add("agreement_id = {}", q.agreement_id)
    if q.household_id is not None:
        add("(filters ->> 'household_id') = {}", str(q.household_id))
    if q.staff_id is not None:
        add("client_id = {}", q.staff_id)
    if after is not None:
        args.extend([after.at, after.id])
        conditions.append(f"(at, id) < (${len(args) - 1}, ${len(args)})")
    return " AND ".join(conditions), args


def sql_of(q: Query, after: Cursor | None, limit: int = PAGE) -> tuple[str, list[Any]]:
    """The page's statement and its arguments (the tests EXPLAIN it)."""
    where, args = _where(q, after)
    return (
        f"""SELECT id, at, actor_type, client_id, agreement_id, organization_id, endpoint,
                  filters::text AS filters, dimensions, households, members, request_id
             FROM audit_log WHERE {where}
            ORDER BY at DESC, id DESC LIMIT {int(limit) + 1}""",
        args,
    )


async def search(
    conn: asyncpg.Connection,
    caller: trail.Caller,
    q: Query,
    after: Cursor | None = None,
    *,
    limit: int = PAGE,
) -> Page:
    """One page of ``q``'s rows, newest first, after ``after``; the search audited first."""
    sql, args = sql_of(q, after, limit)
    async with conn.transaction():
        # Named as the search's criteria, not as the rows' own keys: a search for a
        # household is not itself a read of the household's records.
        named = {f"searched_{key}": value for key, value in q.keys().items()}
        filters: dict[str, Any] = {"from": q.start, "to": q.end, **named}
        if after is not None:
            filters["after"] = str(after)
        await trail.append_action(conn, caller, ENDPOINT, filters)
        rows = await conn.fetch(sql, *args)
    entries = [
        Entry(
            id=r["id"],
            at=r["at"],
            actor_type=r["actor_type"],
            client_id=r["client_id"],
            agreement_id=r["agreement_id"],
            organization_id=r["organization_id"],
            endpoint=r["endpoint"],
            filters=orjson.loads(r["filters"]),
            dimensions=list(r["dimensions"]),
            households=r["households"],
            members=r["members"],
            request_id=r["request_id"],
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return Page(entries, Cursor(entries[-1].at, entries[-1].id) if more else None)


@dataclass(frozen=True)
class Verification:
    """The last checkpoint and whether its seal holds; the rows appended after it."""

    checkpoint: trail.Checkpoint | None
    problem: str | None
    rows_since: int  # an upper bound: ids after the checkpoint's last row


async def last_verification(conn: asyncpg.Connection) -> Verification:
    """What the last ``nser audit verify`` recorded (two indexed reads, no walk)."""
    found = await trail.latest_checkpoint(conn)
    last_id: int | None = await conn.fetchval("SELECT max(id) FROM audit_log")
    if found is None:
        return Verification(None, None, last_id or 0)
    checkpoint, problem = found
    return Verification(checkpoint, problem, max((last_id or 0) - checkpoint.last_id, 0))


async def verify_recent(conn: asyncpg.Connection, caller: trail.Caller) -> trail.Verdict:
    """The CLI's incremental verification (``trail.verify``) from the last checkpoint, for
    a request: 409 when there is no checkpoint or more than VERIFY_MAX_ROWS rows follow it
    (run ``nser audit verify``). Audited, with its outcome."""
    state = await last_verification(conn)
    if state.checkpoint is None:
        raise Conflict(
            "the audit log has never been verified: run `nser audit verify` first",
            extra={"code": "no_checkpoint"},
        )
    if state.rows_since > VERIFY_MAX_ROWS:
        raise Conflict(
            f"{state.rows_since} rows were added since the last verification (more than "
            f"{VERIFY_MAX_ROWS}): run `nser audit verify`",
            extra={"code": "too_many_rows", "rows": state.rows_since},
        )
    verdict = await trail.verify(conn)
    await trail.append_action(
        conn,
        caller,
        VERIFY_ENDPOINT,
        {"ok": verdict.ok, "rows": verdict.rows, "checked": verdict.checked},
    )
    return verdict
