"""The audit trail: append-only, hash-chained rows of who received what, how much, when.

Appends are serialized with a transaction-level advisory lock, so each row's ``prev_hash``
is the hash of the row just before it; ``hash = sha256(prev_hash || canonical row)`` and the
canonical row includes the id and timestamp, so an edit, a removal or a reordering breaks
the chain at the first affected row.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import orjson

from app.logging import request_id_var

GENESIS = bytes(32)
_LOCK = 0x6E736572_61756474  # "nseraudt"


@dataclass(frozen=True)
class AuditRecord:
    actor_type: str
    client_id: str | None
    agreement_id: uuid.UUID | None
    organization_id: uuid.UUID | None
    endpoint: str
    filters: dict[str, Any]
    dimensions: list[str]
    households: int
    members: int
    request_id: str | None = field(default_factory=lambda: request_id_var.get(None))

    @classmethod
    def of(
        cls,
        caller: Caller,
        *,
        endpoint: str,
        filters: dict[str, Any],
        dimensions: list[str],
        households: int,
        members: int,
    ) -> AuditRecord:
        """The record of an access to personal data by ``caller`` (a partner or staff)."""
        return cls(
            caller.kind,
            caller.client_id,
            caller.agreement_id,
            caller.organization_id,
            endpoint,
            filters,
            dimensions,
            households,
            members,
        )


class Caller(Protocol):
    """Who accesses data: what the audit log records of a partner or staff principal."""

    @property
    def kind(self) -> str: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def agreement_id(self) -> uuid.UUID | None: ...
    @property
    def organization_id(self) -> uuid.UUID | None: ...


def canonical(row_id: int, at: datetime, rec: dict[str, Any]) -> bytes:
    return orjson.dumps(
        [
            row_id,
            at.astimezone(UTC).isoformat(),
            rec["actor_type"],
            rec["client_id"],
            str(rec["agreement_id"]) if rec["agreement_id"] else None,
            str(rec["organization_id"]) if rec["organization_id"] else None,
            rec["endpoint"],
            rec["filters"],
            list(rec["dimensions"]),
            rec["households"],
            rec["members"],
            rec["request_id"],
        ],
        option=orjson.OPT_SORT_KEYS,
    )


def chain_hash(prev_hash: bytes, row_id: int, at: datetime, rec: dict[str, Any]) -> bytes:
    return hashlib.sha256(prev_hash + canonical(row_id, at, rec)).digest()


def _plain(value: Any) -> Any:
    """Filters as JSON-stable values (strings, lists of strings) so the hash survives JSONB."""
    if isinstance(value, list | tuple | set | frozenset):
        return [str(item) for item in value]
    return None if value is None else str(value)


async def append_action(
    conn: asyncpg.Connection, caller: Caller, endpoint: str, filters: dict[str, Any]
) -> int:
    """A staff action that discloses no household (a workflow step, a spot check, a report
    read): who, what and on which object, with zero households and members."""
    record = AuditRecord.of(
        caller, endpoint=endpoint, filters=filters, dimensions=[], households=0, members=0
    )
    return await append(conn, record)


async def append(conn: asyncpg.Connection, record: AuditRecord) -> int:
    """Append one row (inside the caller's transaction if there is one)."""
    rec = {
        "actor_type": record.actor_type,
        "client_id": record.client_id,
        "agreement_id": record.agreement_id,
        "organization_id": record.organization_id,
        "endpoint": record.endpoint,
        "filters": {k: _plain(v) for k, v in record.filters.items() if v not in (None, [], "")},
        "dimensions": list(record.dimensions),
        "households": record.households,
        "members": record.members,
        "request_id": record.request_id,
    }
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        prev = await conn.fetchval("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
        row_id: int = await conn.fetchval(
            "SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))"
        )
        at: datetime = await conn.fetchval("SELECT clock_timestamp()")
        prev_hash = bytes(prev) if prev is not None else GENESIS
        await conn.execute(
            """INSERT INTO audit_log (id, at, actor_type, client_id, agreement_id,
                   organization_id, endpoint, filters, dimensions, households, members,
                   request_id, prev_hash, hash)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14)""",
            row_id,
            at,
            rec["actor_type"],
            rec["client_id"],
            rec["agreement_id"],
            rec["organization_id"],
            rec["endpoint"],
            orjson.dumps(rec["filters"], option=orjson.OPT_SORT_KEYS).decode(),
            rec["dimensions"],
            rec["households"],
            rec["members"],
            rec["request_id"],
            prev_hash,
            chain_hash(prev_hash, row_id, at, rec),
        )
    return row_id


async def append_with_pool(pool: asyncpg.Pool, record: AuditRecord) -> int:
    """Append and commit on a connection of its own (before a stream's first byte)."""
    async with pool.acquire() as conn:
        return await append(conn, record)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rows: int
    problem: str | None = None


async def verify(conn: asyncpg.Connection) -> Verdict:
    """Walk the chain in id order; name the first row that breaks it."""
    prev_hash, prev_id, prev_at, count = GENESIS, None, None, 0
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor("SELECT * FROM audit_log ORDER BY id", prefetch=1000):
            count += 1
            rec = dict(row)
            rec["filters"] = orjson.loads(rec["filters"])
            where = f"row {row['id']}"
            if bytes(row["prev_hash"]) != prev_hash:
                after = f"row {prev_id}" if prev_id is not None else "the start of the log"
                return Verdict(
                    False,
                    count,
                    f"{where} does not follow {after}: a row was removed, inserted or "
                    "moved out of order",
                )
            if chain_hash(prev_hash, row["id"], row["at"], rec) != bytes(row["hash"]):
                return Verdict(False, count, f"{where} was altered (its hash does not match)")
            if prev_at is not None and row["at"] < prev_at:
                return Verdict(False, count, f"{where} is out of time order")
            prev_hash, prev_id, prev_at = bytes(row["hash"]), row["id"], row["at"]
    return Verdict(True, count)
