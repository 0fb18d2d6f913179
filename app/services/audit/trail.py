"""The audit trail: append-only, hash-chained rows of who received what, how much, when.

The log is ``NSER_AUDIT_CHAINS`` (16) independent hash chains. A row belongs to one
(``chain``) and its ``prev_hash`` is the hash of the previous row *of that chain*. Appends
to a chain are serialized with that chain's transaction-level advisory lock
(``APPEND_LOCK + chain``), held until the append's transaction commits, so a chain's rows
get increasing ids in the order they commit, and up to N appends commit at once. An append
takes the first chain whose lock is free from a random one on (``audit_chain_claim``, a
database function: the lock, then the chain's head, the next id and the time, in one round
trip; it refuses a REPEATABLE READ transaction, whose snapshot could miss the head).

The chain is keyed: ``hash = HMAC-SHA-256(key, prev_hash || canonical row)``, where the key
is an audit key kept outside the database (``keys``) and the canonical row includes the id,
the timestamp, the key's id, which the row also stores (``key_id``), and the chain (unless
it is chain 0, so that the rows written when there was one chain keep their hashes). An
edit, a removal, a reordering or a move to another chain breaks a chain at the first
affected row, and someone with the database but without the key cannot recompute it.

Rows written before audit keys keep their plain ``sha256(prev_hash || canonical row)`` and
``key_id = 'legacy'``; ``nser db upgrade`` sealed them with one keyed row (``SEAL_ENDPOINT``)
when keys came. The verifier accepts unkeyed rows only at the start of the log (chain 0)
and only followed by that seal, so relabelling keyed rows as unkeyed, or rewriting the
whole log unkeyed, is caught too.

**Verifying** walks the log in id order, each row checked against the previous row of its
chain (``verify``). A run that succeeds records a *checkpoint* (``audit_checkpoints``):
every chain's last row verified, its hash and rows, the last row of all, how many rows (per
key) the log holds up to there, when, whether the walk started at the beginning, all
sealed with an HMAC under the current audit key (``checkpoint_bytes``; the key named). The
next run is incremental: it checks the latest checkpoint's seal, that each chain's row it
ends at is still there with the same hash, and walks each chain on from there, so its cost
is the rows added since. It cannot see an earlier row edited in place (its successor still
names the hash it had); only ``full`` (``nser audit verify --full``), which ignores
checkpoints and walks from the start, can; run it periodically. A checkpoint made without
the key does not verify and stops the run; one deleted only makes the next run start
further back.

The keys and the number of chains are the process's: ``use_keyring`` and ``use_chains``
(``create_app`` calls them with its settings), else those of ``get_settings()`` (the CLI,
``nser worker``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
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
# "nseraudt": chain c's appends take the lock APPEND_LOCK + c (chain 0's is the lock of the
# one chain there was, which also serialized the seal of the unkeyed rows).
APPEND_LOCK = 0x6E736572_61756474
MAX_CHAINS = 256  # chains 0-255 (a CHECK on audit_log.chain)
SEAL_ENDPOINT = "nser db upgrade: seal of the rows written before audit keys"
# A checkpoint's MAC input starts with this, so it can never be taken for a row's; v2 is a
# checkpoint that records each chain's head (v1: the one chain there was).
CHECKPOINT_DOMAIN = b"nser audit checkpoint v1\n"
CHECKPOINT_DOMAIN_CHAINS = b"nser audit checkpoint v2\n"
PROGRESS_EVERY = 10_000

_keyring: keys.Keyring | None = None
_chains: int | None = None


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


def use_chains(chains: int) -> None:
    """Append to ``chains`` chains (0 to chains - 1) in this process from now on."""
    global _chains
    if not 1 <= chains <= MAX_CHAINS:
        raise ValueError(f"audit chains: 1 to {MAX_CHAINS}, not {chains}")
    _chains = chains


def current_chains() -> int:
    if _chains is None:
        use_chains(get_settings().audit_chains)
    assert _chains is not None
    return _chains


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


def canonical(
    row_id: int, at: datetime, rec: dict[str, Any], key_id: str | None = None, chain: int = 0
) -> bytes:
    """The row as hashed: its fields in a fixed order, as JSON; then a keyed row's key id
    (rows written before keys have none), then its chain unless it is chain 0 (the rows
    written when there was one chain have none)."""
    named: list[str | int] = [] if key_id is None else [key_id]
    if chain:
        named.append(chain)
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
    prev_hash: bytes,
    row_id: int,
    at: datetime,
    rec: dict[str, Any],
    key: keys.AuditKey | None,
    chain: int = 0,
) -> bytes:
    """A keyed row's HMAC under ``key``; with no key, the plain SHA-256 of rows written
    before audit keys (all in chain 0)."""
    if key is None:
        return hashlib.sha256(prev_hash + canonical(row_id, at, rec, None, chain)).digest()
    return key.mac(prev_hash + canonical(row_id, at, rec, key.id, chain))


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
    """Append one row: inside the caller's transaction if there is one (it must be READ
    COMMITTED; the chain's lock is held until that transaction ends), else in its own."""
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
    if conn.is_in_transaction():
        return await _append(conn, rec)
    async with conn.transaction():
        return await _append(conn, rec)


