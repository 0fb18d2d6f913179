"""Spot checks by the M&E team, and the Secretary's suspend, revoke and resume.

A check is recorded with its outcome, findings and action. ``suspend`` and ``revoke`` change
the agreement's status in the same transaction; access is read live from the agreement on
every partner call, so the partner's next call is refused. The Secretary suspends and
revokes on their own authority (with reasons, no spot check) through the same move, and
lifts a suspension. A request that led to the agreement follows it through the machine
(``active`` -> ``suspended`` -> ``active``, ``revoked``). Revocation is final.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from app.auth.partner import Principal
from app.errors import Conflict, Forbidden, NotFound
from app.schemas.requests import ResumeIn, RevokeIn, SpotCheckIn, SuspendIn
from app.services.audit import trail as audit
from app.services.requests import machine
from app.services.requests.machine import Action, State

# Who records spot checks, and so has the agreements due for one in their queue.
CHECKERS = frozenset({"me"})

# The agreement status each action leads to, and the statuses it may come from.
_AGREEMENT_MOVES = {
    Action.suspend: ("suspended", ("active",)),
    Action.revoke: ("revoked", ("active", "suspended")),
    Action.resume: ("active", ("suspended",)),
}


async def _move(
    conn: asyncpg.Connection,
    principal: Principal,
    agreement_id: uuid.UUID,
    action: Action,
    reason: str,
) -> str:
    """Change the agreement (409 naming its status if the action does not apply) and the
    request behind it, recording the transition on the request's timeline."""
    target, sources = _AGREEMENT_MOVES[action]
    status = await conn.fetchval(
        "SELECT status FROM agreements WHERE id = $1 FOR UPDATE", agreement_id
    )
    if status not in sources:
        raise Conflict(
            f"the agreement is {status}: {action.value} applies to "
            f"{' or '.join(sources)} agreements",
            extra={"state": status},
        )
    await conn.execute(
        """UPDATE agreements SET status = $2, status_reason = $3, updated_at = now()
            WHERE id = $1""",
        agreement_id,
        target,
        reason[:1000],
    )
    request = await conn.fetchrow(
        "SELECT id, status FROM data_requests WHERE agreement_id = $1 FOR UPDATE", agreement_id
    )
    if request is not None and request["status"] != target:
        before = State(request["status"])
        try:
            after = machine.next_state(before, action, machine.roles_of(principal.roles))
        except machine.WorkflowError:
            after = State(target)  # the agreement leads; the request follows it
        await conn.execute(
            "UPDATE data_requests SET status = $2, updated_at = now() WHERE id = $1",
            request["id"],
            after.value,
        )
        await conn.execute(
            """INSERT INTO request_events (request_id, action, from_status, to_status,
                   actor_client_id, actor_roles, payload)
               VALUES ($1, $2, $3, $4, $5, $6, jsonb_build_object('reason', $7::text))""",
            request["id"],
            action.value,
            before.value,
            after.value,
            principal.client_id,
            sorted(principal.roles),
            reason[:1000],
        )
    return target


async def _agreement(conn: asyncpg.Connection, agreement_id: uuid.UUID) -> None:
    if await conn.fetchval("SELECT 1 FROM agreements WHERE id = $1", agreement_id) is None:
        raise NotFound("no such agreement")


async def record(
    pool: asyncpg.Pool, principal: Principal, agreement_id: uuid.UUID, check: SpotCheckIn
) -> dict[str, Any]:
    """A spot check by the M&E team (role ``me``), and its action on the agreement."""
    if not CHECKERS & principal.roles:
        raise Forbidden("spot checks are recorded by the M&E team (role me)")
    async with pool.acquire() as conn, conn.transaction():
        await _agreement(conn, agreement_id)
        status: str | None = None
        if check.action != "none":
            status = await _move(
                conn, principal, agreement_id, Action(check.action), check.findings
            )
        row = await conn.fetchrow(
            """INSERT INTO spot_checks (agreement_id, by_client_id, outcome, findings, action)
               VALUES ($1, $2, $3, $4, $5) RETURNING id, at""",
            agreement_id,
            principal.client_id,
            check.outcome,
            check.findings,
            check.action,
        )
        if status is None:
            status = await conn.fetchval(
                "SELECT status FROM agreements WHERE id = $1", agreement_id
            )
        await audit.append_action(
            conn,
            principal,
            "POST /v1/staff/agreements/{id}/spot-checks",
            {
                "agreement": agreement_id,
                "outcome": check.outcome,
                "action": check.action,
            },
        )
    return {
        "spot_check_id": str(row["id"]),
        "agreement_id": str(agreement_id),
        "outcome": check.outcome,
        "action": check.action,
        "agreement_status": status,
        "at": row["at"],
    }


