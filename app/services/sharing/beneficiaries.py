"""Beneficiary lists (§4.2.4 iv, v): authorize, page by cursor, or stream the whole result.

Streams own their transaction: a REPEATABLE READ snapshot on one pooled connection, counted
and audited before the first byte, then read through a server-side cursor so memory stays
constant whatever the size. PostgreSQL builds each household's JSON document itself.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from app.auth.partner import Principal
from app.errors import Forbidden, ValidationFailed
from app.replicas import POSITION_SQL, Reads
from app.services.audit import trail as audit
from app.services.registry import asof as registry_asof
from app.services.sharing import asof
from app.services.sharing import rules as sharing
from app.services.sharing.beneficiaries_sql import (
    GEO_LEVELS,
    Filters,
    Query,
    household_document,
    household_where,
    member_count,
)

ENDPOINT = "/v1/partner/beneficiaries"
PREFETCH = 2000


def encode_cursor(last_id: int, read_after: int | None = None) -> str:
    """The next page's cursor: the last household id; with read replicas also the WAL
    position the page was read at (``h2``), which the next page must see."""
    raw = f"h1:{last_id}" if read_after is None else f"h2:{last_id}:{read_after}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[int, int | None]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        parts = raw.split(":")
        fields = {"h1": 2, "h2": 3}.get(parts[0])
        if fields is None or len(parts) != fields or not all(p.isdigit() for p in parts[1:]):
            raise ValueError(raw)
        read_after = int(parts[2]) if fields == 3 else None
        if read_after is not None and read_after >= 1 << 63:
            raise ValueError(raw)
        return int(parts[1]), read_after
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationFailed("invalid cursor") from exc


def decode_cursor(cursor: str | None) -> int | None:
    """The last household id of a cursor of today's list."""
    return _decode(cursor)[0] if cursor else None


def cursor_read_after(cursor: str | None) -> int | None:
    """The WAL position a cursor of today's list must be continued at (None: none named)."""
    return _decode(cursor)[1] if cursor else None


async def check_geography(
    conn: asyncpg.Pool | asyncpg.Connection | Reads, p: Principal, f: Filters
) -> None:
    """422 for unknown codes or a code at the wrong level; 403 for one outside the scope."""
    requested = {code: level for level, codes in f.geo().items() for code in codes}
    if not requested:
        return
    rows = await conn.fetch(
        """WITH RECURSIVE up AS (
               SELECT code AS origin, code, parent_code, level FROM geo_units
                WHERE code = ANY($1::text[])
               UNION ALL
               SELECT up.origin, g.code, g.parent_code, g.level
                 FROM geo_units g JOIN up ON g.code = up.parent_code)
           SELECT origin, array_agg(code) AS lineage,
                  max(level) FILTER (WHERE code = origin) AS level
             FROM up GROUP BY origin""",
        list(requested),
    )
    found = {row["origin"]: row for row in rows}
    scope = set(p.geo_codes)
    for code, level in requested.items():
        row = found.get(code)
        if row is None or row["level"] != level:
            raise ValidationFailed(f"{level} {code!r} is not a known {level} code")
        if scope and not scope & set(row["lineage"]):
            raise Forbidden(
                f"{level} {code} is outside the agreement's geographic scope "
                f"({', '.join(sorted(scope))})"
            )


async def authorize(pool: asyncpg.Pool | Reads, p: Principal, f: Filters) -> None:
    if not p.categories & {"iv", "v"}:
        raise Forbidden("the agreement does not include beneficiary data (category iv or v)")
    unknown = [d for d in f.dimensions if d not in sharing.DIMENSIONS]
    if unknown:
        raise ValidationFailed(f"unknown dimension {unknown[0]!r}")
    if f.dimensions and "v" not in p.categories:
        raise Forbidden("the agreement lacks category v (subsets with selected dimensions)")
    denied = sharing.denied_dimensions(f.dimensions, p.dimensions)
    if denied:
        raise Forbidden(f"dimension not granted by the agreement: {', '.join(denied)}")
    await check_geography(pool, p, f)


