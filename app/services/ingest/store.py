"""Receiving a batch: the envelope checked, the raw body committed, idempotency per client.

This service owns its transaction (like the queue worker): the 202 promises that the batch
is durably in PostgreSQL, so the commit must happen before the handler returns.

Each agreement may send at most ``records_per_hour`` records in any hour
(``NSER_UPDATES_RECORDS_PER_HOUR``), dry runs included: a batch is a stream of matches
against the registry, so its volume is bounded like any other read. The hour is counted
from the batches stored (``received_at``), under a per-agreement lock, so the limit holds
across processes and restarts; a replay of a stored batch (same key and body) costs
nothing.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from app.auth.partner import Principal
from app.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    ValidationFailed,
)
from app.schemas.updates import OUTCOMES
from app.services.audit import trail as audit

# What registry staff may send through the queue (a re-survey's indicators).
STAFF_UPDATE_KINDS = ("household_survey",)


@dataclass(frozen=True)
class Sender:
    client_id: str
    agreement_id: uuid.UUID
    organization_id: uuid.UUID
    update_kinds: frozenset[str]


@dataclass(frozen=True)
class Received:
    batch_id: uuid.UUID
    records: int
    created: bool


async def read_capped(stream: AsyncIterator[bytes], limit: int, declared: int | None) -> bytes:
    """The body, refusing it (413) as soon as it is known to pass ``limit`` bytes."""
    too_large = PayloadTooLarge(
        f"the body is over the {limit}-byte limit (NSER_UPDATES_MAX_BODY_BYTES); "
        "split the records into several batches"
    )
    if declared is not None and declared > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def check_envelope(body: bytes, max_records: int) -> tuple[bool, int]:
    """``(dry_run, record count)`` of a well-formed body; 422/413 problem otherwise."""
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValidationFailed("the body must be a JSON object with a 'records' array")
    unknown = sorted(set(doc) - {"dry_run", "records"})
    if unknown:
        raise ValidationFailed(
            f"unknown top-level field(s): {', '.join(unknown)}",
            errors=[{"field": f, "message": "unknown field"} for f in unknown],
        )
    # null is "not given", as for every optional field of a request body.
    dry_run = False if doc.get("dry_run") is None else doc["dry_run"]
    if not isinstance(dry_run, bool):
        raise ValidationFailed(
            "dry_run must be true or false",
            errors=[{"field": "dry_run", "message": "must be a boolean"}],
        )
    records = doc.get("records")
    if _has_escaped_control(body):
        raise ValidationFailed(
            "text may not hold control characters (U+0000-U+001F, U+007F)",
            errors=[
                {"field": where, "message": "control characters are not allowed"}
                for where in _control_locations(doc)[:20]
            ],
        )
    if not isinstance(records, list) or not records:
        raise ValidationFailed(
            "records must be a non-empty array",
            errors=[{"field": "records", "message": "must be a non-empty array"}],
        )
    if len(records) > max_records:
        raise PayloadTooLarge(
            f"the batch has {len(records)} records; the limit is {max_records} "
            "(NSER_UPDATES_MAX_RECORDS): split it into several batches"
        )
    return dry_run, len(records)


# JSON carries a control character in a string (or a key) only as an escape: \u0000-\u001f,
# \u007f, or one of \b \f \n \r \t. Most bodies hold no backslash at all (one memchr);
# otherwise the escapes are read left to right, an escaped backslash taken as a pair so that
# ``\\n`` is a backslash and an "n", not a newline. The slow walk below only runs to name
# the fields of a body that has one.
_ESCAPE = re.compile(rb"\\(?:u00[01][0-9a-fA-F]|u007[fF]|[bfnrt]|\\)")


def _has_escaped_control(body: bytes) -> bool:
    if b"\\" not in body:
        return False
    return any(m.group() != b"\\\\" for m in _ESCAPE.finditer(body))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _control_locations(node: Any, path: str = "") -> list[str]:
    """The JSON paths (``records[3].member.name``) whose text or key holds a control character."""
    found: list[str] = []
    if isinstance(node, str):
        return [path or "(body)"] if _CONTROL.search(node) else []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{_CONTROL.sub('?', key)}" if path else _CONTROL.sub("?", key)
            if _CONTROL.search(key):
                found.append(where)
            found += _control_locations(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _control_locations(value, f"{path}[{i}]")
    return found


def lock_key(client_id: str, key: str) -> int:
    """The advisory-lock id of (client, idempotency key): 64 bits of a SHA-256."""
    digest = hashlib.sha256(f"{client_id}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def check_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise BadRequest("the Idempotency-Key header is required")
    if len(key) > 200:
        raise BadRequest("the Idempotency-Key header is at most 200 characters")
    if _CONTROL.search(key):
        raise BadRequest("the Idempotency-Key header may not hold control characters")
    return key


def _agreement_lock(agreement_id: uuid.UUID) -> int:
    digest = hashlib.sha256(b"nser-updates-budget\x00" + agreement_id.bytes).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# The records each batch of the agreement stored in the last hour, oldest first, and how
# long until each leaves the window.
_HOUR = """
SELECT record_count,
       extract(epoch FROM received_at + interval '1 hour' - now())::float8 AS leaves_in
  FROM update_batches
 WHERE agreement_id = $1 AND received_at > now() - interval '1 hour'
 ORDER BY received_at
