"""The audit trail: append-only, hash-chained rows of who received what, how much, when.

Appends are serialized with a transaction-level advisory lock, so each row's ``prev_hash``
is the hash of the row just before it. The chain is keyed:
``hash = HMAC-SHA-256(key, prev_hash || canonical row)``, where the key is an audit key
kept outside the database (``keys``) and the canonical row includes the id, the timestamp
and the key's id, which the row also stores (``key_id``). An edit, a removal or a
reordering breaks the chain at the first affected row, and someone with the database but
without the key cannot recompute it.

Rows written before audit keys keep their plain ``sha256(prev_hash || canonical row)`` and
``key_id = 'legacy'``; ``nser db upgrade`` sealed them with one keyed row (``SEAL_ENDPOINT``)
when keys came. The verifier accepts unkeyed rows only at the start of the log and only
followed by that seal, so relabelling keyed rows as unkeyed, or rewriting the whole log
unkeyed, is caught too.

**Verifying** walks the chain row by row (``verify``). A run that succeeds records a
*checkpoint* (``audit_checkpoints``): the last row it verified, that row's hash, how many
rows (per key) the chain holds up to it, when, whether the walk started at the beginning,
all sealed with an HMAC under the current audit key (``checkpoint_bytes``; the key named).
The next run is incremental: it checks the latest checkpoint's seal, that the row it ends
at is still there with the same hash, and walks on from there, so its cost is the rows
added since. It cannot see an earlier row edited in place (its successor still names the
hash it had); only ``full`` (``nser audit verify --full``), which ignores checkpoints and
walks from the start, can; run it periodically. A checkpoint made without the key does
not verify and stops the run; one deleted only makes the next run start further back.

The keys are the process's: ``use_keyring`` (``create_app`` calls it with its settings),
else those of ``get_settings()`` (the CLI, ``nser worker``).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import orjson

from app.logging import request_id_var
from app.services.audit import keys
from app.settings import Settings, get_settings

GENESIS = bytes(32)
APPEND_LOCK = 0x6E736572_61756474  # "nseraudt": serializes appends (and the seal)
SEAL_ENDPOINT = "nser db upgrade: seal of the rows written before audit keys"
# A checkpoint's MAC input starts with this, so it can never be taken for a row's.
CHECKPOINT_DOMAIN = b"nser audit checkpoint v1\n"
PROGRESS_EVERY = 10_000

_keyring: keys.Keyring | None = None


def keyring_of(settings: Settings) -> keys.Keyring:
    """The audit keys of ``settings`` (raises ``keys.InvalidAuditKeys``)."""
    return keys.keyring(
        settings.audit_keys.get_secret_value(),
        settings.key_encryption_secret.get_secret_value(),
    )


def use_keyring(keyring: keys.Keyring) -> None:
    """Sign and verify with ``keyring`` in this process from now on."""
    global _keyring
    _keyring = keyring


def current_keyring() -> keys.Keyring:
    if _keyring is None:
        use_keyring(keyring_of(get_settings()))
    assert _keyring is not None
    return _keyring


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


def canonical(row_id: int, at: datetime, rec: dict[str, Any], key_id: str | None = None) -> bytes:
    """The row as hashed: its fields in a fixed order, as JSON; a keyed row's key id last
    (rows written before keys have none)."""
    named = [] if key_id is None else [key_id]
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
            *named,
        ],
        option=orjson.OPT_SORT_KEYS,
    )


def row_hash(
    prev_hash: bytes, row_id: int, at: datetime, rec: dict[str, Any], key: keys.AuditKey | None
) -> bytes:
    """A keyed row's HMAC under ``key``; with no key, the plain SHA-256 of rows written
    before audit keys."""
    if key is None:
        return hashlib.sha256(prev_hash + canonical(row_id, at, rec)).digest()
    return key.mac(prev_hash + canonical(row_id, at, rec, key.id))


def seal_filters(unkeyed_rows: int, head: bytes) -> dict[str, str]:
    """What the seal of the unkeyed rows records: how many, and the last one's hash."""
    return {"unkeyed_rows": str(unkeyed_rows), "unkeyed_head": head.hex()}


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
    key = current_keyring().current
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
        prev = await conn.fetchval("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
        row_id: int = await conn.fetchval(
            "SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))"
        )
        at: datetime = await conn.fetchval("SELECT clock_timestamp()")
        prev_hash = bytes(prev) if prev is not None else GENESIS
        await conn.execute(
            """INSERT INTO audit_log (id, at, actor_type, client_id, agreement_id,
                   organization_id, endpoint, filters, dimensions, households, members,
                   request_id, key_id, prev_hash, hash)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14,
                       $15)""",
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
            key.id,
            prev_hash,
            row_hash(prev_hash, row_id, at, rec, key),
        )
    return row_id


async def append_with_pool(pool: asyncpg.Pool, record: AuditRecord) -> int:
    """Append and commit on a connection of its own (before a stream's first byte)."""
    async with pool.acquire() as conn:
        return await append(conn, record)


@dataclass(frozen=True)
class Checkpoint:
    """Where a successful verification got to (a row of ``audit_checkpoints``)."""

    id: int
    at: datetime
    last_id: int
    last_hash: bytes
    rows: int  # rows of the chain from its start to last_id
    rows_per_key: dict[str, int]
    full: bool  # walked from the start (``--full``, or no checkpoint before it)
    key_id: str


def checkpoint_bytes(cp: Checkpoint) -> bytes:
    """What a checkpoint's MAC covers: every field but the MAC, in a fixed order, as JSON."""
    return CHECKPOINT_DOMAIN + orjson.dumps(
        [
            cp.id,
            cp.at.astimezone(UTC).isoformat(),
            cp.last_id,
            cp.last_hash.hex(),
            cp.rows,
            cp.rows_per_key,
            cp.full,
            cp.key_id,
        ],
        option=orjson.OPT_SORT_KEYS,
    )


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rows: int  # the chain's rows up to the last one verified (or the first that breaks it)
    problem: str | None = None
    # Rows per key id ('legacy': written before audit keys), when the chain is intact.
    rows_per_key: dict[str, int] = field(default_factory=dict)
    checked: int = 0  # rows this run read and checked
    since: Checkpoint | None = None  # the checkpoint it started after (None: the start)
    checkpoint: int | None = None  # the checkpoint it recorded (None: nothing new to record)


def _is_seal(rec: dict[str, Any], unkeyed_rows: int) -> bool:
    filters: dict[str, Any] = rec["filters"]
    endpoint: str = rec["endpoint"]
    return endpoint == SEAL_ENDPOINT and filters.get("unkeyed_rows") == str(unkeyed_rows)


@dataclass
class _Walk:
    """The chain walked so far: the last row verified, the rows from the start (per key)."""

    keyring: keys.Keyring
    prev_hash: bytes = GENESIS
    prev_id: int | None = None
    prev_at: datetime | None = None
    count: int = 0
    per_key: Counter[str] = field(default_factory=Counter)

    def step(self, row: asyncpg.Record) -> str | None:
        """Check the next row; what is wrong with it, or None (then it is the last one)."""
        self.count += 1
        rec = dict(row)
        rec["filters"] = orjson.loads(rec["filters"])
        where = f"row {row['id']}"
        if bytes(row["prev_hash"]) != self.prev_hash:
            after = f"row {self.prev_id}" if self.prev_id is not None else "the start of the log"
            return (
                f"{where} does not follow {after}: a row was removed, inserted or moved out "
                "of order"
            )
        key_id: str = row["key_id"]
        unkeyed = self.per_key[keys.UNKEYED]
        keyed = self.count - 1 - unkeyed
        key: keys.AuditKey | None = None
        if key_id == keys.UNKEYED:
            if keyed:
                return (
                    f"{where} claims to be unkeyed (written before audit keys) after keyed "
                    "rows: it was rewritten without the audit key"
                )
        else:
            key = self.keyring.get(key_id)
            if key is None:
                return (
                    f"{where} is signed with audit key {key_id!r}, which is not configured: "
                    "add it to NSER_AUDIT_KEYS (keep every key whose rows are kept)"
                )
            if unkeyed and not keyed and not _is_seal(rec, unkeyed):
                return (
                    f"{where} follows {unkeyed} unkeyed rows but is not their seal (the keyed "
                    "row `nser db upgrade` wrote when audit keys came): the unkeyed rows may "
                    "have been rewritten without the audit key"
                )
        if row_hash(self.prev_hash, row["id"], row["at"], rec, key) != bytes(row["hash"]):
            wrong_key = "" if key is None else f", or audit key {key_id!r} has the wrong secret"
            return f"{where} was altered (its hash does not match{wrong_key})"
        if self.prev_at is not None and row["at"] < self.prev_at:
            return f"{where} is out of time order"
        self.per_key[key_id] += 1
        self.prev_hash, self.prev_id, self.prev_at = bytes(row["hash"]), row["id"], row["at"]
        return None


async def _latest_checkpoint(conn: asyncpg.Connection) -> tuple[Checkpoint, bytes] | None:
    """The last checkpoint recorded and its MAC."""
    row = await conn.fetchrow("SELECT * FROM audit_checkpoints ORDER BY id DESC LIMIT 1")
    if row is None:
        return None
    cp = Checkpoint(
        row["id"],
        row["at"],
        row["last_id"],
        bytes(row["last_hash"]),
        row["rows"],
        orjson.loads(row["rows_per_key"]),
        row["full"],
        row["key_id"],
    )
    return cp, bytes(row["mac"])


def _checkpoint_problem(cp: Checkpoint, mac: bytes, keyring: keys.Keyring) -> str | None:
    """Why the checkpoint cannot be trusted, or None."""
    key = keyring.get(cp.key_id)
    if key is None:
        return (
            f"checkpoint {cp.id} is sealed with audit key {cp.key_id!r}, which is not "
            "configured: add it to NSER_AUDIT_KEYS"
        )
    if not hmac.compare_digest(key.mac(checkpoint_bytes(cp)), mac):
        return (
            f"checkpoint {cp.id} was altered or made without the audit key (its MAC does not "
            "match); run `nser audit verify --full`"
        )
    return None


Progress = Callable[[int, int], None]


async def verify(
    conn: asyncpg.Connection,
    keyring: keys.Keyring | None = None,
    *,
    full: bool = False,
    progress: Progress | None = None,
) -> Verdict:
    """Walk the chain in id order, each row checked with the key it names; name the first
    row that breaks it. Incremental unless ``full``: from the last checkpoint on (after
    checking its seal and that the row it ends at is there, unchanged), else from the start.
    A successful walk that checked a row records a new checkpoint, sealed with the current
    audit key. ``progress(done, total)`` follows the walk (in ids)."""
    keyring = keyring or current_keyring()
    walk = _Walk(keyring)
    since: Checkpoint | None = None
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        latest = None if full else await _latest_checkpoint(conn)
        if latest is not None:
            since, mac = latest
            problem = _checkpoint_problem(since, mac, keyring)
            if problem is None:
                problem = await _resume(conn, walk, since)
            if problem is not None:
                return Verdict(False, since.rows, problem, since=since)
        start = walk.prev_id or 0
        last = await conn.fetchval("SELECT max(id) FROM audit_log")
        total = max((last or 0) - start, 0)
        checked = 0
        async for row in conn.cursor(
            "SELECT * FROM audit_log WHERE id > $1 ORDER BY id", start, prefetch=1000
        ):
            checked += 1
            problem = walk.step(row)
            if problem is not None:
                return Verdict(False, walk.count, problem, checked=checked, since=since)
            if progress is not None and checked % PROGRESS_EVERY == 0:
                progress(row["id"] - start, total)
        if progress is not None:
            progress(total, total)
    if walk.per_key[keys.UNKEYED] == walk.count and walk.count:
        return Verdict(
            False,
            walk.count,
            f"the log ends with {walk.count} unkeyed rows and no seal (`nser db upgrade` seals "
            "the rows written before audit keys with a keyed row): they may have been "
            "rewritten without the audit key",
            checked=checked,
            since=since,
        )
    recorded = None
    if checked:
        recorded = await _record_checkpoint(conn, walk, keyring.current, full=since is None)
    return Verdict(
        True,
        walk.count,
        rows_per_key=dict(walk.per_key),
        checked=checked,
        since=since,
        checkpoint=recorded,
    )


async def _resume(conn: asyncpg.Connection, walk: _Walk, cp: Checkpoint) -> str | None:
    """Start ``walk`` after the checkpoint's row, which must still be there, unchanged."""
    row = await conn.fetchrow("SELECT * FROM audit_log WHERE id = $1", cp.last_id)
    if row is None:
        return (
            f"row {cp.last_id}, the last one checkpoint {cp.id} verified, is gone: rows were "
            "removed or the log was cut"
        )
    rec = dict(row)
    rec["filters"] = orjson.loads(rec["filters"])
    key = None if row["key_id"] == keys.UNKEYED else walk.keyring.get(row["key_id"])
    if key is None and row["key_id"] != keys.UNKEYED:
        return (
            f"row {cp.last_id} is signed with audit key {row['key_id']!r}, which is not "
            "configured: add it to NSER_AUDIT_KEYS (keep every key whose rows are kept)"
        )
    if bytes(row["hash"]) != cp.last_hash or (
        row_hash(bytes(row["prev_hash"]), row["id"], row["at"], rec, key) != cp.last_hash
    ):
        return (
            f"row {cp.last_id} changed since checkpoint {cp.id} verified it (it is not the "
            "row verified); run `nser audit verify --full` to find the first altered row"
        )
    walk.prev_hash, walk.prev_id, walk.prev_at = cp.last_hash, cp.last_id, row["at"]
    walk.count = cp.rows
    walk.per_key = Counter(cp.rows_per_key)
    return None


async def _record_checkpoint(
    conn: asyncpg.Connection, walk: _Walk, key: keys.AuditKey, *, full: bool
) -> int:
    assert walk.prev_id is not None
    cp_id: int = await conn.fetchval(
        "SELECT nextval(pg_get_serial_sequence('audit_checkpoints', 'id'))"
    )
    at: datetime = await conn.fetchval("SELECT clock_timestamp()")
    cp = Checkpoint(
        cp_id,
        at,
        walk.prev_id,
        walk.prev_hash,
        walk.count,
        dict(sorted(walk.per_key.items())),
        full,
        key.id,
    )
    await conn.execute(
        """INSERT INTO audit_checkpoints (id, at, last_id, last_hash, rows, rows_per_key,
                                          "full", key_id, mac)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9)""",
        cp.id,
        cp.at,
        cp.last_id,
        cp.last_hash,
        cp.rows,
        orjson.dumps(cp.rows_per_key).decode(),
        cp.full,
        cp.key_id,
        key.mac(checkpoint_bytes(cp)),
    )
    return cp_id