_INSERT = """
INSERT INTO audit_log (id, at, actor_type, client_id, agreement_id, organization_id, endpoint,
                       filters, dimensions, households, members, request_id, key_id, chain,
                       prev_hash, hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14, $15, $16)
"""


async def _append(conn: asyncpg.Connection, rec: dict[str, Any]) -> int:
    key = current_keyring().current
    chains = current_chains()
    # The lock of the first free chain from a random one on, then that chain's head, the
    # next id and the time (migration 0019): two round trips hold the lock, this and the
    # INSERT, then the commit.
    claim = await conn.fetchrow(
        "SELECT * FROM audit_chain_claim($1, $2, $3)",
        APPEND_LOCK,
        chains,
        secrets.randbelow(chains),
    )
    assert claim is not None
    chain: int = claim["claimed"]
    row_id: int = claim["next_id"]
    at: datetime = claim["next_at"]
    prev_hash = bytes(claim["head"]) if claim["head"] is not None else GENESIS
    await conn.execute(
        _INSERT,
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
        chain,
        prev_hash,
        row_hash(prev_hash, row_id, at, rec, key, chain),
    )
    return row_id


async def append_with_pool(pool: asyncpg.Pool, record: AuditRecord) -> int:
    """Append and commit on a connection of its own (before a stream's first byte)."""
    async with pool.acquire() as conn:
        return await append(conn, record)


@dataclass(frozen=True)
class Head:
    """A chain's last row verified: its id and hash, and the chain's rows up to it."""

    id: int
    hash: bytes
    rows: int


@dataclass(frozen=True)
class Checkpoint:
    """Where a successful verification got to (a row of ``audit_checkpoints``)."""

    id: int
    at: datetime
    last_id: int  # the last row verified, of all chains
    last_hash: bytes
    rows: int  # rows of the log up to there
    rows_per_key: dict[str, int]
    full: bool  # walked from the start (``--full``, or no checkpoint before it)
    key_id: str
    # Each chain's head; None in a checkpoint made when there was one chain (its head is
    # last_id then).
    heads: dict[int, Head] | None = None

    def chain_heads(self) -> dict[int, Head]:
        if self.heads is not None:
            return self.heads
        return {0: Head(self.last_id, self.last_hash, self.rows)}


def _heads_json(heads: dict[int, Head]) -> dict[str, list[Any]]:
    return {str(c): [h.id, h.hash.hex(), h.rows] for c, h in sorted(heads.items())}


def checkpoint_bytes(cp: Checkpoint) -> bytes:
    """What a checkpoint's MAC covers: every field but the MAC, in a fixed order, as JSON
    (after a domain that says whether it records the chains' heads)."""
    fields: list[Any] = [
        cp.id,
        cp.at.astimezone(UTC).isoformat(),
        cp.last_id,
        cp.last_hash.hex(),
        cp.rows,
        cp.rows_per_key,
        cp.full,
        cp.key_id,
    ]
    if cp.heads is None:
        return CHECKPOINT_DOMAIN + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    fields.append(_heads_json(cp.heads))
    return CHECKPOINT_DOMAIN_CHAINS + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rows: int  # the log's rows up to the last one verified (or the first that breaks it)
    problem: str | None = None
    # Rows per key id ('legacy': written before audit keys), when the chain is intact.
    rows_per_key: dict[str, int] = field(default_factory=dict)
    checked: int = 0  # rows this run read and checked
    since: Checkpoint | None = None  # the checkpoint it started after (None: the start)
    checkpoint: int | None = None  # the checkpoint it recorded (None: nothing new to record)
    # Each chain's head when intact: the chains and their rows.
    heads: dict[int, Head] = field(default_factory=dict)


def _is_seal(rec: dict[str, Any], unkeyed_rows: int) -> bool:
    filters: dict[str, Any] = rec["filters"]
    endpoint: str = rec["endpoint"]
    return endpoint == SEAL_ENDPOINT and filters.get("unkeyed_rows") == str(unkeyed_rows)


