"""My work: what waits on a staff member now, by their roles (see the package).

A section is shown to the roles that act on it, and only if the caller's token also
carries the scope that reads it (a token asked for fewer scopes sees fewer sections):

=============  ===========================================  ======================
section        roles                                        scope
=============  ===========================================  ======================
requests       the roles a waiting state waits on           ``requests:read``
               (``machine.WAITING_ON``: officer, committee,
               secretary)
grievances     the grievance machine's owners (officer)     ``grievances:read``
obligations    who records them met (officer)               ``requests:read``
spot_checks    who records spot checks (me)                 ``agreements:oversee``
=============  ===========================================  ======================

A section not shown is ``None``; a section shown with nothing in it has ``count`` 0 and no
items. Every section is a count, a breakdown (``counts``) and the first ``limit`` items,
oldest (or most overdue) first; each count is read over the queue's own rows only (see
each domain's queue), so neither the size of the registry nor the cases closed long ago
change what it costs. Everything is read in one REPEATABLE READ snapshot at one instant
(``as_of``, the database's ``now()``).

No item names a person: requests carry their reference, state and the organization's name
(no contact details); grievances their reference, state and reason (no CNIC, phone or
household); so reading the queues is not a read of personal data (not audited, not counted
against the staff read limit); opening an item is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.errors import Forbidden
from app.services.grievances import machine as grievance_machine
from app.services.grievances import queue as grievance_queue
from app.services.grievances import sla
from app.services.monitoring import spot_checks
from app.services.requests import machine as request_machine
from app.services.requests import obligations
from app.services.requests import queue as request_queue
from app.settings import Settings

PAGE = 50  # items per section, unless asked
MAX_PAGE = 200
SECTIONS = ("requests", "grievances", "obligations", "spot_checks")


@dataclass(frozen=True)
class Rules:
    """The service levels the queues apply (``Rules.of(settings)`` in the service)."""

    targets: sla.Targets = field(default_factory=sla.Targets)
    spot_check_interval_days: int = 180
    obligation_notice_days: int = 30

    @classmethod
    def of(cls, settings: Settings) -> Rules:
        """``NSER_GRIEVANCE_*_DAYS``, ``NSER_SPOT_CHECK_INTERVAL_DAYS``,
        ``NSER_OBLIGATION_NOTICE_DAYS``."""
        return cls(
            sla.Targets.of(settings),
            settings.spot_check_interval_days,
            settings.obligation_notice_days,
        )


@dataclass(frozen=True)
class Queue:
    count: int
    counts: dict[str, int]
    items: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "counts": self.counts, "items": self.items}


@dataclass(frozen=True)
class MyWork:
    staff_id: str
    roles: list[str]
    as_of: datetime
    limit: int
    requests: Queue | None
    grievances: Queue | None
    obligations: Queue | None
    spot_checks: Queue | None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "staff_id": self.staff_id,
            "roles": self.roles,
            "as_of": self.as_of,
            "limit": self.limit,
        }
        for name in SECTIONS:
            queue: Queue | None = getattr(self, name)
            out[name] = None if queue is None else queue.as_json()
        return out


def sections_of(roles: frozenset[str], scopes: frozenset[str]) -> frozenset[str]:
    """The sections a staff member holding ``roles``, with a token of ``scopes``, sees."""
    shown: set[str] = set()
    if Scope.REQUESTS_READ in scopes and request_machine.waiting_states(roles):
        shown.add("requests")
    if Scope.GRIEVANCES_READ in scopes and any(
        grievance_machine.roles_of(roles) & owners for owners in grievance_machine.OWNERS.values()
    ):
        shown.add("grievances")
    if Scope.REQUESTS_READ in scopes and obligations.OWNERS & roles:
        shown.add("obligations")
    if Scope.AGREEMENTS_OVERSEE in scopes and spot_checks.CHECKERS & roles:
        shown.add("spot_checks")
    return frozenset(shown)


@asynccontextmanager
async def _snapshot(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """One snapshot for every read: a read-only REPEATABLE READ transaction of its own, or
    the caller's transaction if there is one."""
    if conn.is_in_transaction():
        yield
        return
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        yield


