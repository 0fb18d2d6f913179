"""Grievances in the database: file, follow by token, list, act, re-survey, resolve.

Filing matches the CNIC to a household (any member holding it, the living first) and
remembers the household's score and the last row of its history at that moment. Filing
answers the same whether or not the CNIC matched: the public cannot learn from it who is in
the registry. Staff see the match; a grievance that matched no household can only be
rejected.

Each staff action runs in one transaction that locks the grievance (``FOR UPDATE``), asks
:func:`machine.next_state`, applies the action's effect, records the transition in
``grievance_events`` and appends it to the audit log. A failed check leaves nothing.

The re-survey is a ``household_survey`` record queued as a staff update batch
(``app.services.ingest.store.enqueue_staff``): the ingest worker validates it, applies it,
re-scores the household and writes the history row (source ``staff``, ref the grievance's
reference) exactly as for a partner's batch. Resolving reads the household's history since
filing: the score then, the score now, and the history rows that changed it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from app.auth.partner import Principal
from app.errors import Conflict, Forbidden, NotFound
from app.schemas import grievances as s
from app.schemas.base import StrictModel
from app.schemas.cnic import mask_cnic
from app.services import casework
from app.services.audit import trail as audit
from app.services.grievances import machine, sla
from app.services.grievances.machine import Action, State
from app.services.ingest import store as ingest_store

PUBLIC_PATH = "/v1/public/grievances"
STAFF_ENDPOINT = "/v1/staff/grievances/{grievance_id}"
# The actions taken through ``POST .../actions/{action}``, with their bodies; the re-survey
# has its own endpoint (it carries the survey).
PAYLOADS: dict[Action, type[StrictModel]] = {
    Action.triage: s.NoteIn,
    Action.order_resurvey: s.NoteIn,
    Action.resolve: s.ReasonsIn,
    Action.reject: s.ReasonsIn,
}


@dataclass(frozen=True)
class Filed:
    grievance_id: uuid.UUID
    reference: str
    token: str

    @property
    def status_url(self) -> str:
        return f"{PUBLIC_PATH}/{self.reference}?token={self.token}"


GRIEVANCES = casework.Cases("grievances", "grievance_events", "grievance_id", "grievance")


def _score(value: Decimal | float | str | None) -> float | None:
    return None if value is None else float(value)


# The household of the CNIC (a living member first), locked against a batch changing it
# meanwhile, and where its history stands.
_MATCH = """
SELECT h.id, h.version, h.pmt_score, h.poverty_band, h.pmt_version,
       (SELECT coalesce(max(x.id), 0) FROM household_history x
         WHERE x.household_id = h.id) AS history_mark
  FROM members m JOIN households h ON h.id = m.household_id
 WHERE m.cnic = $1
 ORDER BY m.deceased_on IS NULL DESC, m.id
 LIMIT 1
   FOR SHARE OF h
