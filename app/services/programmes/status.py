"""A programme's status: staff close and reopen it; partners are refused a closed one.

Closing records the instant (``closed_at``, when the row is written) and the staff's
reason; reopening clears both. Both are audited as staff actions, with the reason.

What closed means for a partner: the programme is still listed and read, with its status,
but its eligibility and its eligible list are refused (409) from ``closed_at`` on. A list
``as_of`` an instant before ``closed_at`` — when the programme was active — still answers,
under the rule version in force then (``app.services.sharing.asof.programme_at``), so a list
a partner was given stays reproducible: an answer once given is not refused later (the
status is read after the instant is checked, and an instant at or after the start of a close
not yet committed is refused as not final by ``app.services.registry.asof.check``).
Reopening makes every instant answer again.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Literal

import asyncpg

from app.auth.partner import Principal
from app.errors import Conflict, NotFound
from app.services.audit import trail as audit
from app.services.programmes import store
from app.services.programmes.store import Current

Action = Literal["close", "reopen"]


def closed_at(programme: Current, at: datetime | None = None) -> datetime | None:
    """When the programme closed, if it is closed for a read of now (``at`` None) or of
    the instant ``at``; None when it is active then."""
    if programme.status != "closed" or programme.closed_at is None:
        return None
    if at is not None and at < programme.closed_at:
        return None
    return programme.closed_at


def ensure_open(programme: Current, at: datetime | None = None) -> None:
    """409 when the programme is closed for a read of now or of the instant ``at``."""
    since = closed_at(programme, at)
    if since is not None:
        raise Conflict(f"programme {programme.code} is closed (since {since.isoformat()})")


async def ensure_open_at(
    conn: asyncpg.Pool | asyncpg.Connection, programme: Current, at: datetime | None
) -> None:
    """``ensure_open``; for an as-of read (``at`` given) against the status read now, after
    the instant was checked (``programme_at``): a close that committed since ``programme``
    was read counts, so no answer is given that a later request would refuse."""
    if at is not None:
        row = await conn.fetchrow(
            "SELECT status, closed_at FROM programmes WHERE id = $1", programme.id
        )
        if row is not None:
            programme = dataclasses.replace(
                programme, status=row["status"], closed_at=row["closed_at"]
            )
    ensure_open(programme, at)


async def _set(pool: asyncpg.Pool, staff: Principal, ref: str, action: Action, reason: str) -> None:
    current = await store.get(pool, ref)
    if current is None:
        raise NotFound(f"no programme {ref!r}")
    want = "closed" if action == "close" else "active"
    async with pool.acquire() as conn, conn.transaction():
        # Conditional on the state: of two concurrent closes, one wins, the other is a 409.
        if action == "close":
            row = await conn.fetchrow(
                """UPDATE programmes
                      SET status = 'closed', closed_at = clock_timestamp(), closed_reason = $2,
                          updated_at = now()
                    WHERE id = $1 AND status = 'active' RETURNING closed_at""",
                current.id,
                reason,
            )
        else:
            row = await conn.fetchrow(
                """UPDATE programmes
                      SET status = 'active', closed_at = NULL, closed_reason = NULL,
                          updated_at = now()
                    WHERE id = $1 AND status = 'closed' RETURNING closed_at""",
                current.id,
            )
        if row is None:
            state = await conn.fetchrow(
                "SELECT status, closed_at FROM programmes WHERE id = $1", current.id
            )
            if state is None:
                raise NotFound(f"no programme {ref!r}")
            if state["status"] == "closed":
                raise Conflict(
                    f"programme {current.code} is closed (since "
                    f"{state['closed_at'].isoformat()}); only an active programme can be closed"
                )
            raise Conflict(
                f"programme {current.code} is active; only a closed programme can be reopened"
            )
        await audit.append_action(
            conn,
            staff,
            f"POST /v1/staff/programmes/{{programme_id}}/{action}",
            {"programme": current.id, "code": current.code, "status": want, "reason": reason},
        )


async def close(pool: asyncpg.Pool, staff: Principal, ref: str, reason: str) -> dict[str, Any]:
    """Close the programme (409 when it is closed already); the staff view after."""
    await _set(pool, staff, ref, "close", reason)
    return await store.staff_view(pool, ref)


async def reopen(pool: asyncpg.Pool, staff: Principal, ref: str, reason: str) -> dict[str, Any]:
    """Reopen the programme (409 when it is active); the staff view after."""
    await _set(pool, staff, ref, "reopen", reason)
    return await store.staff_view(pool, ref)


__all__ = ["close", "closed_at", "ensure_open", "ensure_open_at", "reopen"]
