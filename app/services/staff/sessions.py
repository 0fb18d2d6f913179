"""Console sessions: opened by a passkey sign-in, kept in PostgreSQL, ended by sign-out,
idleness, age, the member's disabling or the removal of the passkey that opened them.

The browser holds a random token (the cookie); the table holds its SHA-256 as primary key,
so loading a session is one primary-key read, and a copy of the table opens nothing. The
read also refreshes ``last_seen_at`` and checks, in the same statement, the member's roles
and whether the member is disabled: a change by an administrator holds from the next
request on. Idle and absolute limits are counted by the database's clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from app.auth.partner import Principal
from app.auth.scopes import staff_scopes
from app.services.audit import trail as audit
from app.services.staff import tokens


@dataclass(frozen=True)
class StaffSession:
    """A signed-in staff member, as of this request (also the audit log's caller)."""

    id_hash: bytes
    staff_id: str
    name: str
    roles: frozenset[str]
    passkey_id: uuid.UUID | None
    created_at: datetime
    last_verified_at: datetime
    now: datetime  # the database's clock when the session was read

    kind = "staff"
    agreement_id: uuid.UUID | None = None
    organization_id: uuid.UUID | None = None

    @property
    def client_id(self) -> str:
        return self.staff_id

    def verified_within(self, seconds: int) -> bool:
        """Whether the last passkey verification (sign-in or step-up) is that recent."""
        return self.now - self.last_verified_at <= timedelta(seconds=seconds)

    @property
    def principal(self) -> Principal:
        """The member as the staff API's services know a caller: roles and their scopes now."""
        return Principal(
            client_id=self.staff_id,
            kind="staff",
            scopes=staff_scopes(self.roles),
            roles=self.roles,
        )


async def open_session(conn: asyncpg.Connection, staff_id: str, passkey_id: uuid.UUID) -> str:
    """A new session of ``staff_id``, verified now; the token for the browser's cookie."""
    token = tokens.new_token()
    await conn.execute(
        "INSERT INTO staff_sessions (id_hash, staff_id, passkey_id) VALUES ($1, $2, $3)",
        tokens.digest(token),
        staff_id,
        passkey_id,
    )
    return token


_TOUCH = """
UPDATE staff_sessions s SET last_seen_at = now()
  FROM api_clients c
 WHERE s.id_hash = $1 AND c.client_id = s.staff_id AND c.kind = 'staff'
   AND s.ended_at IS NULL AND c.staff_disabled_at IS NULL
   AND s.last_seen_at > now() - make_interval(secs => $2)
   AND s.created_at > now() - make_interval(secs => $3)
RETURNING s.staff_id, s.passkey_id, s.created_at, s.last_verified_at, now() AS now,
          coalesce(c.name, s.staff_id) AS name, c.roles
"""

# Why a session that no longer loads has ended, recorded the first time it is presented.
_END_STALE = """
UPDATE staff_sessions s
   SET ended_at = now(),
       ended_reason = CASE
           WHEN c.staff_disabled_at IS NOT NULL THEN 'disabled'
           WHEN s.created_at <= now() - make_interval(secs => $3) THEN 'expired'
           ELSE 'idle' END
  FROM api_clients c
 WHERE s.id_hash = $1 AND c.client_id = s.staff_id AND s.ended_at IS NULL
   AND (c.staff_disabled_at IS NOT NULL
        OR s.last_seen_at <= now() - make_interval(secs => $2)
        OR s.created_at <= now() - make_interval(secs => $3))
"""


async def load(
    conn: asyncpg.Connection, token: str | None, *, idle_seconds: int, max_seconds: int
) -> StaffSession | None:
    """The live session behind a cookie's ``token`` (its last-seen time refreshed), or None:
    unknown, ended, idle for ``idle_seconds``, older than ``max_seconds``, or its member
    disabled (such a session is ended here, with the reason)."""
    if not tokens.well_formed(token):
        return None
    assert token is not None
    id_hash = tokens.digest(token)
    row = await conn.fetchrow(_TOUCH, id_hash, idle_seconds, max_seconds)
    if row is None:
        await conn.execute(_END_STALE, id_hash, idle_seconds, max_seconds)
        return None
    return StaffSession(
        id_hash=id_hash,
        staff_id=row["staff_id"],
        name=row["name"],
        roles=frozenset(row["roles"]),
        passkey_id=row["passkey_id"],
        created_at=row["created_at"],
        last_verified_at=row["last_verified_at"],
        now=row["now"],
    )


async def end(conn: asyncpg.Connection, id_hash: bytes, reason: str) -> bool:
    """End one session now; whether it was still open."""
    status: str = await conn.execute(
        """UPDATE staff_sessions SET ended_at = now(), ended_reason = $2
            WHERE id_hash = $1 AND ended_at IS NULL""",
        id_hash,
        reason,
    )
    return status != "UPDATE 0"


async def end_by_token(conn: asyncpg.Connection, token: str | None) -> None:
    """End the session of a cookie's ``token`` (a new sign-in replaces it), if any."""
    if tokens.well_formed(token):
        assert token is not None
        await end(conn, tokens.digest(token), "sign_out")


async def end_all(
    conn: asyncpg.Connection, staff_id: str, reason: str, *, passkey_id: uuid.UUID | None = None
) -> int:
    """End every open session of ``staff_id`` (only those opened with ``passkey_id`` if
    given); how many."""
    status: str = await conn.execute(
        """UPDATE staff_sessions SET ended_at = now(), ended_reason = $2
            WHERE staff_id = $1 AND ended_at IS NULL
              AND ($3::uuid IS NULL OR passkey_id = $3)""",
        staff_id,
        reason,
        passkey_id,
    )
    return int(status.rsplit(" ", 1)[1])


async def mark_verified(conn: asyncpg.Connection, id_hash: bytes) -> None:
    """A passkey was verified again in this session (step-up)."""
    await conn.execute(
        "UPDATE staff_sessions SET last_verified_at = now() WHERE id_hash = $1", id_hash
    )


async def sign_out(conn: asyncpg.Connection, session: StaffSession, *, client: str) -> None:
    """The member ends the session: at once, audited."""
    async with conn.transaction():
        if await end(conn, session.id_hash, "sign_out"):
            await audit.append_action(
                conn, session, "POST /staff/sign-out", {"outcome": "signed_out", "client": client}
            )