"""


async def file(pool: asyncpg.Pool, form: s.GrievanceForm) -> Filed:
    """Store the grievance and its first event; give the status token (shown once)."""
    token, token_digest = casework.new_token()
    async with pool.acquire() as conn, conn.transaction():
        hh = await conn.fetchrow(_MATCH, form.cnic)
        number = await conn.fetchval("SELECT nextval('grievance_number')")
        reference = f"GRV-{datetime.now(UTC).year}-{number:06d}"
        grievance_id: uuid.UUID = await conn.fetchval(
            """INSERT INTO grievances (reference, token_hash, cnic, reason, details,
                   contact_phone, household_id, household_version, history_mark, pmt_score,
                   poverty_band, pmt_version)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id""",
            reference,
            token_digest,
            form.cnic,
            form.reason,
            form.details,
            form.contact_phone,
            hh["id"] if hh else None,
            hh["version"] if hh else None,
            hh["history_mark"] if hh else None,
            hh["pmt_score"] if hh else None,
            hh["poverty_band"] if hh else None,
            hh["pmt_version"] if hh else None,
        )
        await casework.append_event(
            conn, GRIEVANCES, grievance_id, "file", None, State.received, None, [], {}
        )
        await audit.append(
            conn,
            audit.AuditRecord(
                actor_type="public",
                client_id=None,
                agreement_id=None,
                organization_id=None,
                endpoint=f"POST {PUBLIC_PATH}",
                filters={"grievance": reference, "reason": form.reason},
                dimensions=[],
                households=0,
                members=0,
            ),
        )
    return Filed(grievance_id, reference, token)


def _public_resolution(resolution: Any) -> dict[str, Any] | None:
    found = casework.loads(resolution)
    if not found:
        return None
    return {k: found[k] for k in ("outcome", "reasons", "at")}


async def public_view(pool: asyncpg.Pool, reference: str, token: str) -> dict[str, Any]:
    """The filer's view: status, dates and the outcome with its reasons; the CNIC masked,
    never the score, the household, staff names or notes."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT id, reference, token_hash, status, reason, cnic, created_at, resolution
                 FROM grievances WHERE reference = $1""",
            reference,
        )
        # A wrong token and an unknown reference answer alike: the link is the only key.
        if row is None or not casework.token_matches(row["token_hash"], token):
            raise NotFound("no grievance has this reference and token")
        events = await conn.fetch(
            """SELECT to_status, at FROM grievance_events
                WHERE grievance_id = $1 AND from_status IS DISTINCT FROM to_status
                ORDER BY id""",
            row["id"],
        )
    return {
        "reference": row["reference"],
        "status": row["status"],
        "reason": row["reason"],
        "cnic": mask_cnic(row["cnic"]),
        "filed_at": row["created_at"],
        "timeline": [{"status": e["to_status"], "at": e["at"]} for e in events],
        "resolution": _public_resolution(row["resolution"]),
    }


async def resolve_id(conn: asyncpg.Connection | asyncpg.Pool, ident: str) -> uuid.UUID:
    """A grievance by its id or its reference (``GRV-2026-000123``)."""
    return await casework.resolve(conn, GRIEVANCES, ident)


async def _lock(conn: asyncpg.Connection, grievance_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM grievances WHERE id = $1 FOR UPDATE", grievance_id)
    if row is None:
        raise NotFound("no such grievance")
    return row


def _next(state: State, action: Action, roles: frozenset[str]) -> State:
    try:
        return machine.next_state(state, action, roles)
    except machine.RoleDenied as exc:
        raise Forbidden(str(exc)) from exc
    except machine.InvalidTransition as exc:
        raise Conflict(str(exc), extra={"state": state.value}) from exc


def _unmatched(state: State) -> Conflict:
    return Conflict(
        "the grievance's CNIC matched no household of the registry: there is nothing to "
        "re-survey or re-score; reject it with the reasons",
        extra={"state": state.value},
    )


async def _batch(conn: asyncpg.Connection, batch_id: uuid.UUID) -> dict[str, Any]:
    """A staff re-survey batch (one record): its status and the record's outcome."""
    row = await conn.fetchrow(
        """SELECT b.id, b.status, b.received_at, b.finished_at, r.outcome, r.reasons
             FROM update_batches b LEFT JOIN update_results r ON r.batch_id = b.id
            WHERE b.id = $1
            ORDER BY r.position LIMIT 1""",
        batch_id,
    )
    assert row is not None, "a grievance's batch is never deleted (foreign key)"
    return {
        "batch_id": str(row["id"]),
        "status": row["status"],
        "outcome": row["outcome"],
        "reasons": list(row["reasons"] or []),
        "received_at": row["received_at"],
        "finished_at": row["finished_at"],
    }