# What only the Secretary does to an agreement directly (the M&E team suspends and revokes
# through a spot check), and the words of the 403 for anyone else.
SECRETARY_ONLY = {
    Action.suspend: "only the Secretary suspends an agreement here (the M&E team suspends "
    "through a spot check)",
    Action.revoke: "only the Secretary revokes an agreement here (the M&E team revokes "
    "through a spot check)",
    Action.resume: "only the Secretary lifts a suspension",
}


async def by_secretary(
    pool: asyncpg.Pool,
    principal: Principal,
    agreement_id: uuid.UUID,
    action: Action,
    reasons: str,
) -> dict[str, Any]:
    """The Secretary suspends, revokes or resumes an agreement with reasons: 403 for any
    other role before anything is read, 404 for no such agreement, 409 naming the status the
    action does not apply to; the same move as a spot check's, audited."""
    if "secretary" not in principal.roles:
        raise Forbidden(SECRETARY_ONLY[action])
    async with pool.acquire() as conn, conn.transaction():
        await _agreement(conn, agreement_id)
        status = await _move(conn, principal, agreement_id, action, reasons)
        await audit.append_action(
            conn,
            principal,
            f"POST /v1/staff/agreements/{{id}}/{action.value}",
            {"agreement": agreement_id},
        )
    return {"agreement_id": str(agreement_id), "agreement_status": status}


async def suspend(
    pool: asyncpg.Pool, principal: Principal, agreement_id: uuid.UUID, body: SuspendIn
) -> dict[str, Any]:
    """The Secretary suspends an active agreement (the partner's next call is refused)."""
    return await by_secretary(pool, principal, agreement_id, Action.suspend, body.reasons)


async def revoke(
    pool: asyncpg.Pool, principal: Principal, agreement_id: uuid.UUID, body: RevokeIn
) -> dict[str, Any]:
    """The Secretary revokes an active or suspended agreement (final)."""
    return await by_secretary(pool, principal, agreement_id, Action.revoke, body.reasons)


async def resume(
    pool: asyncpg.Pool, principal: Principal, agreement_id: uuid.UUID, body: ResumeIn
) -> dict[str, Any]:
    """The Secretary lifts a suspension (409 for an agreement that is not suspended)."""
    return await by_secretary(pool, principal, agreement_id, Action.resume, body.reasons)


# Each active agreement in its validity with its last check (the newest row of its range of
# ``ix_spot_checks_agreement``) and when the next one is due; ``ix_agreements_status`` keeps
# the expired and revoked agreements out of the read.
_DUE = """
WITH due AS (
    SELECT a.id, a.organization_id, a.categories, a.valid_from, a.valid_to,
           c.at AS last_at, c.outcome AS last_outcome,
           coalesce(c.at, a.valid_from) + $2::interval AS due_at
      FROM agreements a
      LEFT JOIN LATERAL (SELECT s.at, s.outcome FROM spot_checks s
                          WHERE s.agreement_id = a.id
                          ORDER BY s.at DESC LIMIT 1) c ON TRUE
     WHERE a.status = 'active' AND a.valid_to > $1),
counted AS (
    SELECT d.*, count(*) OVER () AS total,
           count(*) FILTER (WHERE d.last_at IS NULL) OVER () AS never_checked
      FROM due d WHERE d.due_at <= $1
     ORDER BY d.due_at, d.id LIMIT $3)
SELECT c.*, o.name AS organization
  FROM counted c JOIN organizations o ON o.id = c.organization_id
 ORDER BY c.due_at, c.id
"""


async def due(
    conn: asyncpg.Connection, now: datetime, interval: timedelta, limit: int
) -> tuple[int, int, list[dict[str, Any]]]:
    """Active agreements due for a spot check at ``now``: ``interval`` after their last
    check, or after their start if never checked. How many, how many of them were never
    checked, and the ``limit`` longest due (ties by id). The cost is the active
    agreements', not the registry's history."""
    rows = await conn.fetch(_DUE, now, interval, limit)
    total, never = (rows[0]["total"], rows[0]["never_checked"]) if rows else (0, 0)
    return (
        total,
        never,
        [
            {
                "agreement_id": str(r["id"]),
                "organization_id": str(r["organization_id"]),
                "organization": r["organization"],
                "categories": list(r["categories"]),
                "valid_from": r["valid_from"],
                "valid_to": r["valid_to"],
                "last_check_at": r["last_at"],
                "last_outcome": r["last_outcome"],
                "due_at": r["due_at"],
            }
            for r in rows
        ],
    )