def _record(
    p: Principal, f: Filters, households: int, members: int, mode: str
) -> audit.AuditRecord:
    endpoint = f.restriction.endpoint if f.restriction is not None else ENDPOINT
    return audit.AuditRecord.of(
        p,
        endpoint=f"{endpoint} ({mode})",
        filters=f.as_audit(),
        dimensions=list(f.dimensions),
        households=households,
        members=members,
    )


async def page(reads: Reads, p: Principal, f: Filters, limit: int, cursor: str | None) -> bytes:
    """One JSON page ``{"items": [...], "next_cursor": ...}``, audited (in its transaction
    on the primary; after it, on the primary, when a replica read it).

    With read replicas the page is read where the cursor's WAL position (or the as-of
    list's, ``f.read_after``) is replayed, and the next cursor carries the position this
    page was read at: a list never continues on an older state than its previous page.
    """
    q = Query()
    if f.as_of:
        after = asof.cursor_position(cursor)
        read_after = f.read_after
    else:
        after = decode_cursor(cursor)
        read_after = cursor_read_after(cursor)
    where = household_where(q, f, p.geo_codes, after)
    select = f"SELECT h.id, {household_document(f)}::text AS doc, {member_count(f)} AS n "
    n = f"{q.param(limit + 1)}::int"
    if f.as_of is None:
        sql = f"{select} FROM households h WHERE {where} ORDER BY h.id LIMIT {n}"
    else:
        # The condition and the limit go into the rebuild: it walks ids from the cursor.
        sql = registry_asof.rewrite(
            f"{select} FROM households h ORDER BY h.id LIMIT {n}",
            q.param,
            f.as_of,
            where=where,
            limit=n,
        )

    async def read(conn: asyncpg.Connection) -> tuple[list[asyncpg.Record], int | None]:
        rows = await conn.fetch(sql, *q.params)
        position = await conn.fetchval(POSITION_SQL) if reads.configured else None
        return rows, position

    def record(answer: tuple[list[asyncpg.Record], int | None]) -> audit.AuditRecord:
        rows = answer[0][:limit]
        return _record(p, f, len(rows), sum(r["n"] for r in rows), "page")

    found, position = await reads.audited(read, record, after=read_after)
    more = len(found) > limit
    rows = found[:limit]
    if position is not None:
        position = max(position, read_after or 0)
    next_cursor = None
    if more and rows:
        last = rows[-1]["id"]
        if f.as_of:
            next_cursor = asof.encode_cursor(last, f.as_of, position)
        else:
            next_cursor = encode_cursor(last, position)
    items = b",".join(row["doc"].encode() for row in rows)
    tail = b""
    if f.as_of is not None:
        tail = b',"as_of":' + orjson.dumps(f.as_of) + b',"snapshot":' + orjson.dumps(f.snapshot)
    return b'{"items":[' + items + b'],"next_cursor":' + orjson.dumps(next_cursor) + tail + b"}"


def refuse_over(count: int, limit: int, unit: str, setting: str) -> None:
    """422 when a streamed answer's scope holds more than ``limit`` ``unit`` (before its
    audit row and its first byte): a national export in one request is several requests
    by geography, or the JSON list's pages (docs/operations.md, "Limits and timeouts")."""
    if count > limit:
        raise ValidationFailed(
            f"the filters select {count} {unit}, over the {limit} one streamed answer may "
            f"hold ({setting}): narrow the geography or the filters, or page through the "
            "JSON list",
            extra={"selected": count, "limit": limit},
        )


