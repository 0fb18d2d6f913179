"""Geo-tagged households (§4.2.4 viii): points with the dimensions the agreement grants.

Only households with coordinates in geo-tagged units are ever shared: never one without
lat/lon, never Balochistan, never a unit whose ``geo_units.geo_tagged`` is false (the
test-phase districts), whatever the filters ask. Streamed like the beneficiary lists: one
REPEATABLE READ snapshot on one pooled connection, counted and audited (committed) before
the first byte, then read through a server-side cursor. PostgreSQL builds each record's
JSON; the dimension fragments are the beneficiary lists' own.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any, Literal

import asyncpg
import orjson

from app.auth.partner import Principal
from app.errors import Forbidden, ValidationFailed
from app.replicas import Reads
from app.services.audit import trail as audit
from app.services.sharing import rules as sharing
from app.services.sharing.beneficiaries import check_geography, refuse_over
from app.services.sharing.beneficiaries_sql import (
    HOUSEHOLD_DIMENSIONS,
    MEMBER_DIMENSIONS,
    Filters,
    Query,
    household_where,
    member_selection,
)

Mode = Literal["geojson-seq", "ndjson", "csv"]
ENDPOINT = "/v1/partner/geo"
PREFETCH = 2000
BALOCHISTAN = "PK2"
GEOJSON_SEQ = "application/geo+json-seq"
RS = b"\x1e"  # RFC 8142: every record starts with the record separator...
LF = b"\n"  # ...and ends with a line feed

# Member fields that are dimensions of their own here (base fields of the beneficiary list).
MEMBER_FIELDS = {
    "gender": "m.gender",
    "relationship": "m.relationship",
    "marital_status": "m.marital_status",
    **MEMBER_DIMENSIONS,
}

# Located, and in no unit that is not geo-tagged. An untagged unit is either a "root" (its
# parent is tagged, or it has none) or lies below an untagged unit, so a household is in
# an untagged unit exactly when one of its six codes is a root: a short list, read once
# per query (an InitPlan), and one array overlap per household.
UNTAGGED_ROOTS = """(SELECT coalesce(array_agg(u.code::text), '{}') FROM geo_units u
    LEFT JOIN geo_units up ON up.code = u.parent_code
   WHERE NOT u.geo_tagged AND (up.code IS NULL OR up.geo_tagged))"""
GEO_TAGGED = f"""(h.lat IS NOT NULL AND h.lon IS NOT NULL
  AND h.province_code <> '{BALOCHISTAN}'
  AND NOT ARRAY[h.province_code, h.division_code, h.district_code, h.tehsil_code,
                h.union_council_code, h.village_code]::text[] && {UNTAGGED_ROOTS})"""


async def authorize(pool: asyncpg.Pool | Reads, p: Principal, f: Filters) -> None:
    """Category viii; known dimensions (422), each one granted (403); codes in scope."""
    if "viii" not in p.categories:
        raise Forbidden("the agreement does not include geo-tagged data (category viii)")
    unknown = [d for d in f.dimensions if d not in sharing.DIMENSIONS]
    if unknown:
        raise ValidationFailed(f"unknown dimension {unknown[0]!r}")
    denied = sharing.denied_dimensions(f.dimensions, p.dimensions)
    if denied:
        raise Forbidden(f"dimension not granted by the agreement: {', '.join(denied)}")
    await check_geography(pool, p, f)


def member_dimensions(f: Filters) -> list[str]:
    return [d for d in f.dimensions if d in MEMBER_FIELDS]


def household_dimensions(f: Filters) -> list[str]:
    return [d for d in f.dimensions if d in HOUSEHOLD_DIMENSIONS]


def where(q: Query, p: Principal, f: Filters) -> str:
    return f"{household_where(q, f, p.geo_codes, None)} AND {GEO_TAGGED}"


def _properties(f: Filters) -> list[str]:
    """``json_build_object`` arguments after the household id: its granted dimensions, and
    its living members' when a member dimension is asked for."""
    fields = [f"'{d}', {HOUSEHOLD_DIMENSIONS[d]}" for d in household_dimensions(f)]
    members = member_dimensions(f)
    if members:
        inner = ", ".join(f"'{d}', {MEMBER_FIELDS[d]}" for d in members)
        fields.append(
            f"""'members', coalesce((SELECT json_agg(json_build_object({inner}) ORDER BY m.id)
                FROM members m WHERE m.household_id = h.id
                 AND {member_selection(f.member_type)}), '[]'::json)"""
        )
    return fields


