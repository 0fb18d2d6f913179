"""Status links, lookups by id or reference, and timelines of cases (see the package)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from app.errors import NotFound


@dataclass(frozen=True)
class Cases:
    """Where a kind of case lives: its table, its events table and their key column.
    The names are the package's own constants, never request text."""

    table: str
    events: str
    key: str
    noun: str  # in "no such <noun>"


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> tuple[str, bytes]:
    """A status token (shown once) and the hash that is stored."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_matches(stored: bytes | None, token: str) -> bool:
    """Whether ``token`` is the one whose hash was stored (constant time)."""
    return stored is not None and hmac.compare_digest(bytes(stored), token_hash(token))


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


async def resolve(conn: asyncpg.Connection | asyncpg.Pool, cases: Cases, ident: str) -> uuid.UUID:
    """A case by its id or its reference (``DSR-2026-000123``); 404 if there is none: an
    id must exist too, since the callers read the row it names."""
    try:
        by_id: uuid.UUID | None = uuid.UUID(ident)
    except ValueError:
        by_id = None
    if by_id is not None:
        found = await conn.fetchval(f"SELECT id FROM {cases.table} WHERE id = $1", by_id)
    else:
        found = await conn.fetchval(
            f"SELECT id FROM {cases.table} WHERE reference = $1", ident.upper()
        )
    if found is None:
        raise NotFound(f"no such {cases.noun}")
    case_id: uuid.UUID = found
    return case_id


async def append_event(
    conn: asyncpg.Connection,
    cases: Cases,
    case_id: uuid.UUID,
    action: str,
    before: str | None,
    after: str,
    actor: str | None,
    roles: list[str],
    payload: dict[str, Any],
) -> None:
    """One step of a case's timeline."""
    await conn.execute(
        f"""INSERT INTO {cases.events} ({cases.key}, action, from_status, to_status,
               actor_client_id, actor_roles, payload)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)""",
        case_id,
        action,
        before,
        after,
        actor,
        roles,
        dumps(payload),
    )


async def staff_timeline(
    conn: asyncpg.Connection, cases: Cases, case_id: uuid.UUID
) -> list[dict[str, Any]]:
    """Every step of a case, with its actor, roles and payload (for staff only)."""
    events = await conn.fetch(
        f"""SELECT action, from_status, to_status, actor_client_id, actor_roles, payload, at
              FROM {cases.events} WHERE {cases.key} = $1 ORDER BY id""",
        case_id,
    )
    return [
        {
            "action": e["action"],
            "from": e["from_status"],
            "status": e["to_status"],
            "actor": e["actor_client_id"],
            "roles": list(e["actor_roles"]),
            "payload": loads(e["payload"]),
            "at": e["at"],
        }
        for e in events
    ]
