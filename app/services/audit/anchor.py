"""External anchors of the audit chain: every chain's head, signed, kept outside the database.

A hash chain shows a row edited, inserted or removed in its middle, but a chain whose
newest rows were deleted is still a valid chain, and so is an empty table; the checkpoints
in ``audit_checkpoints`` can be deleted with them. An *anchor* is a JSON document that
records, at one moment, each chain's head (its last row's id and hash) and rows, the rows
of the log and its last id, signed with Ed25519 by the current audit key's anchor key
(``keys.AuditKey.anchor_key``: derived from the audit key, so it lives where the audit keys
live, outside the database, and is kept as long as the rows it covers). Anchors are written
outside the database (an ``AnchorStore``: ``DirectoryStore``, one file per anchor in
``NSER_AUDIT_ANCHOR_DIR``, named so they sort by time, never overwritten), and
``nser audit verify`` checks the newest one: its signature, and that every chain still
reaches its anchored head with the same hash and at least its anchored rows. A log cut
back or truncated since then fails, naming each chain and the rows it lacks.

**Writing** (``write``): ``nser audit anchor``, ``nser worker`` every
``NSER_AUDIT_ANCHOR_SECONDS`` (when the log has grown, ``run_anchorer``), and every key
rotation (``nser keys rotate``, ``rotate-dci``, ``nser audit new-key``). The heads are read
in one ``REPEATABLE READ READ ONLY`` snapshot, which takes no lock an append waits for; the
rows per chain are the last checkpoint's (when its seal holds) plus a count of the rows
after its heads. A writer first checks the newest anchor against the same snapshot and
refuses to write when the log no longer reaches it: an anchor never records a log that
shrank, so the newest anchor is the one to check.

Why not the DCI signing key (also Ed25519, published in the JWKS)? Its private half is kept
in the database, whose tampering anchors are there to show, and a retired DCI key leaves
the JWKS after a day, while an anchor must verify for as long as the log is kept.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.services.audit import keys, trail
from app.services.audit.trail import Head
from app.settings import Settings

log = logging.getLogger("nser.audit")

FORMAT = "nser-audit-anchor/1"
# The signed bytes start with this, so a signature over an anchor is never one over
# anything else.
DOMAIN = b"nser audit anchor v1\n"
_NAME = re.compile(r"anchor-\d{8}T\d{12}Z-[0-9a-f]{8}\.json")


class AnchorError(Exception):
    """An anchor that cannot be read or does not verify, or one that may not be written."""


# --- the document ---------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """Every chain's head at one moment, as recorded (and signed) in an anchor file."""

    name: str
    at: datetime
    reason: str
    heads: dict[int, Head]
    key_id: str

    @property
    def rows(self) -> int:
        return sum(h.rows for h in self.heads.values())

    @property
    def last_id(self) -> int | None:
        return max((h.id for h in self.heads.values()), default=None)

    def label(self) -> str:
        return f"{self.name} of {self.at.isoformat(timespec='seconds')}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signed_bytes(body: dict[str, Any]) -> bytes:
    return DOMAIN + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def public_key_text(key: keys.AuditKey) -> str:
    """The anchor key's public half, base64url (the raw 32 bytes)."""
    raw = (
        key.anchor_key()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return _b64(raw)


def document(anchor: Anchor, key: keys.AuditKey) -> bytes:
    """The anchor as its file holds it: JSON, signed by ``key``'s anchor key over every
    other member (sorted, compact, after ``DOMAIN``)."""
    body: dict[str, Any] = {
        "format": FORMAT,
        "name": anchor.name,
        "at": anchor.at.astimezone(UTC).isoformat(),
        "reason": anchor.reason,
        "chains": {
            str(c): {"head_id": h.id, "head_hash": h.hash.hex(), "rows": h.rows}
            for c, h in sorted(anchor.heads.items())
        },
        "rows": anchor.rows,
        "last_id": anchor.last_id,
        "key_id": key.id,
        "public_key": public_key_text(key),
    }
    signature = key.anchor_key().sign(_signed_bytes(body))
    return orjson.dumps({**body, "signature": _b64(signature)}, option=orjson.OPT_INDENT_2)


def parse(name: str, data: bytes, keyring: keys.Keyring) -> Anchor:
    """The anchor in file ``name``; AnchorError saying why when it is not well formed, was
    altered, renamed, unsigned, or signed by a key that is not configured."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise AnchorError(f"anchor {name} is not JSON") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise AnchorError(f"anchor {name} is not an NSER audit anchor ({FORMAT})")
    signature = body.pop("signature", None)
    if not isinstance(signature, str) or not signature:
        raise AnchorError(f"anchor {name} is not signed")
    key_id = body.get("key_id")
    key = keyring.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        raise AnchorError(
            f"anchor {name} is signed with audit key {key_id!r}, which is not configured: "
            "add it to NSER_AUDIT_KEYS"
        )
    public: Ed25519PublicKey = key.anchor_key().public_key()
    try:
        public.verify(_unb64(signature), _signed_bytes(body))
    except (InvalidSignature, ValueError, binascii.Error) as exc:
        raise AnchorError(
            f"anchor {name} was altered or not signed with audit key {key_id!r} (its "
            "signature does not verify)"
        ) from exc
    # Signed, so written by this code: the members are as ``document`` made them.
    if body["name"] != name:
        raise AnchorError(
            f"anchor {name} was written as {body['name']}: an anchor copied under a later name"
        )
    try:
        heads = {
            int(c): Head(int(h["head_id"]), bytes.fromhex(h["head_hash"]), int(h["rows"]))
            for c, h in body["chains"].items()
        }
        return Anchor(name, datetime.fromisoformat(body["at"]), str(body["reason"]), heads, key.id)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AnchorError(f"anchor {name} is not an NSER audit anchor ({FORMAT})") from exc


# --- where anchors are kept -----------------------------------------------------------


class AnchorStore(Protocol):
    """Somewhere outside the database that keeps anchor files: one per name, never
    overwritten (a directory here; an S3-compatible bucket would be another)."""

    @property
    def where(self) -> str: ...

    def put(self, name: str, data: bytes) -> str:
        """Keep ``data`` as ``name`` (refusing an existing name); where it went."""
        ...

    def latest(self) -> tuple[str, bytes] | None:
        """The newest anchor's name and bytes (the last name in order), or None."""
        ...


class DirectoryStore:
    """Anchor files in a directory. Each is written to a temporary file, flushed to disk,
    then linked under its name (which fails rather than replace a file) and the directory
    flushed: a crash leaves a whole anchor or none."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def where(self) -> str:
        return str(self.path)

    def put(self, name: str, data: bytes) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / name
        temp = self.path / f".{name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.link(temp, final)  # FileExistsError: never overwritten
        finally:
            temp.unlink(missing_ok=True)
        directory = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return str(final)

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if _NAME.fullmatch(p.name))

    def latest(self) -> tuple[str, bytes] | None:
        found = self.names()
        if not found:
            return None
        return found[-1], (self.path / found[-1]).read_bytes()


def store_of(settings: Settings) -> DirectoryStore | None:
    """The anchor store of ``NSER_AUDIT_ANCHOR_DIR``; None when anchoring is off."""
    where = settings.audit_anchor_dir.strip()
    return DirectoryStore(Path(where)) if where else None


def new_name(at: datetime) -> str:
    """``anchor-YYYYMMDDTHHMMSSffffffZ-RANDOM.json``: names sort by time."""
    return f"anchor-{at.astimezone(UTC):%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(4)}.json"


def latest(store: AnchorStore, keyring: keys.Keyring) -> Anchor | None:
    """The newest anchor, verified (AnchorError when it does not verify), or None."""
    found = store.latest()
    if found is None:
        return None
    return parse(found[0], found[1], keyring)


# --- the chains against an anchor ------------------------------------------------------


_HEAD_ROWS = "SELECT id, chain, hash FROM audit_log WHERE id = ANY($1::bigint[])"

# Each chain's rows after a given id and the last of them (one range scan of the (chain, id)
# index per chain).
_ROWS_AFTER = """
SELECT h.chain, n.rows, n.last_id
  FROM unnest($1::int[], $2::bigint[]) AS h(chain, after)
 CROSS JOIN LATERAL (SELECT count(*) AS rows, max(a.id) AS last_id
                       FROM audit_log a WHERE a.chain = h.chain AND a.id > h.after) n
 WHERE n.rows > 0
"""


@dataclass(frozen=True)
class Shortfall:
    """A chain that no longer reaches its anchored head."""

    chain: int
    head: Head  # as anchored
    missing: int  # anchored rows no longer there
    changed: bool  # the head row is there but not as anchored (another hash or chain)


async def shortfalls(conn: asyncpg.Connection, anchor: Anchor) -> list[Shortfall]:
    """The chains whose anchored head is gone or changed (reads the heads by id; counts a
    chain's rows only when its head is gone)."""
    found = {
        row["id"]: row
        for row in await conn.fetch(_HEAD_ROWS, [h.id for h in anchor.heads.values()])
    }
    short = []
    for chain, head in sorted(anchor.heads.items()):
        row = found.get(head.id)
        if row is not None and row["chain"] == chain and bytes(row["hash"]) == head.hash:
            continue
        kept: int = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE chain = $1 AND id <= $2", chain, head.id
        )
        short.append(Shortfall(chain, head, max(head.rows - kept, 0), changed=row is not None))
    return short


def describe(anchor: Anchor, short: Iterable[Shortfall]) -> str:
    """One line: which chains no longer reach ``anchor`` and how many rows each lacks."""
    parts = []
    total = 0
    for s in short:
        total += s.missing
        if s.changed:
            parts.append(
                f"chain {s.chain}'s anchored head, row {s.head.id}, changed (another hash or "
                f"chain), {s.missing} of its {s.head.rows} anchored rows missing"
            )
        else:
            parts.append(
                f"chain {s.chain} lacks {s.missing} of its {s.head.rows} anchored rows (row "
                f"{s.head.id}, its head then, is gone)"
            )
    return (
        f"the audit log no longer reaches anchor {anchor.label()}: {'; '.join(parts)}; "
        f"{total} rows missing in all (the newest rows were deleted or the table truncated)"
    )


def short_rows(anchor: Anchor, heads: dict[int, Head]) -> str | None:
    """Why chains of ``heads`` (a verification's) hold fewer rows than anchored, or None."""
    parts = []
    total = 0
    for chain, head in sorted(anchor.heads.items()):
        now = heads[chain].rows if chain in heads else 0
        if now < head.rows:
            total += head.rows - now
            parts.append(f"chain {chain} holds {now} rows, {head.rows - now} fewer than anchored")
    if not parts:
        return None
    return (
        f"the audit log holds fewer rows than anchor {anchor.label()} recorded: "
        f"{'; '.join(parts)}; {total} rows missing in all"
    )


@dataclass(frozen=True)
class Check:
    """The anchor check of a verification: the anchor checked (None: none yet), what is
    wrong (None: it holds), and one line for the operator."""

    anchor: Anchor | None
    problem: str | None
    note: str


NOT_CONFIGURED = "no external anchor checked (NSER_AUDIT_ANCHOR_DIR is not set)"


async def check(
    conn: asyncpg.Connection, store: DirectoryStore | None, keyring: keys.Keyring
) -> Check:
    """The newest anchor's signature, and that every chain still reaches its head."""
    if store is None:
        return Check(None, None, NOT_CONFIGURED)
    try:
        anchor = latest(store, keyring)
    except AnchorError as exc:
        return Check(None, str(exc), str(exc))
    if anchor is None:
        return Check(
            None, None, f"no external anchor in {store.where} yet (`nser audit anchor` writes one)"
        )
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        short = await shortfalls(conn, anchor)
    if short:
        problem = describe(anchor, short)
        return Check(anchor, problem, problem)
    return Check(
        anchor,
        None,
        f"external anchor {anchor.label()} holds: every chain reaches its anchored head "
        f"({anchor.rows} rows then)",
    )


# --- writing ---------------------------------------------------------------------------


async def read_heads(conn: asyncpg.Connection, keyring: keys.Keyring) -> dict[int, Head]:
    """Every chain's head and rows now. Call inside a REPEATABLE READ transaction (one
    snapshot). AnchorError when the last checkpoint's heads are gone or changed."""
    base: dict[int, Head] = {}
    latest_cp = await trail.latest_checkpoint(conn, keyring)
    if latest_cp is not None and latest_cp[1] is None:
        base = latest_cp[0].chain_heads()
    chains = list(range(trail.MAX_CHAINS))
    after = [base[c].id if c in base else 0 for c in chains]
    grown = {row["chain"]: row for row in await conn.fetch(_ROWS_AFTER, chains, after)}
    ids = [row["last_id"] for row in grown.values()] + [h.id for h in base.values()]
    hashes = {
        row["id"]: (row["chain"], bytes(row["hash"])) for row in await conn.fetch(_HEAD_ROWS, ids)
    }
    heads: dict[int, Head] = {}
    for chain in sorted(set(base) | set(grown)):
        old = base.get(chain)
        if old is not None and hashes.get(old.id) != (chain, old.hash):
            raise AnchorError(
                f"row {old.id}, chain {chain}'s head at the last checkpoint, is gone or "
                "changed: run `nser audit verify`"
            )
        if chain in grown:
            row = grown[chain]
            heads[chain] = Head(
                row["last_id"], hashes[row["last_id"]][1], (old.rows if old else 0) + row["rows"]
            )
        else:
            assert old is not None
            heads[chain] = old
    return heads


@dataclass(frozen=True)
class Written:
    """An anchor written (``where`` it went), or skipped (``where`` None: the log has not
    changed since ``anchor``, the newest)."""

    anchor: Anchor
    where: str | None


async def write(
    conn: asyncpg.Connection,
    store: AnchorStore,
    keyring: keys.Keyring,
    reason: str,
    *,
    if_changed: bool = False,
) -> Written:
    """Anchor every chain's head now, signed with the current audit key. AnchorError when
    the newest anchor does not verify or the log no longer reaches it (nothing written).
    With ``if_changed``, skip when the heads and the key are the newest anchor's."""
    # The newest anchor is read before the snapshot is taken, so the snapshot holds every
    # row it anchored (written by another process a moment ago, say).
    previous = latest(store, keyring)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if previous is not None:
            short = await shortfalls(conn, previous)
            if short:
                raise AnchorError(describe(previous, short))
        heads = await read_heads(conn, keyring)
    if previous is not None:
        fewer = short_rows(previous, heads)
        if fewer is not None:
            raise AnchorError(fewer)
        if if_changed and heads == previous.heads and previous.key_id == keyring.current.id:
            return Written(previous, None)
    at = datetime.now(UTC)
    anchor = Anchor(new_name(at), at, reason, heads, keyring.current.id)
    where = store.put(anchor.name, document(anchor, keyring.current))
    return Written(anchor, where)


def summary(written: Written) -> str:
    """One line on an anchor written."""
    a = written.anchor
    chains = len(a.heads)
    return (
        f"audit anchor written: {written.where} ({a.rows} rows in {chains} "
        f"chain{'s' if chains != 1 else ''}, last row {a.last_id}, audit key {a.key_id})"
    )


async def run_anchorer(
    dsn: str,
    *,
    settings: Settings,
    host: str | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """``nser worker``'s anchoring: an anchor at start (a new audit key takes over when
    processes restart), then every NSER_AUDIT_ANCHOR_SECONDS when the log changed, until
    ``stop``. A refusal (the log no longer reaches the newest anchor) is logged as an
    error at each attempt; the database going away, as a warning."""
    from app.db import server_settings

    store = store_of(settings)
    if store is None:
        return
    stop = stop or asyncio.Event()
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            keyring = trail.keyring_of(settings)
            conn = await asyncpg.connect(
                dsn, host=host, server_settings=server_settings("nser-audit-anchor")
            )
            done = await write(conn, store, keyring, "nser worker", if_changed=True)
            if done.where is not None:
                log.info(
                    "audit anchor written",
                    extra={"anchor": done.where, "rows": done.anchor.rows},
                )
        except AnchorError as exc:
            log.error("audit anchor refused", extra={"error": str(exc)})
        except (
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
            asyncpg.AdminShutdownError,
            OSError,
        ) as exc:
            log.warning("audit anchor not written", extra={"error": str(exc)})
        except Exception:
            log.exception("audit anchor failed")
        finally:
            if conn is not None:
                await conn.close()
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.audit_anchor_seconds)
        except TimeoutError:
            pass