@dataclass
class _ChainState:
    """A chain walked so far: its last row verified, its rows."""

    hash: bytes = GENESIS
    id: int | None = None
    at: datetime | None = None
    rows: int = 0


def _of_chain(chain: int) -> str:
    return "" if chain == 0 else f" of chain {chain}"


@dataclass
class _Walk:
    """The log walked so far: each chain's last row verified, the rows from the start (in
    all and per key), the last row verified of all."""

    keyring: keys.Keyring
    chains: dict[int, _ChainState] = field(default_factory=dict)
    count: int = 0
    per_key: Counter[str] = field(default_factory=Counter)
    last_id: int | None = None
    last_hash: bytes = GENESIS

    def step(self, row: asyncpg.Record) -> str | None:
        """Check the next row (in id order); what is wrong with it, or None."""
        self.count += 1
        rec = dict(row)
        rec["filters"] = orjson.loads(rec["filters"])
        chain: int = row["chain"]
        state = self.chains.get(chain)
        if state is None:
            state = _ChainState()
        where = f"row {row['id']}"
        if bytes(row["prev_hash"]) != state.hash:
            if state.id is not None:
                after = f"row {state.id}{_of_chain(chain)}"
            else:
                after = "the start of the log" if chain == 0 else f"the start of chain {chain}"
            return (
                f"{where} does not follow {after}: a row was removed, inserted or moved out "
                "of order"
            )
        key_id: str = row["key_id"]
        unkeyed = self.per_key[keys.UNKEYED]
        keyed = self.count - 1 - unkeyed
        key: keys.AuditKey | None = None
        if key_id == keys.UNKEYED:
            if keyed or chain != 0:
                return (
                    f"{where} claims to be unkeyed (written before audit keys) after keyed "
                    "rows or outside chain 0: it was rewritten without the audit key"
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
        if row_hash(state.hash, row["id"], row["at"], rec, key, chain) != bytes(row["hash"]):
            wrong_key = "" if key is None else f", or audit key {key_id!r} has the wrong secret"
            return f"{where} was altered (its hash does not match{wrong_key})"
        if state.at is not None and row["at"] < state.at:
            return f"{where} is out of time order"
        self.per_key[key_id] += 1
        state.hash, state.id, state.at = bytes(row["hash"]), row["id"], row["at"]
        state.rows += 1
        self.chains[chain] = state
        self.last_id, self.last_hash = row["id"], state.hash
        return None

    def heads(self) -> dict[int, Head]:
        return {
            c: Head(s.id, s.hash, s.rows)
            for c, s in sorted(self.chains.items())
            if s.id is not None
        }


async def _latest_checkpoint(conn: asyncpg.Connection) -> tuple[Checkpoint, bytes] | None:
    """The last checkpoint recorded and its MAC."""
    row = await conn.fetchrow("SELECT * FROM audit_checkpoints ORDER BY id DESC LIMIT 1")
    if row is None:
        return None
    heads = None
    if row["heads"] is not None:
        heads = {
            int(c): Head(int(h[0]), bytes.fromhex(h[1]), int(h[2]))
            for c, h in orjson.loads(row["heads"]).items()
        }
    cp = Checkpoint(
        row["id"],
        row["at"],
        row["last_id"],
        bytes(row["last_hash"]),
        row["rows"],
        orjson.loads(row["rows_per_key"]),
        row["full"],
        row["key_id"],
        heads,
    )
    return cp, bytes(row["mac"])


async def latest_checkpoint(
    conn: asyncpg.Connection, keyring: keys.Keyring | None = None
) -> tuple[Checkpoint, str | None] | None:
    """The last checkpoint recorded, and why its seal does not hold (None: it holds)."""
    latest = await _latest_checkpoint(conn)
    if latest is None:
        return None
    cp, mac = latest
    return cp, _checkpoint_problem(cp, mac, keyring or current_keyring())


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

# The chains present: a loose scan of the (chain, id) index, one probe per chain.
_CHAINS_PRESENT = """
WITH RECURSIVE present AS (
    SELECT min(chain) AS chain FROM audit_log
    UNION ALL
    SELECT (SELECT min(a.chain) FROM audit_log a WHERE a.chain > p.chain)
      FROM present p WHERE p.chain IS NOT NULL
)
SELECT chain FROM present WHERE chain IS NOT NULL
"""


def _after_heads(chains: int) -> str:
    """Every chain's rows after its head ($2k+2: 0 from its start), in id order: one
    condition per chain, which PostgreSQL answers from the primary key or the (chain, id)
    index, whichever reads fewer rows for the values given."""
    arms = " OR ".join(f"(chain = ${2 * i + 1} AND id > ${2 * i + 2})" for i in range(chains))
    return f"SELECT * FROM audit_log WHERE {arms} ORDER BY id"


async def verify(
    conn: asyncpg.Connection,
    keyring: keys.Keyring | None = None,
    *,
    full: bool = False,
    progress: Progress | None = None,
) -> Verdict:
    """Walk the log in id order, each row checked against the previous row of its chain
    with the key it names; name the first row that breaks a chain. Incremental unless
    ``full``: each chain from the last checkpoint's head on (after checking its seal and
    that each head is there, unchanged), else from the start. A successful walk that
    checked a row records a new checkpoint, sealed with the current audit key.
    ``progress(done, total)`` follows the walk (in ids)."""
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
        if since is None:
            start = 0
            rows = conn.cursor("SELECT * FROM audit_log ORDER BY id", prefetch=1000)
        else:
            heads = since.chain_heads()
            start = min(h.id for h in heads.values())
            present = {r["chain"] for r in await conn.fetch(_CHAINS_PRESENT)}
            chains = sorted(present | set(heads))
            after = [x for c in chains for x in (c, heads[c].id if c in heads else 0)]
            rows = conn.cursor(_after_heads(len(chains)), *after, prefetch=1000)
        last = await conn.fetchval("SELECT max(id) FROM audit_log")
        total = max((last or 0) - start, 0)
        checked = 0
        async for row in rows:
            checked += 1
            problem = walk.step(row)
            if problem is not None:
                return Verdict(False, walk.count, problem, checked=checked, since=since)
            if progress is not None and checked % PROGRESS_EVERY == 0:
                progress(max(row["id"] - start, 0), total)
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
        heads=walk.heads(),
    )