async def act(
    pool: asyncpg.Pool, principal: Principal, ident: str, action: Action, payload: StrictModel
) -> dict[str, Any]:
    """One staff action: 403 for a role that does not own it, 409 for a state it is not
    allowed from (or a re-survey still being applied, or no household to work on)."""
    assert isinstance(payload, PAYLOADS[action]), "the router parses the action's body"
    roles = machine.roles_of(principal.roles)
    async with pool.acquire() as conn, conn.transaction():
        grievance_id = await resolve_id(conn, ident)
        row = await _lock(conn, grievance_id)
        state = State(row["status"])
        after = _next(state, action, principal.roles)
        resolution: dict[str, Any] | None = None
        if action is Action.order_resurvey and row["household_id"] is None:
            raise _unmatched(state)
        if isinstance(payload, s.ReasonsIn):
            now = datetime.now(UTC)
            if action is Action.resolve:
                resolution = await _resolution(conn, row, state, payload.reasons, now)
            else:
                resolution = {"outcome": "rejected", "reasons": payload.reasons, "at": now}
        await conn.execute(
            """UPDATE grievances
                  SET status = $2, updated_at = now(),
                      triaged_at = CASE WHEN status = 'received' THEN now() ELSE triaged_at END,
                      closed_at = CASE WHEN $3 THEN now() ELSE closed_at END,
                      resolution = coalesce($4::jsonb, resolution)
                WHERE id = $1""",
            grievance_id,
            after.value,
            after in machine.TERMINAL,
            casework.dumps(resolution) if resolution is not None else None,
        )
        recorded = payload.model_dump(mode="json")
        if resolution is not None:
            recorded["outcome"] = resolution["outcome"]
        await casework.append_event(
            conn,
            GRIEVANCES,
            grievance_id,
            action,
            state,
            after,
            principal.client_id,
            [r.value for r in sorted(roles)],
            recorded,
        )
        await audit.append_action(
            conn,
            principal,
            f"POST {STAFF_ENDPOINT}/actions/{action.value}",
            {"grievance": row["reference"], "from": state.value, "to": after.value},
        )
    answer: dict[str, Any] = {
        "grievance_id": str(grievance_id),
        "reference": row["reference"],
        "status": after.value,
    }
    if resolution is not None:
        answer["resolution"] = resolution
    return answer


async def _resolution(
    conn: asyncpg.Connection, row: asyncpg.Record, state: State, reasons: str, now: datetime
) -> dict[str, Any]:
    """Whether the score changed since filing, read from the household's history."""
    if row["household_id"] is None:
        raise _unmatched(state)
    resurvey: dict[str, Any] | None = None
    if row["resurvey_batch_id"] is not None:
        resurvey = await _batch(conn, row["resurvey_batch_id"])
        if resurvey["status"] != "done":
            raise Conflict(
                f"the re-survey (batch {resurvey['batch_id']}) is still being applied; "
                "resolve once it is done",
                extra={"state": state.value},
            )
    elif state is State.resurvey_ordered:
        raise Conflict(
            "a re-survey was ordered but none was recorded: send it (POST "
            f"{STAFF_ENDPOINT}/resurvey) or reject the grievance",
            extra={"state": state.value},
        )
    hh = await conn.fetchrow(
        "SELECT pmt_score, poverty_band, pmt_version, version FROM households WHERE id = $1",
        row["household_id"],
    )
    changes = await conn.fetch(
        """SELECT version, change, source, batch_id, ref, changed_at,
                  (before->>'pmt_score')::float8 AS score_before,
                  (after->>'pmt_score')::float8 AS score_after,
                  before->>'poverty_band' AS band_before, after->>'poverty_band' AS band_after
             FROM household_history
            WHERE household_id = $1 AND id > $2 AND (after ? 'pmt_score' OR before ? 'pmt_score')
            ORDER BY id""",
        row["household_id"],
        row["history_mark"] or 0,
    )
    before = row["pmt_score"]
    after = hh["pmt_score"] if hh else None
    return {
        "outcome": "score_changed" if before != after else "score_unchanged",
        "reasons": reasons,
        "at": now,
        "score_before": _score(before),
        "score_after": _score(after),
        "band_before": row["poverty_band"],
        "band_after": hh["poverty_band"] if hh else None,
        "pmt_version_before": row["pmt_version"],
        "pmt_version_after": hh["pmt_version"] if hh else None,
        "household_version_before": row["household_version"],
        "household_version_after": hh["version"] if hh else None,
        "history": [
            {
                "version": c["version"],
                "change": c["change"],
                "source": c["source"],
                "batch_id": c["batch_id"],
                "ref": c["ref"],
                "changed_at": c["changed_at"],
                "score_before": c["score_before"],
                "score_after": c["score_after"],
                "band_before": c["band_before"],
                "band_after": c["band_after"],
            }
            for c in changes
        ],
        "resurvey": resurvey,
    }