"""


async def _check_budget(
    conn: asyncpg.Connection, agreement_id: uuid.UUID, count: int, per_hour: int
) -> None:
    """429 (with the wait) unless ``count`` more records fit the agreement's last hour."""
    if count > per_hour:
        raise PayloadTooLarge(
            f"the batch has {count} records; this agreement may send {per_hour} an hour "
            "(NSER_UPDATES_RECORDS_PER_HOUR): split it into several batches"
        )
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _agreement_lock(agreement_id))
    window = await conn.fetch(_HOUR, agreement_id)
    used = sum(r["record_count"] for r in window)
    if used + count <= per_hour:
        return
    # The wait: until enough of the oldest batches have left the hour.
    excess, wait = used + count - per_hour, 0.0
    for r in window:
        excess -= r["record_count"]
        wait = r["leaves_in"]
        if excess <= 0:
            break
    seconds = max(1, math.ceil(wait))
    raise TooManyRequests(
        f"this agreement sent {used} records in the last hour; with these {count} it would "
        f"pass its limit of {per_hour} an hour (NSER_UPDATES_RECORDS_PER_HOUR). "
        f"Retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
        extra={"retry_after": seconds},
    )


async def receive(
    pool: asyncpg.Pool,
    sender: Sender,
    key: str,
    body: bytes,
    max_records: int,
    records_per_hour: int,
) -> Received:
    dry_run, count = check_envelope(body, max_records)
    digest = hashlib.sha256(body).digest()
    async with pool.acquire() as conn, conn.transaction():
        # A second request with this key while the first is still being stored: 409.
        if not await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock($1)", lock_key(sender.client_id, key)
        ):
            raise Conflict("a batch with this Idempotency-Key is still being stored; retry shortly")
        existing = await conn.fetchrow(
            "SELECT id, body_sha256, record_count FROM update_batches"
            " WHERE client_id = $1 AND idempotency_key = $2",
            sender.client_id,
            key,
        )
        if existing is not None:
            if existing["body_sha256"] != digest:
                raise ValidationFailed(
                    "this Idempotency-Key was already used with a different body; "
                    "use a new key for a new batch"
                )
            return Received(existing["id"], existing["record_count"], created=False)
        await _check_budget(conn, sender.agreement_id, count, records_per_hour)
        batch_id = await conn.fetchval(
            """INSERT INTO update_batches (client_id, agreement_id, organization_id,
                   idempotency_key, body_sha256, body, dry_run, record_count, update_kinds)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
            sender.client_id,
            sender.agreement_id,
            sender.organization_id,
            key,
            digest,
            body,
            dry_run,
            count,
            sorted(sender.update_kinds),
        )
        await conn.execute("SELECT pg_notify('nser_updates', $1)", str(batch_id))
    return Received(batch_id, count, created=True)


async def enqueue_staff(
    conn: asyncpg.Connection, client_id: str, key: str, records: list[dict[str, Any]]
) -> uuid.UUID:
    """Queue a batch from registry staff (a grievance's re-survey), inside the caller's
    transaction: the envelope is checked as a partner's is, the batch has no agreement, its
    records may be ``household_survey`` only, and its history is marked ``staff``. The
    worker is woken at commit. ``key`` is the caller's idempotency key (unique per staff
    client): a key already used is a 409."""
    body = orjson.dumps({"records": records})
    _, count = check_envelope(body, len(records))
    batch_id: uuid.UUID | None = await conn.fetchval(
        """INSERT INTO update_batches (client_id, agreement_id, organization_id, source,
               idempotency_key, body_sha256, body, dry_run, record_count, update_kinds)
           VALUES ($1, NULL, NULL, 'staff', $2, $3, $4, false, $5, $6)
           ON CONFLICT (client_id, idempotency_key) DO NOTHING RETURNING id""",
        client_id,
        key,
        hashlib.sha256(body).digest(),
        body,
        count,
        list(STAFF_UPDATE_KINDS),
    )
    if batch_id is None:
        raise Conflict(f"a staff batch with the key {key!r} was already queued")
    await conn.execute("SELECT pg_notify('nser_updates', $1)", str(batch_id))
    return batch_id


GET_ENDPOINT = "/v1/partner/updates/{batch_id}"


async def get_batch(
    pool: asyncpg.Pool, batch_id: uuid.UUID, caller: Principal, *, limit: int | None = None
) -> dict[str, Any]:
    """A partner's own batch with every record's outcome; 404 for anyone else's. Reading
    the outcomes (which name the households and members matched) is audited."""
    async with pool.acquire() as conn, conn.transaction():
        batch = await conn.fetchrow(
            """SELECT id, status, dry_run, record_count, received_at, finished_at,
                      stopped_reason
                 FROM update_batches WHERE id = $1 AND client_id = $2""",
            batch_id,
            caller.client_id,
        )
        if batch is None:
            raise NotFound(f"no batch {batch_id} for this client")
        counts = await conn.fetch(
            "SELECT outcome, count(*) AS n FROM update_results WHERE batch_id = $1 GROUP BY 1",
            batch_id,
        )
        results = await conn.fetch(
            """SELECT ref, outcome, reasons, household_id, member_id FROM update_results
                WHERE batch_id = $1 ORDER BY position LIMIT $2""",
            batch_id,
            limit,
        )
        await audit.append(
            conn,
            audit.AuditRecord.of(
                caller,
                endpoint=GET_ENDPOINT,
                filters={"batch_id": batch_id, "results": limit != 0},
                dimensions=[],
                households=len({r["household_id"] for r in results} - {None}),
                members=len({r["member_id"] for r in results} - {None}),
            ),
        )
    return {
        "batch_id": str(batch["id"]),
        "status": batch["status"],
        "dry_run": batch["dry_run"],
        "records": batch["record_count"],
        "received_at": batch["received_at"].isoformat(),
        "finished_at": batch["finished_at"].isoformat() if batch["finished_at"] else None,
        "stopped": batch["stopped_reason"],
        "counts": {**dict.fromkeys(OUTCOMES, 0), **{r["outcome"]: r["n"] for r in counts}},
        "results": [dict(r) for r in results],
    }