async def my_work(
    conn: asyncpg.Connection, staff: Principal, rules: Rules | None = None, *, limit: int = PAGE
) -> MyWork:
    """What waits on ``staff`` (a staff principal) now: the sections its roles act on."""
    if staff.kind != "staff":
        raise Forbidden("my work is the registry staff's")
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit: 1 to {MAX_PAGE}, not {limit}")
    rules = rules or Rules()
    shown = sections_of(staff.roles, staff.scopes)
    async with _snapshot(conn):
        now: datetime = await conn.fetchval("SELECT now()")
        return MyWork(
            staff_id=staff.client_id,
            roles=sorted(staff.roles),
            as_of=now,
            limit=limit,
            requests=await _requests(conn, staff, now, limit) if "requests" in shown else None,
            grievances=(
                await _grievances(conn, now, rules.targets, limit)
                if "grievances" in shown
                else None
            ),
            obligations=(
                await _obligations(conn, now, rules.obligation_notice_days, limit)
                if "obligations" in shown
                else None
            ),
            spot_checks=(
                await _spot_checks(conn, now, rules.spot_check_interval_days, limit)
                if "spot_checks" in shown
                else None
            ),
        )


async def _requests(conn: asyncpg.Connection, staff: Principal, now: datetime, limit: int) -> Queue:
    states = request_machine.waiting_states(staff.roles)
    roles = request_machine.roles_of(staff.roles)
    by_state = await request_queue.counts(conn, states)
    rows = await request_queue.oldest(conn, states, limit)
    items = [
        {
            "request_id": str(r["id"]),
            "reference": r["reference"],
            "status": r["status"],
            "organization": r["organization"],
            "organization_type": r["organization_type"],
            "submitted_at": r["created_at"],
            "waiting_since": r["since"],
            "waited_days": sla.days_between(r["since"], now),
            "actions": [
                a.value
                for a in request_machine.allowed_actions(request_machine.State(r["status"]), roles)
            ],
        }
        for r in rows
    ]
    return Queue(sum(by_state.values()), by_state, items)


async def _grievances(
    conn: asyncpg.Connection, now: datetime, targets: sla.Targets, limit: int
) -> Queue:
    counted = await grievance_queue.counts(conn, now, targets)
    rows = await grievance_queue.oldest(conn, now, targets, limit)
    items = []
    for r in rows:
        breach = sla.overdue(r["status"], r["created_at"], now, targets)
        pending_triage = r["status"] == grievance_queue.NEW and breach != "resolve"
        items.append(
            {
                "grievance_id": str(r["id"]),
                "reference": r["reference"],
                "status": r["status"],
                "reason": r["reason"],
                "filed_at": r["created_at"],
                "days_open": sla.days_between(r["created_at"], now),
                # The target this grievance is held to next (or has missed).
                "due_at": (
                    targets.triage_due(r["created_at"])
                    if pending_triage
                    else targets.resolve_due(r["created_at"])
                ),
                "overdue": breach,
            }
        )
    return Queue(counted.total, counted.as_json(), items)


async def _obligations(
    conn: asyncpg.Connection, now: datetime, notice_days: int, limit: int
) -> Queue:
    today = now.astimezone(UTC).date()
    until = today + timedelta(days=notice_days)
    total, overdue = await obligations.due_counts(conn, today, until)
    items = [
        {**item, "days_past_due": (today - item["due_on"]).days}
        for item in await obligations.due(conn, today, until, limit)
    ]
    return Queue(total, {"overdue": overdue, "due_soon": total - overdue}, items)


async def _spot_checks(
    conn: asyncpg.Connection, now: datetime, interval_days: int, limit: int
) -> Queue:
    total, never, rows = await spot_checks.due(conn, now, timedelta(days=interval_days), limit)
    items = [{**row, "days_overdue": sla.days_between(row["due_at"], now)} for row in rows]
    return Queue(total, {"never_checked": never}, items)
