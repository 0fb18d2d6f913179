"""What partners owe back (§4.2.1 a, §5.2.1): findings of gratis research, updates.

An obligation is created when a gratis request is approved (findings, due when the agreement
ends plus a grace period) and when an update partner's agreement is signed (updates, due
after one period of the agreed frequency). It is ``open`` until an officer records the
deliverable (``met``); an open one past its due date is overdue.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any, Literal

import asyncpg

from app.auth.partner import Principal
from app.errors import Conflict, Forbidden, NotFound
from app.schemas.requests import ObligationMetIn
from app.services.audit import trail as audit

Status = Literal["open", "met", "overdue"]
# Who records an obligation met, and so has the obligations falling due in their queue.
OWNERS = frozenset({"officer"})

_SELECT = """
SELECT o.id, o.kind, o.description, o.due_on, o.status, o.met_at, o.deliverable,
       o.agreement_id, r.reference, r.form->'organization'->>'name' AS organization,
       (o.status = 'open' AND o.due_on < $1) AS overdue
  FROM obligations o JOIN data_requests r ON r.id = o.request_id
"""


def _doc(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "obligation_id": str(row["id"]),
        "kind": row["kind"],
        "description": row["description"],
        "due_on": row["due_on"],
        "status": "overdue" if row["overdue"] else row["status"],
        "met_at": row["met_at"],
        "deliverable": row["deliverable"],
        "agreement_id": str(row["agreement_id"]) if row["agreement_id"] else None,
        "request": row["reference"],
        "organization": row["organization"],
    }


async def list_obligations(
    pool: asyncpg.Pool, status: Status | None, today: date | None = None
) -> list[dict[str, Any]]:
    today = today or date.today()
    where = {
        None: "TRUE",
        "open": "o.status = 'open' AND o.due_on >= $1",
        "overdue": "o.status = 'open' AND o.due_on < $1",
        "met": "o.status = 'met'",
    }[status]
    rows = await pool.fetch(f"{_SELECT} WHERE {where} ORDER BY o.due_on, o.id", today)
    return [_doc(r) for r in rows]


async def of_request(
    conn: asyncpg.Connection | asyncpg.Pool, reference: str, today: date | None = None
) -> list[dict[str, Any]]:
    """The obligations of one request (by its reference), due soonest first."""
    rows = await conn.fetch(
        f"{_SELECT} WHERE r.reference = $2 ORDER BY o.due_on, o.id",
        today or date.today(),
        reference,
    )
    return [_doc(r) for r in rows]


async def due_counts(conn: asyncpg.Connection, today: date, until: date) -> tuple[int, int]:
    """Open obligations due on or before ``until``, and how many of them are overdue (due
    before ``today``): one range of ``ix_obligations_status_due``, index-only."""
    row = await conn.fetchrow(
        """SELECT count(*) AS due, count(*) FILTER (WHERE due_on < $1) AS overdue
             FROM obligations WHERE status = 'open' AND due_on <= $2""",
        today,
        until,
    )
    assert row is not None
    return row["due"], row["overdue"]


async def due(
    conn: asyncpg.Connection, today: date, until: date, limit: int
) -> list[dict[str, Any]]:
    """The ``limit`` open obligations due soonest (the most overdue first) on or before
    ``until``, as listed by ``GET /v1/staff/obligations``."""
    rows = await conn.fetch(
        f"""{_SELECT} WHERE o.status = 'open' AND o.due_on <= $2
            ORDER BY o.due_on, o.id LIMIT $3""",
        today,
        until,
        limit,
    )
    return [_doc(r) for r in rows]


async def mark_met(
    pool: asyncpg.Pool, principal: Principal, obligation_id: uuid.UUID, body: ObligationMetIn
) -> dict[str, Any]:
    """An officer records the deliverable: the obligation is met (409 if it already is)."""
    if not OWNERS & principal.roles:
        raise Forbidden("obligations are closed by an NSER-MU officer (role officer)")
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.fetchval(
            "SELECT status FROM obligations WHERE id = $1 FOR UPDATE", obligation_id
        )
        if status is None:
            raise NotFound("no such obligation")
        if status == "met":
            raise Conflict("the obligation is already met", extra={"state": "met"})
        await conn.execute(
            """UPDATE obligations SET status = 'met', met_at = now(), deliverable = $2,
                      met_by = $3, updated_at = now()
                WHERE id = $1""",
            obligation_id,
            body.deliverable,
            principal.client_id,
        )
        await audit.append_action(
            conn, principal, "POST /v1/staff/obligations/{id}/met", {"obligation": obligation_id}
        )
        row = await conn.fetchrow(f"{_SELECT} WHERE o.id = $2", date.today(), obligation_id)
    return _doc(row)