async def resurvey(
    pool: asyncpg.Pool, principal: Principal, ident: str, body: s.ResurveyIn
) -> dict[str, Any]:
    """Queue the re-survey as a staff ``household_survey`` batch for the grievance's
    household; the worker applies it (validation, re-score, history) as it does partners'."""
    roles = machine.roles_of(principal.roles)
    async with pool.acquire() as conn, conn.transaction():
        grievance_id = await resolve_id(conn, ident)
        row = await _lock(conn, grievance_id)
        state = State(row["status"])
        after = _next(state, Action.record_resurvey, principal.roles)
        if row["household_id"] is None:
            raise _unmatched(state)
        if row["resurvey_batch_id"] is not None:
            previous = await _batch(conn, row["resurvey_batch_id"])
            if previous["status"] != "done":
                raise Conflict(
                    f"the previous re-survey (batch {previous['batch_id']}) is still being "
                    "applied; send a correction once it is done",
                    extra={"state": state.value},
                )
        attempt = 1 + await conn.fetchval(
            "SELECT count(*) FROM grievance_events WHERE grievance_id = $1 AND action = $2",
            grievance_id,
            Action.record_resurvey.value,
        )
        record: dict[str, Any] = {
            "ref": row["reference"],
            "kind": "household_survey",
            "household_id": row["household_id"],
            "indicators": body.indicators.model_dump(mode="json", exclude_none=True),
        }
        if body.surveyed_on is not None:
            record["surveyed_on"] = body.surveyed_on.isoformat()
        if body.expected_version is not None:
            record["expected_version"] = body.expected_version
        batch_id = await ingest_store.enqueue_staff(
            conn, principal.client_id, f"grievance:{row['reference']}:{attempt}", [record]
        )
        await conn.execute(
            "UPDATE grievances SET resurvey_batch_id = $2, updated_at = now() WHERE id = $1",
            grievance_id,
            batch_id,
        )
        await casework.append_event(
            conn,
            GRIEVANCES,
            grievance_id,
            Action.record_resurvey,
            state,
            after,
            principal.client_id,
            [r.value for r in sorted(roles)],
            {"batch_id": str(batch_id), "attempt": attempt, "notes": body.notes},
        )
        await audit.append(
            conn,
            audit.AuditRecord.of(
                principal,
                endpoint=f"POST {STAFF_ENDPOINT}/resurvey",
                filters={
                    "grievance": row["reference"],
                    "household": row["household_id"],
                    "batch": batch_id,
                },
                dimensions=[],
                households=1,
                members=0,
            ),
        )
    return {
        "grievance_id": str(grievance_id),
        "reference": row["reference"],
        "status": after.value,
        "household_id": row["household_id"],
        "batch_id": str(batch_id),
        "attempt": attempt,
    }


