"""What someone with database access but without the audit key can do to the chain.

Written apart from ``app.services.audit``: the row layout that was hashed before audit keys
(``sha256(prev_hash || canonical row)``), used to write rows as the release before keys
did, and to recompute a plain hash chain over rows an attacker has edited.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

GENESIS = bytes(32)


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def plain_row_bytes(row: dict[str, Any]) -> bytes:
    """The canonical row of the unkeyed scheme: the fields in a fixed order, JSON."""
    at: datetime = row["at"]
    filters = row["filters"]
    if isinstance(filters, str):
        filters = orjson.loads(filters)
    return orjson.dumps(
        [
            row["id"],
            at.astimezone(UTC).isoformat(),
            row["actor_type"],
            row["client_id"],
            _text(row["agreement_id"]),
            _text(row["organization_id"]),
            row["endpoint"],
            filters,
            list(row["dimensions"]),
            row["households"],
            row["members"],
            row["request_id"],
        ],
        option=orjson.OPT_SORT_KEYS,
    )


def plain_hash(prev_hash: bytes, row: dict[str, Any]) -> bytes:
    return hashlib.sha256(prev_hash + plain_row_bytes(row)).digest()


async def write_unkeyed_rows(conn: asyncpg.Connection, endpoints: list[str]) -> None:
    """Append rows as the release before audit keys did (a schema without ``key_id``)."""
    prev = await conn.fetchval("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
    prev_hash = bytes(prev) if prev is not None else GENESIS
    for endpoint in endpoints:
        row = {
            "id": await conn.fetchval("SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))"),
            "at": await conn.fetchval("SELECT clock_timestamp()"),
            "actor_type": "partner",
            "client_id": "npc_legacy",
            "agreement_id": uuid.uuid4(),
            "organization_id": uuid.uuid4(),
            "endpoint": endpoint,
            "filters": {"cnic": "35202-*******-3"},
            "dimensions": ["disability"],
            "households": 1,
            "members": 4,
            "request_id": uuid.uuid4().hex,
        }
        digest = plain_hash(prev_hash, row)
        await conn.execute(
            """INSERT INTO audit_log (id, at, actor_type, client_id, agreement_id,
                   organization_id, endpoint, filters, dimensions, households, members,
                   request_id, prev_hash, hash)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14)""",
            row["id"],
            row["at"],
            row["actor_type"],
            row["client_id"],
            row["agreement_id"],
            row["organization_id"],
            row["endpoint"],
            orjson.dumps(row["filters"]).decode(),
            row["dimensions"],
            row["households"],
            row["members"],
            row["request_id"],
            prev_hash,
            digest,
        )
        prev_hash = digest


async def rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch("SELECT * FROM audit_log ORDER BY id")]


async def rechain_plain(
    conn: asyncpg.Connection, start: int, *, mark_unkeyed: str | None = None
) -> None:
    """Recompute ``prev_hash`` and ``hash`` of every row from id ``start`` on as a plain
    SHA-256 chain (what the attacker can compute); with ``mark_unkeyed``, also set those
    rows' ``key_id`` to it, claiming they were written before audit keys.

    Runs with the table's triggers disabled, as the table's owner can."""
    await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
    try:
        prev_hash = GENESIS
        for row in await rows(conn):
            if row["id"] >= start:
                digest = plain_hash(prev_hash, row)
                await conn.execute(
                    "UPDATE audit_log SET prev_hash = $1, hash = $2 WHERE id = $3",
                    prev_hash,
                    digest,
                    row["id"],
                )
                if mark_unkeyed is not None:
                    await conn.execute(
                        "UPDATE audit_log SET key_id = $1 WHERE id = $2", mark_unkeyed, row["id"]
                    )
                prev_hash = digest
            else:
                prev_hash = bytes(row["hash"])
    finally:
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")


async def restore(conn: asyncpg.Connection, saved: list[dict[str, Any]]) -> None:
    """Put every row back as it was (the rows themselves, as the owner can)."""
    await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
    try:
        await conn.execute("DELETE FROM audit_log")
        for row in saved:
            columns = list(row)
            values = [
                orjson.dumps(row[c]).decode()
                if c == "filters" and not isinstance(row[c], str)
                else row[c]
                for c in columns
            ]
            placeholders = ", ".join(
                f"${i}::jsonb" if c == "filters" else f"${i}" for i, c in enumerate(columns, 1)
            )
            await conn.execute(
                f"INSERT INTO audit_log ({', '.join(columns)}) VALUES ({placeholders})",
                *values,
            )
    finally:
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