def document(f: Filters, mode: Mode) -> str:
    """The SQL of one record: a GeoJSON Feature, or a flat object with lat and lon."""
    props = ", ".join(["'household_id', h.id::text", *_properties(f)])
    if mode == "geojson-seq":
        return (
            "json_build_object('type', 'Feature', 'geometry', json_build_object("
            "'type', 'Point', 'coordinates', json_build_array(h.lon, h.lat)), "
            f"'properties', json_build_object({props}))"
        )
    extra = ", ".join(_properties(f))
    return (
        "json_build_object('household_id', h.id::text, 'lat', h.lat, 'lon', h.lon"
        + (f", {extra}" if extra else "")
        + ")"
    )


def member_count(f: Filters) -> str:
    """Members shared per household: those listed when a member dimension is asked, else 0."""
    if not member_dimensions(f):
        return "0"
    return (
        "(SELECT count(*) FROM members m WHERE m.household_id = h.id AND "
        f"{member_selection(f.member_type)})"
    )


async def stream(
    reads: Reads, p: Principal, f: Filters, mode: Mode, max_households: int
) -> AsyncIterator[str]:
    """Every matching geo-tagged household's JSON text, in id order, from one snapshot (on a
    read replica when the service has one; the audit row on the primary).

    The first ``__anext__`` opens the snapshot, counts, commits the audit row and yields an
    empty string; the caller awaits it before the response starts.
    """
    q = Query()
    condition = where(q, p, f)
    async with reads.acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            counts = await conn.fetchrow(
                f"SELECT count(*) AS households, coalesce(sum({member_count(f)}), 0)::bigint "
                f"AS members FROM households h WHERE {condition}",
                *q.params,
            )
            assert counts is not None
            refuse_over(
                counts["households"], max_households, "households", "NSER_EXPORT_MAX_HOUSEHOLDS"
            )
            await audit.append_with_pool(
                reads.primary,
                audit.AuditRecord.of(
                    p,
                    endpoint=f"{ENDPOINT} ({mode})",
                    filters=f.as_audit(),
                    dimensions=list(f.dimensions),
                    households=counts["households"],
                    members=counts["members"],
                ),
            )
            yield ""
            sql = (
                f"SELECT {document(f, mode)}::text FROM households h "
                f"WHERE {condition} ORDER BY h.id"
            )
            async for row in conn.cursor(sql, *q.params, prefetch=PREFETCH):
                yield row[0]


async def json_seq(docs: AsyncIterator[str], batch: int = 500) -> AsyncIterator[bytes]:
    """RFC 8142 framing: RS, the GeoJSON text, LF — for every record."""
    out: list[bytes] = []
    async for doc in docs:
        if not doc:
            continue
        out.append(RS + doc.encode() + LF)
        if len(out) >= batch:
            yield b"".join(out)
            out.clear()
    if out:
        yield b"".join(out)


async def ndjson(docs: AsyncIterator[str], batch: int = 500) -> AsyncIterator[bytes]:
    out: list[bytes] = []
    async for doc in docs:
        if not doc:
            continue
        out.append(doc.encode() + LF)
        if len(out) >= batch:
            yield b"".join(out)
            out.clear()
    if out:
        yield b"".join(out)


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return "" if value is None else value


async def csv_rows(f: Filters, docs: AsyncIterator[str], batch: int = 500) -> AsyncIterator[bytes]:
    """One row per household, or per listed member when a member dimension is asked (the
    household's columns repeated); JSON-valued dimensions as JSON text."""
    head = ["household_id", "lat", "lon", *household_dimensions(f)]
    members = member_dimensions(f)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(head + members)
    pending = 0
    async for doc in docs:
        if not doc:
            continue
        record = orjson.loads(doc)
        row = [_cell(record.get(c)) for c in head]
        if members:
            for member in record["members"] or [{}]:
                writer.writerow(row + [_cell(member.get(c)) for c in members])
        else:
            writer.writerow(row)
        pending += 1
        if pending >= batch:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode()


__all__ = ["GEOJSON_SEQ", "authorize", "csv_rows", "json_seq", "ndjson", "stream"]