async def _resume(conn: asyncpg.Connection, walk: _Walk, cp: Checkpoint) -> str | None:
    """Start ``walk`` after the checkpoint's heads, which must still be there, unchanged."""
    heads = cp.chain_heads()
    found = {
        row["id"]: row
        for row in await conn.fetch(
            "SELECT * FROM audit_log WHERE id = ANY($1::bigint[])", [h.id for h in heads.values()]
        )
    }
    for chain, head in sorted(heads.items()):
        row = found.get(head.id)
        if row is None:
            return (
                f"row {head.id}, the last one checkpoint {cp.id} verified{_of_chain(chain)}, "
                "is gone: rows were removed or the log was cut"
            )
        rec = dict(row)
        rec["filters"] = orjson.loads(rec["filters"])
        key = None if row["key_id"] == keys.UNKEYED else walk.keyring.get(row["key_id"])
        if key is None and row["key_id"] != keys.UNKEYED:
            return (
                f"row {head.id} is signed with audit key {row['key_id']!r}, which is not "
                "configured: add it to NSER_AUDIT_KEYS (keep every key whose rows are kept)"
            )
        if (
            row["chain"] != chain
            or bytes(row["hash"]) != head.hash
            or row_hash(bytes(row["prev_hash"]), row["id"], row["at"], rec, key, chain) != head.hash
        ):
            return (
                f"row {head.id} changed since checkpoint {cp.id} verified it (it is not the "
                "row verified); run `nser audit verify --full` to find the first altered row"
            )
        walk.chains[chain] = _ChainState(head.hash, head.id, row["at"], head.rows)
    walk.last_id, walk.last_hash = cp.last_id, cp.last_hash
    walk.count = cp.rows
    walk.per_key = Counter(cp.rows_per_key)
    return None


async def _record_checkpoint(
    conn: asyncpg.Connection, walk: _Walk, key: keys.AuditKey, *, full: bool
) -> int:
    assert walk.last_id is not None
    cp_id: int = await conn.fetchval(
        "SELECT nextval(pg_get_serial_sequence('audit_checkpoints', 'id'))"
    )
    at: datetime = await conn.fetchval("SELECT clock_timestamp()")
    cp = Checkpoint(
        cp_id,
        at,
        walk.last_id,
        walk.last_hash,
        walk.count,
        dict(sorted(walk.per_key.items())),
        full,
        key.id,
        walk.heads(),
    )
    assert cp.heads is not None
    await conn.execute(
        """INSERT INTO audit_checkpoints (id, at, last_id, last_hash, rows, rows_per_key,
                                          "full", key_id, heads, mac)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9::jsonb, $10)""",
        cp.id,
        cp.at,
        cp.last_id,
        cp.last_hash,
        cp.rows,
        orjson.dumps(cp.rows_per_key).decode(),
        cp.full,
        cp.key_id,
        orjson.dumps(_heads_json(cp.heads)).decode(),
        key.mac(checkpoint_bytes(cp)),
    )
    return cp_id
