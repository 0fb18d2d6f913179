"""What someone with database access but without the audit key can do to the chains.

Written apart from ``app.services.audit``: the row layout that was hashed before audit keys
(``sha256(prev_hash || canonical row)``), used to write rows as the release before keys
did, and to recompute plain hash chains over rows an attacker has edited; and the log's
layout in chains (each row's ``prev_hash`` is the hash of the previous row of its chain),
read from the table itself, so that tests can aim at a row with a predecessor and a
successor in its chain.
"""

from __future__ import annotations

import hashlib
import itertools
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


def layout(saved: list[dict[str, Any]]) -> dict[int, list[int]]:
    """The ids of each chain's rows, in order, from the rows as the table holds them."""
    chains: dict[int, list[int]] = {}
    for row in sorted(saved, key=lambda r: r["id"]):
        chains.setdefault(row["chain"], []).append(row["id"])
    return chains


def links(saved: list[dict[str, Any]]) -> dict[int, int]:
    """Each row's predecessor in its chain, as the stored hashes link them (id -> id), and
    checked against ``layout``: the chains are what the hashes say."""
    by_hash = {bytes(row["hash"]): row["id"] for row in saved}
    linked = {
        row["id"]: by_hash[bytes(row["prev_hash"])]
        for row in saved
        if bytes(row["prev_hash"]) != GENESIS
    }
    for ids in layout(saved).values():
        assert all(linked[later] == earlier for earlier, later in itertools.pairwise(ids))
        assert ids[0] not in linked
    return linked


async def rechain_plain(
    conn: asyncpg.Connection,
    start: int,
    *,
    mark_unkeyed: str | None = None,
    into_chain0: bool = False,
) -> None:
    """Recompute ``prev_hash`` and ``hash`` of every row from id ``start`` on as plain
    SHA-256 chains, each chain on its own (what the attacker can compute); with
    ``mark_unkeyed``, also set those rows' ``key_id`` to it, claiming they were written
    before audit keys; with ``into_chain0``, put them all in chain 0 (one chain, as the
    log was before there were several).

    Runs with the table's triggers disabled, as the table's owner can."""
    await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
    try:
        heads: dict[int, bytes] = {}
        for row in await rows(conn):
            chain = 0 if into_chain0 and row["id"] >= start else row["chain"]
            if row["id"] >= start:
                prev_hash = heads.get(chain, GENESIS)
                digest = plain_hash(prev_hash, row)
                await conn.execute(
                    "UPDATE audit_log SET prev_hash = $1, hash = $2, chain = $3 WHERE id = $4",
                    prev_hash,
                    digest,
                    chain,
                    row["id"],
                )
                if mark_unkeyed is not None:
                    await conn.execute(
                        "UPDATE audit_log SET key_id = $1 WHERE id = $2", mark_unkeyed, row["id"]
                    )
                heads[chain] = digest
            else:
                heads[chain] = bytes(row["hash"])
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


V1_CHECKPOINT_DOMAIN = b"nser audit checkpoint v1\n"


def v1_checkpoint_bytes(
    cp_id: int,
    at: datetime,
    last_id: int,
    last_hash: bytes,
    rows: int,
    rows_per_key: dict[str, int],
    full: bool,
    key_id: str,
) -> bytes:
    """What the release with one chain sealed in a checkpoint (its MAC input)."""
    return V1_CHECKPOINT_DOMAIN + orjson.dumps(
        [
            cp_id,
            at.astimezone(UTC).isoformat(),
            last_id,
            last_hash.hex(),
            rows,
            rows_per_key,
            full,
            key_id,
        ],
        option=orjson.OPT_SORT_KEYS,
    )