async def staff_view(
    pool: asyncpg.Pool, principal: Principal, ident: str, targets: sla.Targets
) -> dict[str, Any]:
    """Everything about one grievance: the filing (full CNIC, contact), the household's
    score then and now, the re-survey, the timeline with its actors, the service level
    (audited: it holds personal data)."""
    async with pool.acquire() as conn, conn.transaction():
        grievance_id = await resolve_id(conn, ident)
        row = await conn.fetchrow("SELECT * FROM grievances WHERE id = $1", grievance_id)
        timeline = await casework.staff_timeline(conn, GRIEVANCES, grievance_id)
        hh = None
        if row["household_id"] is not None:
            hh = await conn.fetchrow(
                """SELECT version, pmt_score, poverty_band, pmt_version, surveyed_on
                     FROM households WHERE id = $1""",
                row["household_id"],
            )
        batch = None
        if row["resurvey_batch_id"] is not None:
            batch = await _batch(conn, row["resurvey_batch_id"])
        now = await conn.fetchval("SELECT now()")
        await audit.append(
            conn,
            audit.AuditRecord.of(
                principal,
                endpoint=f"GET {STAFF_ENDPOINT}",
                filters={"grievance": row["reference"]},
                dimensions=[],
                households=1 if hh is not None else 0,
                members=0,
            ),
        )
    state = State(row["status"])
    return {
        "grievance_id": str(row["id"]),
        "reference": row["reference"],
        "status": state.value,
        "reason": row["reason"],
        "cnic": row["cnic"],
        "details": row["details"],
        "contact_phone": row["contact_phone"],
        "filed_at": row["created_at"],
        "updated_at": row["updated_at"],
        "household": None
        if row["household_id"] is None
        else {
            "household_id": row["household_id"],
            "at_filing": {
                "version": row["household_version"],
                "pmt_score": _score(row["pmt_score"]),
                "poverty_band": row["poverty_band"],
                "pmt_version": row["pmt_version"],
            },
            "now": None
            if hh is None
            else {
                "version": hh["version"],
                "pmt_score": _score(hh["pmt_score"]),
                "poverty_band": hh["poverty_band"],
                "pmt_version": hh["pmt_version"],
                "surveyed_on": hh["surveyed_on"],
            },
        },
        "resurvey": batch,
        "resolution": casework.loads(row["resolution"]),
        "service_level": sla.service_level(
            state, row["created_at"], row["triaged_at"], row["closed_at"], now, targets
        ),
        "allowed_actions": [a.value for a in machine.allowed_actions(state, principal.roles)],
        "timeline": timeline,
    }


async def list_grievances(
    pool: asyncpg.Pool,
    principal: Principal,
    status: list[str],
    overdue: bool | None,
    limit: int,
    before: datetime | None,
    targets: sla.Targets,
) -> list[dict[str, Any]]:
    """Grievances, newest first: by status, overdue or not (``sla.overdue``), paged by
    filing time. No CNIC or contact in the list; the read is audited."""
    async with pool.acquire() as conn, conn.transaction():
        now: datetime = await conn.fetchval("SELECT now()")
        rows = await conn.fetch(
            """SELECT id, reference, status, reason, household_id, created_at, updated_at,
                      triaged_at, closed_at
                 FROM grievances
                WHERE (cardinality($1::text[]) = 0 OR status = ANY($1::text[]))
                  AND ($2::timestamptz IS NULL OR created_at < $2)
                  AND ($4::boolean IS NULL OR $4 = (
                        status IN ('received', 'triaged', 'resurvey_ordered')
                        AND (created_at + make_interval(days => $6) < $5
                             OR (status = 'received'
                                 AND created_at + make_interval(days => $7) < $5))))
                ORDER BY created_at DESC, id LIMIT $3""",
            status,
            before,
            limit,
            overdue,
            now,
            targets.resolve_days,
            targets.triage_days,
        )
        await audit.append_action(
            conn,
            principal,
            "GET /v1/staff/grievances",
            {"status": status, "overdue": overdue, "before": before},
        )
    return [
        {
            "grievance_id": str(r["id"]),
            "reference": r["reference"],
            "status": r["status"],
            "reason": r["reason"],
            "household_id": r["household_id"],
            "filed_at": r["created_at"],
            "updated_at": r["updated_at"],
            "overdue": sla.overdue(r["status"], r["created_at"], now, targets),
        }
        for r in rows
    ]