async def stream_documents(
    reads: Reads, p: Principal, f: Filters, mode: str, max_households: int
) -> AsyncIterator[str]:
    """Every matching household's JSON text, in id order, from one snapshot (on a read
    replica when the service has one, where ``f.read_after`` is replayed).

    The first ``__anext__`` opens the snapshot, counts and writes the audit row, and yields
    an empty string; the caller awaits it before the response starts, so the audit row is
    committed before the first byte and errors still become proper HTTP answers.
    """
    q = Query()
    where = household_where(q, f, p.geo_codes, None)

    t = q.param(f.as_of) if f.as_of is not None else ""

    def at(sql: str) -> str:  # an as-of list reads the registry rebuilt at its instant
        return sql if f.as_of is None else registry_asof.rewrite(sql, lambda _: t, f.as_of)

    async with reads.acquire(after=f.read_after) as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            counts = await conn.fetchrow(
                at(
                    f"SELECT count(*) AS households, coalesce(sum({member_count(f)}), 0)::bigint "
                    f"AS members FROM households h WHERE {where}"
                ),
                *q.params,
            )
            assert counts is not None
            refuse_over(
                counts["households"], max_households, "households", "NSER_EXPORT_MAX_HOUSEHOLDS"
            )
            await audit.append_with_pool(
                reads.primary, _record(p, f, counts["households"], counts["members"], mode)
            )
            yield ""
            doc = household_document(f)
            sql = f"SELECT {doc}::text FROM households h WHERE {where} ORDER BY h.id"
            if f.restriction is not None:
                # A restriction's member tests (correlated subqueries) keep the scan serial,
                # and PostgreSQL would then rather sort the finished documents than read in
                # id order: the first row would wait for the whole result. Ordered first,
                # documents built after.
                sql = (
                    f"SELECT {doc}::text FROM (SELECT h.* FROM households h WHERE {where} "
                    "ORDER BY h.id) h ORDER BY h.id"
                )
            sql = at(sql)
            async for row in conn.cursor(sql, *q.params, prefetch=PREFETCH):
                yield row[0]


async def ndjson(docs: AsyncIterator[str], batch: int = 500) -> AsyncIterator[bytes]:
    lines: list[str] = []
    async for doc in docs:
        if not doc:
            continue
        lines.append(doc)
        if len(lines) >= batch:
            yield ("\n".join(lines) + "\n").encode()
            lines.clear()
    if lines:
        yield ("\n".join(lines) + "\n").encode()


HOUSEHOLD_COLUMNS = (
    "household_id",
    "address",
    "province",
    "division",
    "district",
    "tehsil",
    "union_council",
    "pmt_score",
    "poverty_band",
)
MEMBER_COLUMNS = ("member_id", "cnic", "name", "gender", "age", "relationship", "marital_status")


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return "" if value is None else value


async def csv_rows(f: Filters, docs: AsyncIterator[str], batch: int = 500) -> AsyncIterator[bytes]:
    """One row per member, household columns repeated (dimensions as extra columns)."""
    from app.services.sharing.beneficiaries_sql import HOUSEHOLD_DIMENSIONS, MEMBER_DIMENSIONS

    extra = f.restriction
    hh_dims = [d for d in f.dimensions if d in HOUSEHOLD_DIMENSIONS]
    hh_dims += [name for name, _ in (extra.household_fields if extra else ())]
    m_dims = [d for d in f.dimensions if d in MEMBER_DIMENSIONS]
    m_dims += [name for name, _ in (extra.member_fields if extra else ())]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*HOUSEHOLD_COLUMNS, *hh_dims, *MEMBER_COLUMNS, *m_dims])
    pending = 0
    async for doc in docs:
        if not doc:
            continue
        hh = orjson.loads(doc)
        head = [_cell(hh.get(c)) for c in (*HOUSEHOLD_COLUMNS, *hh_dims)]
        for member in hh["members"] or [{}]:
            writer.writerow(head + [_cell(member.get(c)) for c in (*MEMBER_COLUMNS, *m_dims)])
        pending += 1
        if pending >= batch:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode()


__all__ = ["GEO_LEVELS", "Filters", "authorize", "csv_rows", "ndjson", "page", "stream_documents"]
