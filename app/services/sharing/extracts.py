"""Anonymized extracts (§4.2.4 vi): pseudonymous ids, age brackets, coarse geography, and
k-anonymity over the quasi-identifiers (geography, gender, age bracket, granted dimensions).

Records whose group is smaller than k at the agreement's finest level are generalized one
geography level up, among themselves, until province; groups still smaller are suppressed.
Every published (geography, quasi-identifiers) group therefore holds at least k records.
A geography filter finer than the agreement's extract level (a union council, under the
default tehsil level) is refused: it would place every record in a unit none may show.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from app.auth.partner import Principal
from app.errors import Forbidden, ValidationFailed
from app.replicas import FAILURES, Reads
from app.services.audit import trail as audit
from app.services.sharing import beneficiaries as beneficiary_service
from app.services.sharing.beneficiaries_sql import (
    AGE_BRACKET,
    GEO_LEVELS,
    Filters,
    Query,
    household_where,
)

LEVELS = ("tehsil", "district", "division", "province")
# Dimensions an extract may carry, as member-level expressions (all coarse categories).
EXTRACT_DIMENSIONS = {
    "marital_status": "m.marital_status",
    "relationship": "m.relationship",
    "disability": "(coalesce(cardinality(m.disabilities), 0) > 0)::text",
    "employment": "coalesce(m.employment, '')",
    "education": "coalesce(m.education, '')",
    "room_count": "coalesce(h.rooms::text, '')",
    "toilet_type": "coalesce(h.toilet_type, '')",
}
COLUMNS = ("household_pid", "member_pid", "province", "division", "district", "tehsil")


@dataclass(frozen=True)
class Summary:
    records: int
    households: int
    generalized: int
    suppressed: int
    k: int


def pseudonym(key: bytes, kind: str, ident: int) -> str:
    return hmac.new(key, f"{kind}:{ident}".encode(), hashlib.sha256).hexdigest()[:24]


def _dims(f: Filters) -> list[str]:
    return [d for d in f.dimensions if d in EXTRACT_DIMENSIONS]


def _sql(p: Principal, f: Filters, k: int) -> tuple[str, list[object]]:
    q = Query()
    where = household_where(q, f, p.geo_codes, None)
    dims = _dims(f)
    levels = LEVELS[LEVELS.index(p.extract_geo_level) if p.extract_geo_level in LEVELS else 0 :]
    qi = ["gender", "age_bracket", *dims]
    dim_cols = "".join(f", {EXTRACT_DIMENSIONS[d]} AS {d}" for d in dims)
    kp = q.param(k)
    ctes = [
        f"""base AS (SELECT h.id AS hid, m.id AS mid, h.province_code AS province,
              h.division_code AS division, h.district_code AS district,
              h.tehsil_code AS tehsil, m.gender, {AGE_BRACKET} AS age_bracket,
              h.poverty_band{dim_cols}
            FROM households h JOIN members m ON m.household_id = h.id
           WHERE {where} AND m.deceased_on IS NULL)"""
    ]
    source = "base"
    selects = []
    for i, level in enumerate(levels):
        name = f"l{i}"
        condition = "" if i == 0 else f" WHERE c{i - 1} < {kp}"
        ctes.append(
            f"{name} AS (SELECT *, count(*) OVER (PARTITION BY {level}, {', '.join(qi)}) AS c{i} "
            f"FROM {source}{condition})"
        )
        shown = LEVELS[LEVELS.index(level) :]
        geo = ", ".join(
            (col if col in shown else f"NULL::text AS {col}")
            for col in ("province", "division", "district", "tehsil")
        )
        selects.append(
            f"SELECT hid, mid, {geo}, gender, age_bracket, poverty_band"
            f"{''.join(', ' + d for d in dims)}, {i} AS generalized "
            f"FROM {name} WHERE c{i} >= {kp}"
        )
        source = name
    sql = "WITH " + ", ".join(ctes) + ", published AS (" + " UNION ALL ".join(selects) + ") "
    return sql, q.params


def finest_filters(p: Principal, f: Filters) -> list[str]:
    """The geography filters finer than the agreement's extract level: a filter on them
    would place every published record in a unit the records may not show."""
    level = p.extract_geo_level if p.extract_geo_level in LEVELS else LEVELS[0]
    shown = GEO_LEVELS.index(level)
    return [name for name in GEO_LEVELS[shown + 1 :] if getattr(f, name)]


async def authorize(pool: asyncpg.Pool | Reads, p: Principal, f: Filters) -> None:
    if "vi" not in p.categories:
        raise Forbidden("the agreement does not include anonymized data (category vi)")
    finer = finest_filters(p, f)
    if finer:
        raise ValidationFailed(
            f"{finer[0]}: finer than this agreement's extract level ({p.extract_geo_level}); "
            "an extract may be filtered down to that level, no further",
            errors=[{"loc": ["query", finer[0]], "field": finer[0], "message": "too fine"}],
        )
    not_extractable = [d for d in f.dimensions if d not in EXTRACT_DIMENSIONS]
    if f.dimensions and not_extractable:
        raise Forbidden(
            f"dimension not available in anonymized extracts: {', '.join(not_extractable)}"
        )
    await beneficiary_service.check_geography(pool, p, f)
    from app.services.sharing.rules import denied_dimensions

    denied = denied_dimensions(f.dimensions, p.dimensions)
    if denied:
        raise Forbidden(f"dimension not granted by the agreement: {', '.join(denied)}")


async def open_extract(
    reads: Reads, p: Principal, f: Filters, k: int, fmt: str, max_records: int
) -> tuple[Summary, AsyncIterator[dict[str, Any]]]:
    """Count and audit in the snapshot (on a read replica when the service has one; the
    audit row on the primary), then hand back a record iterator over it."""
    base, params = _sql(p, f, k)
    lease = reads.acquire()
    conn = await lease.__aenter__()
    tr = conn.transaction(isolation="repeatable_read", readonly=True)
    try:
        await tr.start()
        row = await conn.fetchrow(
            base + "SELECT (SELECT count(*) FROM base) AS total, count(*) AS n, "
            "count(DISTINCT hid) AS hh, count(*) FILTER (WHERE generalized > 0) AS g "
            "FROM published",
            *params,
        )
        assert row is not None
        beneficiary_service.refuse_over(
            row["total"], max_records, "member records", "NSER_EXTRACT_MAX_RECORDS"
        )
        summary = Summary(row["n"], row["hh"], row["g"], row["total"] - row["n"], k)
        await audit.append_with_pool(
            reads.primary,
            audit.AuditRecord.of(
                p,
                endpoint=f"/v1/partner/extracts/anonymized ({fmt})",
                filters={**f.as_audit(), "k": k},
                dimensions=_dims(f),
                households=summary.households,
                members=summary.records,
            ),
        )
    except BaseException as exc:
        await _end(tr, lease, exc)
        raise
    key = p.pseudonym_key or b""
    dims = _dims(f)

    async def records() -> AsyncIterator[dict[str, Any]]:
        try:
            sql = base + "SELECT * FROM published ORDER BY hid, mid"
            async for r in conn.cursor(sql, *params, prefetch=2000):
                out: dict[str, Any] = {
                    "household_pid": pseudonym(key, "h", r["hid"]),
                    "member_pid": pseudonym(key, "m", r["mid"]),
                    "province": r["province"],
                    "division": r["division"],
                    "district": r["district"],
                    "tehsil": r["tehsil"],
                    "gender": r["gender"],
                    "age_bracket": r["age_bracket"],
                    "poverty_band": r["poverty_band"],
                }
                for d in dims:
                    out[d] = r[d]
                yield out
        except BaseException as exc:
            await _end(tr, lease, exc)
            raise
        await _end(tr, lease, None)

    return summary, records()


async def _end(
    tr: asyncpg.transaction.Transaction,
    lease: contextlib.AbstractAsyncContextManager[asyncpg.Connection],
    exc: BaseException | None,
) -> None:
    """Roll the snapshot back and give the connection back (a failure marks a replica down)."""
    try:
        with contextlib.suppress(*FAILURES):  # a cut connection has nothing to roll back
            await tr.rollback()
    finally:
        if exc is None:
            await lease.__aexit__(None, None, None)
        else:
            await lease.__aexit__(type(exc), exc, exc.__traceback__)


def columns(f: Filters) -> list[str]:
    return [*COLUMNS, "gender", "age_bracket", "poverty_band", *_dims(f)]


async def as_ndjson(records: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    chunk: list[bytes] = []
    async for r in records:
        chunk.append(orjson.dumps(r))
        if len(chunk) >= 1000:
            yield b"\n".join(chunk) + b"\n"
            chunk = []
    if chunk:
        yield b"\n".join(chunk) + b"\n"


async def as_csv(f: Filters, records: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    import csv

    cols = columns(f)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    n = 0
    async for r in records:
        writer.writerow(["" if r[c] is None else r[c] for c in cols])
        n += 1
        if n % 1000 == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


class _Sink:
    """A write-only file for pyarrow that hands written bytes back to the stream."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


async def as_parquet(
    f: Filters, records: AsyncIterator[dict[str, Any]], group: int = 50_000
) -> AsyncIterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = columns(f)
    schema = pa.schema([(c, pa.string()) for c in cols])
    sink = _Sink()
    writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema)
    batch: dict[str, list[Any]] = {c: [] for c in cols}
    n = 0

    def flush() -> None:
        writer.write_table(pa.table(batch, schema=schema))
        for values in batch.values():
            values.clear()

    async for r in records:
        for c in cols:
            batch[c].append(r[c])
        n += 1
        if n % group == 0:
            flush()
            yield sink.drain()
    if n % group:
        flush()
    writer.close()
    yield sink.drain()
