"""As-of lists: a beneficiary or eligible list read as the registry stood at an instant.

``as_of`` (an ISO date-time with its offset) makes the list the registry rebuilt from
history at that instant (``app.services.registry.asof``), not today's data filtered: the
same filters, scope, cursor, streams and audit, over the past. A programme's list applies
the rule version in force then (``programme_at``).

The list carries a ``snapshot`` id that a programme can keep as proof of what it was given:
a hash of the instant (UTC, microseconds), the registry's version then (the last history row
at or before it), the query (filters, dimensions, the programme and its rule version) and
the agreement's geographic scope. The same inputs always give the same id; another instant
gives another. Its cursors carry the instant, so every page of a walk reads the same past.

With read replicas, an as-of list is read where its instant is final and its cursors carry
the WAL position the list was read at (``prepare``; app/replicas.py).

Public: ``parse_as_of``, ``instant_of``, ``encode_cursor``, ``cursor_position``,
``cursor_read_after``, ``prepare``, ``programme_at``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from app.auth.partner import Principal
from app.errors import ValidationFailed
from app.replicas import Reads
from app.services.programmes import rules
from app.services.programmes.store import Current
from app.services.registry import asof as registry_asof
from app.services.sharing.beneficiaries_sql import Filters

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SNAPSHOT_PREFIX = "snap_"


def normalized(at: datetime) -> datetime:
    """UTC, microseconds: the precision PostgreSQL keeps."""
    return at.astimezone(UTC)


def parse_as_of(value: str | None) -> datetime | None:
    """The ``as_of`` parameter: an ISO 8601 date-time with a UTC offset (or ``Z``)."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValidationFailed(
            f"as_of {value!r} is not an ISO 8601 date-time (e.g. 2026-11-30T09:00:00Z)"
        ) from exc
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValidationFailed(
            f"as_of {value!r} has no UTC offset; add one (Z or +05:00) so the instant is exact"
        )
    try:
        return normalized(at)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+05:00
        raise ValidationFailed(f"as_of {value!r} is out of range") from exc


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def encode_cursor(last_id: int, at: datetime, read_after: int | None = None) -> str:
    """The next page's cursor: the last household id and the instant; with read replicas
    also the WAL position the page was read at (``a2``), which the next page must see."""
    raw = f"a1:{last_id}:{_micros(at)}"
    if read_after is not None:
        raw = f"a2:{last_id}:{_micros(at)}:{read_after}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[int, datetime, int | None] | None:
    """(position, instant, WAL position to read at) of an as-of cursor; None for another
    kind of cursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationFailed("invalid cursor") from exc
    parts = raw.split(":")
    if parts[0] not in ("a1", "a2"):
        return None
    fields = 3 if parts[0] == "a1" else 4
    if len(parts) != fields or not all(p.isdigit() for p in parts[1:]):
        raise ValidationFailed("invalid cursor")
    read_after = int(parts[3]) if fields == 4 else None
    if read_after is not None and read_after >= 1 << 63:
        raise ValidationFailed("invalid cursor")
    try:
        return int(parts[1]), _EPOCH + timedelta(microseconds=int(parts[2])), read_after
    except OverflowError as exc:
        raise ValidationFailed("invalid cursor") from exc


def instant_of(as_of: str | None, cursor: str | None) -> datetime | None:
    """The instant a list request reads: ``as_of``, or the one its cursor carries.

    A cursor keeps its instant: with ``as_of`` too they must agree, and a cursor of a
    list of today cannot continue a list of the past (or the reverse).
    """
    at = parse_as_of(as_of)
    decoded = _decode(cursor) if cursor else None
    carried = decoded[1] if decoded is not None else None
    if cursor and carried is None and at is not None:
        raise ValidationFailed("the cursor continues a list without as_of; drop as_of or cursor")
    if carried is not None and at is not None and carried != at:
        raise ValidationFailed(
            f"the cursor continues the list as of {carried.isoformat()}, not {at.isoformat()}"
        )
    return at if at is not None else carried


def cursor_position(cursor: str | None) -> int | None:
    """The last household id of an as-of cursor (its instant was checked by instant_of)."""
    if not cursor:
        return None
    decoded = _decode(cursor)
    if decoded is None:
        raise ValidationFailed("invalid cursor")
    return decoded[0]


def cursor_read_after(cursor: str | None) -> int | None:
    """The WAL position an as-of cursor's next page must be read at (None: none named)."""
    decoded = _decode(cursor) if cursor else None
    return decoded[2] if decoded is not None else None


def _canonical(value: object) -> object:
    if isinstance(value, list):
        return sorted(str(v) for v in value)
    return value


def snapshot_id(p: Principal, f: Filters, instant: registry_asof.Instant) -> str:
    """The stable id of (instant, registry version then, query, agreement scope)."""
    query = {k: _canonical(v) for k, v in f.as_audit().items() if k != "snapshot"}
    doc = {
        "v": 1,
        "as_of": instant.at.isoformat(timespec="microseconds"),
        "registry_version": instant.last_change,
        "query": query,
        "dimensions": sorted(f.dimensions),
        "scope": sorted(p.geo_codes),
    }
    text = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS, default=str)  # ids (UUID) as text
    digest = hashlib.sha256(text).hexdigest()
    return SNAPSHOT_PREFIX + digest[:32]


async def prepare(
    reads: Reads, p: Principal, f: Filters, at: datetime, read_after: int | None = None
) -> str:
    """Check the instant (422 in the future or before the registry), make ``f`` an as-of
    query and return its snapshot id (also set on ``f``, so the audit records both).

    With read replicas the list must be read where the instant is final: only the primary
    can tell (a write that began at or before it may still run there), so the check runs on
    the primary and ``f.read_after`` becomes the primary's WAL position after it: a replica
    answers the list once it replayed that far. A cursor of the list carries that position
    (``read_after``): the check then runs wherever the position is replayed, and the
    snapshot id and every page come from the same registry as of ``at``.
    """
    if not reads.configured:
        instant = await registry_asof.check(reads.primary, at)
    elif read_after is None:
        instant = await registry_asof.check(reads.primary, at)
        read_after = await reads.primary_position()
    else:
        instant = await reads.run(lambda conn: registry_asof.check(conn, at), after=read_after)
    f.as_of = instant.at
    f.read_after = read_after
    f.snapshot = snapshot_id(p, f, instant)
    return f.snapshot


async def programme_at(
    conn: asyncpg.Pool | asyncpg.Connection, programme: Current, at: datetime
) -> Current:
    """The programme with the rule version in force at ``at`` (the highest version written
    at or before it); 422 when its first rule is later."""
    await registry_asof.check(conn, at)
    row = await conn.fetchrow(
        """SELECT version, rule::text AS rule FROM programme_rules
            WHERE programme_id = $1 AND created_at <= $2 ORDER BY version DESC LIMIT 1""",
        programme.id,
        at,
    )
    if row is None:
        raise ValidationFailed(
            f"programme {programme.code!r} had no rule in force at {at.isoformat()}"
        )
    if row["version"] == programme.version:
        return programme
    doc = orjson.loads(row["rule"])
    return dataclasses.replace(
        programme,
        version=row["version"],
        rule=rules.parse_rule(doc),
        view={**programme.view, "version": row["version"], "rule": doc},
    )


__all__ = [
    "SNAPSHOT_PREFIX",
    "cursor_position",
    "cursor_read_after",
    "encode_cursor",
    "instant_of",
    "parse_as_of",
    "prepare",
    "programme_at",
    "snapshot_id",
]
