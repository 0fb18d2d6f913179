"""Requests in the database: submit, follow by token, and move through the machine.

Each action runs in one transaction that locks the request row (``FOR UPDATE``), asks
:func:`machine.next_state`, applies the action's effect (the review's household count B, the
quote frozen at approval, the agreement and credentials at signature), records the
transition in ``request_events`` and appends the staff action to the audit log. A failed
check leaves nothing behind: the transaction rolls back.

**Organizations.** A form only names its organization. The registry's organizations are its
own record: a form whose name (spaces and case aside) and type match one of them is linked
to it only by the officer's explicit choice, ``organization_id`` in the body of ``review``
or of ``sign`` (an existing organization's id, or ``"new"``). Without a choice, such a
request cannot be signed (409, naming the candidates); a ``"new"`` chosen at review does
not cover an organization registered after it. A form's contact details go only into a new
organization: an existing one is never written from a form.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from app.auth.partner import Principal
from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.schemas import requests as s
from app.schemas.base import StrictModel
from app.services import casework
from app.services.audit import trail as audit
from app.services.requests import machine, pricing
from app.services.requests.machine import Action, Role, State
from app.services.sharing import partners
from app.services.sharing import rules as sharing
from app.services.sharing.rules import RuleViolation

GEO_COLUMNS = (
    "province_code",
    "division_code",
    "district_code",
    "tehsil_code",
    "union_council_code",
    "village_code",
)
# A finding of gratis research is due this long after the agreement ends (§4.2.1 a).
FINDINGS_GRACE = timedelta(days=90)
# What a gratis partner owes back, by the criterion it was granted under (§4.2.1 a-d).
FINDINGS_OWED = {
    "a": "Share the research findings with full usage rights to the registry (§4.2.1 a)",
    "b": "Report how the data served the collaboration with BISP (§4.2.1 b)",
    "c": "Report how the data served BISP beneficiaries or the marginalized (§4.2.1 c)",
    "d": "Report how the data served BISP beneficiaries or the marginalized (§4.2.1 d)",
}
UPDATE_PERIODS = {
    "weekly": timedelta(days=7),
    "monthly": timedelta(days=31),
    "quarterly": timedelta(days=92),
    "yearly": timedelta(days=366),
}
PAYLOADS: dict[Action, type[StrictModel]] = {
    Action.start_review: s.NoPayload,
    Action.review: s.ReviewIn,
    Action.record_interview: s.InterviewIn,
    Action.recommend: s.RecommendIn,
    Action.approve: s.DecisionIn,
    Action.reject: s.DecisionIn,
    Action.sign: s.SignIn,
    Action.withdraw: s.NoPayload,
}
STAFF_ACTIONS = tuple(PAYLOADS)
# Two-int advisory keys (this one and the name's hash) never meet the audit's bigint lock.
_ORGANIZATION_LOCK = 0x6E736F72  # "nsor"


@dataclass(frozen=True)
class Submitted:
    request_id: uuid.UUID
    reference: str
    token: str

    @property
    def status_url(self) -> str:
        return f"/v1/requests/{self.reference}?token={self.token}"


def _organization_key(org: s.OrganizationIn) -> str:
    return " ".join(org.name.lower().split()) + "|" + org.type


REQUESTS = casework.Cases("data_requests", "request_events", "request_id", "request")


async def _unknown_codes(conn: asyncpg.Connection | asyncpg.Pool, codes: list[str]) -> list[str]:
    if not codes:
        return []
    known = {
        r["code"]
        for r in await conn.fetch("SELECT code FROM geo_units WHERE code = ANY($1)", codes)
    }
    return [c for c in codes if c not in known]


def _field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field}: {message}",
        errors=[
            {"loc": ["body", field], "field": field, "message": message, "type": "value_error"}
        ],
    )


async def check_form(pool: asyncpg.Pool, form: s.RequestForm) -> None:
    """What the form's schema cannot know: names of dimensions, codes that exist."""
    unknown_dims = [d for d in form.dimensions if d not in sharing.DIMENSIONS]
    if unknown_dims:
        raise _field_error("dimensions", f"unknown dimension {unknown_dims[0]!r}")
    missing = await _unknown_codes(pool, form.geography)
    if missing:
        raise _field_error("geography", f"unknown geography code {missing[0]!r}")


async def submit(pool: asyncpg.Pool, form: s.RequestForm) -> Submitted:
    """Store the form; fill in the organization's previous requests; give the status token."""
    await check_form(pool, form)
    token, token_digest = casework.new_token()
    key = _organization_key(form.organization)
    async with pool.acquire() as conn, conn.transaction():
        previous = await conn.fetch(
            """SELECT reference, status, created_at FROM data_requests
                WHERE organization_key = $1 ORDER BY created_at""",
            key,
        )
        number = await conn.fetchval("SELECT nextval('data_request_number')")
        reference = f"DSR-{datetime.now(UTC).year}-{number:06d}"
        history = [
            {"reference": r["reference"], "status": r["status"], "submitted_at": r["created_at"]}
            for r in previous
        ]
        request_id: uuid.UUID = await conn.fetchval(
            """INSERT INTO data_requests (reference, token_hash, organization_key,
                   organization_type, form, previous_requests)
               VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb) RETURNING id""",
            reference,
            token_digest,
            key,
            form.organization.type,
            form.model_dump_json(),
            casework.dumps(history),
        )
        await casework.append_event(
            conn, REQUESTS, request_id, "submit", None, State.submitted, None, [], {}
        )
    return Submitted(request_id, reference, token)


async def matching_organizations(
    conn: asyncpg.Connection, key: str, organization_type: str
) -> list[asyncpg.Record]:
    """Organizations the registry already has under this name (spaces and case aside) and
    type: the candidates the officer chooses from, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT id, name, type, created_at FROM organizations
            WHERE lower(regexp_replace(btrim(name), '\\s+', ' ', 'g')) = $1 AND type = $2
            ORDER BY created_at, id""",
        key.rsplit("|", 1)[0],
        organization_type,
    )
    return rows


async def _chosen_organization(
    conn: asyncpg.Connection, choice: str, organization_type: str
) -> uuid.UUID:
    """The existing organization an officer named: it must exist and be of the form's type
    (the type decides the price and the agreement's terms), else 422."""
    found = await conn.fetchrow(
        "SELECT id, type FROM organizations WHERE id = $1", uuid.UUID(choice)
    )
    if found is None:
        raise _field_error("organization_id", f"no organization has the id {choice}")
    if found["type"] != organization_type:
        raise _field_error(
            "organization_id",
            f"organization {choice} is of type {found['type']}; the request is from a"
            f" {organization_type} organization",
        )
    organization_id: uuid.UUID = found["id"]
    return organization_id


def _choice_audit(choice: str) -> dict[str, str]:
    """A choice as audit filters (flat strings): ``existing`` with its id, or ``new``."""
    if choice == "new":
        return {"organization": "new"}
    return {"organization": "existing", "organization_id": choice}


async def _by_token(conn: asyncpg.Connection, reference: str, token: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT id, reference, status, token_hash, created_at FROM data_requests"
        " WHERE reference = $1",
        reference,
    )
    # A wrong token and an unknown reference answer alike: the link is the only key.
    if row is None or not casework.token_matches(row["token_hash"], token):
        raise NotFound("no request has this reference and token")
    return row


async def public_view(pool: asyncpg.Pool, reference: str, token: str) -> dict[str, Any]:
    """The requester's view: status and dates, never staff notes or names."""
    async with pool.acquire() as conn:
        row = await _by_token(conn, reference, token)
        events = await conn.fetch(
            "SELECT to_status, at FROM request_events WHERE request_id = $1 ORDER BY id",
            row["id"],
        )
    return {
        "reference": row["reference"],
        "status": row["status"],
        "submitted_at": row["created_at"],
        "timeline": [{"status": e["to_status"], "at": e["at"]} for e in events],
    }


async def withdraw_by_requester(pool: asyncpg.Pool, reference: str, token: str) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        row = await _by_token(conn, reference, token)
        state = await _lock(conn, row["id"])
        after = _next(state, Action.withdraw, [Role.requester], None)
        await _set_status(conn, row["id"], after)
        await casework.append_event(
            conn, REQUESTS, row["id"], Action.withdraw, state, after, None, ["requester"], {}
        )
        await audit.append(
            conn,
            audit.AuditRecord(
                actor_type="requester",
                client_id=None,
                agreement_id=None,
                organization_id=None,
                endpoint="POST /v1/requests/{reference}/withdraw",
                filters={"request": reference, "from": state.value, "to": after.value},
                dimensions=[],
                households=0,
                members=0,
            ),
        )
    return await public_view(pool, reference, token)


async def _lock(conn: asyncpg.Connection, request_id: uuid.UUID) -> State:
    status = await conn.fetchval(
        "SELECT status FROM data_requests WHERE id = $1 FOR UPDATE", request_id
    )
    if status is None:
        raise NotFound("no such request")
    return State(status)


def _next(state: State, action: Action, roles: list[Role], outcome: str | None) -> State:
    try:
        return machine.next_state(state, action, roles, outcome=outcome)
    except machine.RoleDenied as exc:
        raise Forbidden(str(exc)) from exc
    except machine.InvalidTransition as exc:
        raise Conflict(str(exc), extra={"state": state.value}) from exc


async def _set_status(conn: asyncpg.Connection, request_id: uuid.UUID, status: State) -> None:
    await conn.execute(
        "UPDATE data_requests SET status = $2, updated_at = now() WHERE id = $1",
        request_id,
        status.value,
    )


async def resolve(conn: asyncpg.Connection | asyncpg.Pool, ident: str) -> uuid.UUID:
    """A request by its id or its reference (``DSR-2026-000123``)."""
    return await casework.resolve(conn, REQUESTS, ident)


async def act(
    pool: asyncpg.Pool, principal: Principal, ident: str, action: Action, payload: StrictModel
) -> dict[str, Any]:
    """One staff action on a request: 403 for a role that does not own it, 409 for a state
    it is not allowed from, 422 for a payload the action does not take."""
    assert isinstance(payload, PAYLOADS[action]), "the router parses the action's body"
    roles = machine.roles_of(principal.roles)
    async with pool.acquire() as conn, conn.transaction():
        request_id = await resolve(conn, ident)
        state = await _lock(conn, request_id)
        outcome = payload.recommendation if isinstance(payload, s.RecommendIn) else None
        after = _next(state, action, roles, outcome)
        row = await conn.fetchrow("SELECT * FROM data_requests WHERE id = $1", request_id)
        effect = await EFFECTS[action](conn, row, payload, principal)
        await _set_status(conn, request_id, after)
        recorded = payload.model_dump(mode="json")
        await casework.append_event(
            conn,
            REQUESTS,
            request_id,
            action,
            state,
            after,
            principal.client_id,
            [r.value for r in roles],
            {**recorded, **effect.get("event", {})},
        )
        await audit.append_action(
            conn,
            principal,
            f"POST /v1/staff/requests/{{id}}/actions/{action.value}",
            {
                "request": row["reference"],
                "from": state.value,
                "to": after.value,
                **effect.get("audit", {}),
            },
        )
    return {
        "request_id": str(request_id),
        "reference": row["reference"],
        "status": after.value,
        **effect.get("answer", {}),
    }


Effect = dict[str, dict[str, Any]]


async def _nothing(
    conn: asyncpg.Connection, row: asyncpg.Record, payload: Any, principal: Principal
) -> Effect:
    return {}


def _within(lineage: set[str], scope: set[str]) -> bool:
    return not scope or bool(lineage & scope)


async def _lineages(conn: asyncpg.Connection, codes: list[str]) -> dict[str, set[str]]:
    rows = await conn.fetch(
        """WITH RECURSIVE up AS (
               SELECT code AS origin, code, parent_code FROM geo_units WHERE code = ANY($1)
               UNION ALL
               SELECT up.origin, g.code, g.parent_code FROM geo_units g
                 JOIN up ON g.code = up.parent_code)
           SELECT origin, array_agg(code) AS lineage FROM up GROUP BY origin""",
        codes,
    )
    return {r["origin"]: set(r["lineage"]) for r in rows}


async def count_households(conn: asyncpg.Connection, geography: list[str]) -> int:
    """B: households in the registry within ``geography`` (any level; empty: the country)."""
    if not geography:
        n: int = await conn.fetchval("SELECT count(*) FROM households")
        return n
    where = " OR ".join(f"{col} = ANY($1::text[])" for col in GEO_COLUMNS)
    n = await conn.fetchval(f"SELECT count(*) FROM households WHERE {where}", geography)
    return n


async def _review(
    conn: asyncpg.Connection, row: asyncpg.Record, payload: s.ReviewIn, principal: Principal
) -> Effect:
    form = casework.loads(row["form"])
    if payload.category not in form["categories"]:
        raise _field_error(
            "category", f"{payload.category} was not requested ({', '.join(form['categories'])})"
        )
    beyond = [d for d in payload.dimensions if d not in form["dimensions"]]
    if beyond:
        raise _field_error("dimensions", f"not requested: {', '.join(beyond)}")
    try:
        dimensions = sharing.check_dimensions(payload.dimensions)
    except RuleViolation as exc:
        raise _field_error("dimensions", str(exc)) from exc
    try:
        update_kinds = sharing.check_update_kinds(payload.update_kinds)
    except RuleViolation as exc:
        raise _field_error("update_kinds", str(exc)) from exc
    geography = list(dict.fromkeys(payload.geography))
    lineages = await _lineages(conn, geography)
    missing = [c for c in geography if c not in lineages]
    if missing:
        raise _field_error("geography", f"unknown geography code {missing[0]!r}")
    requested = set(form["geography"])
    outside = [c for c in geography if not _within(lineages[c], requested)]
    if outside or (requested and not geography):
        raise _field_error(
            "geography", "the granted geography must lie within the requested geography"
        )
    case_by_case = payload.category in pricing.CASE_BY_CASE_CATEGORIES
    # Set even when gratis was claimed: the committee may not grant it.
    if case_by_case and payload.amount is None:
        raise _field_error("amount", f"category {payload.category} is priced case by case")
    if not case_by_case and payload.amount is not None:
        raise _field_error("amount", f"category {payload.category} is priced by the formula")
    choice = payload.organization_id
    organization: dict[str, Any] = {}
    if choice is not None:
        if choice != "new":
            choice = str(await _chosen_organization(conn, choice, row["organization_type"]))
        # What matched when the choice was made: a "new" does not cover a later one.
        matched = await matching_organizations(
            conn, row["organization_key"], row["organization_type"]
        )
        organization = {
            "organization_id": choice,
            "organization_matches": [str(m["id"]) for m in matched],
        }
    households = await count_households(conn, geography)
    review = {
        **payload.model_dump(mode="json"),
        **organization,
        "dimensions": dimensions,
        "geography": geography,
        "update_kinds": update_kinds,
        "households": households,
        "counted_at": datetime.now(UTC).isoformat(),
    }
    await conn.execute(
        "UPDATE data_requests SET review = $2::jsonb, households = $3 WHERE id = $1",
        row["id"],
        casework.dumps(review),
        households,
    )
    return {
        "event": {"households": households, **organization},
        "answer": {"households": households},
        "audit": _choice_audit(choice) if choice is not None else {},
    }


async def _interview(
    conn: asyncpg.Connection, row: asyncpg.Record, payload: s.InterviewIn, principal: Principal
) -> Effect:
    await conn.execute(
        "UPDATE data_requests SET interview = $2::jsonb WHERE id = $1",
        row["id"],
        payload.model_dump_json(),
    )
    return {}


async def _recommend(
    conn: asyncpg.Connection, row: asyncpg.Record, payload: s.RecommendIn, principal: Principal
) -> Effect:
    form = casework.loads(row["form"])
    if payload.gratis and not form.get("gratis_criterion"):
        raise _field_error("gratis", "the request claimed no gratis criterion")
    await conn.execute(
        "UPDATE data_requests SET recommendation = $2::jsonb WHERE id = $1",
        row["id"],
        payload.model_dump_json(),
    )
    return {}


def quote_of(row: asyncpg.Record | dict[str, Any]) -> pricing.Quote:
    """The quote of a reviewed request as it stands now (frozen at approval: see ``quote``)."""
    frozen = casework.loads(row["quote"])
    if frozen:
        return pricing.Quote.from_json(frozen)
    review = casework.loads(row["review"])
    if review is None:
        raise Conflict(
            f"the request is {row['status']}: it is priced once reviewed",
            extra={"state": row["status"]},
        )
    form = casework.loads(row["form"])
    recommendation = casework.loads(row["recommendation"]) or {}
    gratis = form.get("gratis_criterion") if recommendation.get("gratis") else None
    amount = review.get("amount")
    return pricing.quote(
        organization_type=row["organization_type"],
        category=review["category"],
        households=row["households"],
        dimensions=review["dimensions"],
        gratis_criterion=gratis,
        case_by_case_amount=Decimal(str(amount)) if amount is not None and not gratis else None,
    )


async def _decide(
    conn: asyncpg.Connection, row: asyncpg.Record, payload: s.DecisionIn, principal: Principal
) -> Effect:
    await conn.execute(
        "UPDATE data_requests SET decision = $2::jsonb WHERE id = $1",
        row["id"],
        casework.dumps({**payload.model_dump(mode="json"), "at": datetime.now(UTC).isoformat()}),
    )
    return {}


async def _approve(
    conn: asyncpg.Connection, row: asyncpg.Record, payload: s.DecisionIn, principal: Principal
) -> Effect:
    await _decide(conn, row, payload, principal)
    frozen = quote_of(row)
    await conn.execute(
        "UPDATE data_requests SET quote = $2::jsonb, quoted_amount = $3 WHERE id = $1",
        row["id"],
        casework.dumps(frozen.as_json()),
        frozen.G,
    )
    answer: dict[str, Any] = {"quote": frozen.as_json()}
    if frozen.basis == "gratis":
        review = casework.loads(row["review"])
        due = date.today() + timedelta(days=review["valid_days"]) + FINDINGS_GRACE
        criterion = casework.loads(row["form"])["gratis_criterion"]
        obligation_id = await conn.fetchval(
            """INSERT INTO obligations (request_id, kind, description, due_on)
               VALUES ($1, 'findings', $2, $3) RETURNING id""",
            row["id"],
            FINDINGS_OWED[criterion],
            due,
        )
        answer["obligation_id"] = str(obligation_id)
    return {"event": {"quote": frozen.as_json()}, "answer": answer}


async def _organization_for_signature(
    conn: asyncpg.Connection, row: asyncpg.Record, review: dict[str, Any], payload: s.SignIn
) -> tuple[str, uuid.UUID | None, list[str]]:
    """The officer's choice in force at signature: ``("new", None, …)`` or ``("existing",
    id, …)``, with the ids of the organizations matching the form now. 409 when a match
    needs a choice that was not made, 422 for a choice that names no fitting organization.
    Signatures under one organization name take turns (a transaction-level lock), so two
    requests of an unknown organization signed at once cannot both create it unseen."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        _ORGANIZATION_LOCK,
        row["organization_key"].rsplit("|", 1)[0],
    )
    matched = [
        str(m["id"])
        for m in await matching_organizations(
            conn, row["organization_key"], row["organization_type"]
        )
    ]
    choice = payload.organization_id
    if choice is None:
        choice = review.get("organization_id")
        seen = set(review.get("organization_matches") or [])
        if choice == "new" and any(m not in seen for m in matched):
            raise Conflict(
                "an organization matching the form was registered after the review chose a"
                ' new one: sign with organization_id, the existing organization\'s id or "new"',
                extra={"state": row["status"], "matching_organizations": matched},
            )
    if choice is None:
        if matched:
            raise Conflict(
                "the form's organization matches one the registry already has: the officer"
                " must choose, by signing with organization_id (the existing organization's"
                ' id, see matching_organizations) or "new"',
                extra={"state": row["status"], "matching_organizations": matched},
            )
        choice = "new"
    if choice == "new":
        return "new", None, matched
    return "existing", await _chosen_organization(conn, choice, row["organization_type"]), matched


async def _sign(
    conn: asyncpg.Connection, row: asyncpg.Record, payload: s.SignIn, principal: Principal
) -> Effect:
    form = casework.loads(row["form"])
    review = casework.loads(row["review"])
    kind, organization_id, matched = await _organization_for_signature(conn, row, review, payload)
    spec = partners.PartnerSpec(
        name=form["organization"]["name"],
        type=row["organization_type"],
        categories=[review["category"]],
        dimensions=review["dimensions"],
        geo_codes=review["geography"],
        update_kinds=review["update_kinds"],
        valid_days=review["valid_days"],
    )
    # Hard copies leave by hand from NSER-MU; every other means is served by the API.
    with_client = form["storage"] != "hard_copy"
    # The form's contact details go into a new organization only: the registry's record of
    # an existing one is its own.
    made = await partners.create_agreement(
        conn,
        spec,
        organization_id=organization_id,
        with_client=with_client,
        contact={k: v for k, v in form["organization"].items() if k not in ("name", "type")},
    )
    await conn.execute(
        "UPDATE data_requests SET organization_id = $2, agreement_id = $3 WHERE id = $1",
        row["id"],
        made.organization_id,
        made.agreement_id,
    )
    # Findings are due after the agreement ends: its validity runs from this signature.
    await conn.execute(
        """UPDATE obligations SET agreement_id = $2, updated_at = now(),
                  due_on = CASE WHEN kind = 'findings' THEN $3 ELSE due_on END
            WHERE request_id = $1""",
        row["id"],
        made.agreement_id,
        date.today() + timedelta(days=review["valid_days"]) + FINDINGS_GRACE,
    )
    if review.get("update_frequency"):
        await conn.execute(
            """INSERT INTO obligations (request_id, agreement_id, kind, description, due_on)
               VALUES ($1, $2, 'updates', $3, $4)""",
            row["id"],
            made.agreement_id,
            f"Send {', '.join(review['update_kinds'])} updates {review['update_frequency']}"
            + (f"; quality checks: {review['quality_checks']}" if review["quality_checks"] else ""),
            date.today() + UPDATE_PERIODS[review["update_frequency"]],
        )
    answer: dict[str, Any] = {
        "organization_id": str(made.organization_id),
        "agreement_id": str(made.agreement_id),
    }
    if made.client_id is not None:
        answer |= {"client_id": made.client_id, "client_secret": made.client_secret}
    chosen = {"choice": kind, "organization_id": str(made.organization_id), "matched": matched}
    return {
        "event": {"agreement_id": str(made.agreement_id), "organization": chosen},
        "answer": answer,
        "audit": {"organization": kind, "organization_id": str(made.organization_id)},
    }


EFFECTS: dict[Action, Any] = {
    Action.start_review: _nothing,
    Action.review: _review,
    Action.record_interview: _interview,
    Action.recommend: _recommend,
    Action.approve: _approve,
    Action.reject: _decide,
    Action.sign: _sign,
    Action.withdraw: _nothing,
}


async def staff_view(pool: asyncpg.Pool, principal: Principal, ident: str) -> dict[str, Any]:
    """Everything about one request, with the timeline's actors (audited: it holds contacts)."""
    async with pool.acquire() as conn, conn.transaction():
        request_id = await resolve(conn, ident)
        row = await conn.fetchrow("SELECT * FROM data_requests WHERE id = $1", request_id)
        timeline = await casework.staff_timeline(conn, REQUESTS, request_id)
        matched = await matching_organizations(
            conn, row["organization_key"], row["organization_type"]
        )
        await audit.append_action(
            conn, principal, "GET /v1/staff/requests/{id}", {"request": row["reference"]}
        )
    quote: dict[str, Any] | None = None
    if row["review"] is not None:
        quote = quote_of(row).as_json()
    return {
        "request_id": str(row["id"]),
        "reference": row["reference"],
        "status": row["status"],
        "submitted_at": row["created_at"],
        "updated_at": row["updated_at"],
        "form": casework.loads(row["form"]),
        "previous_requests": casework.loads(row["previous_requests"]),
        "review": casework.loads(row["review"]),
        "households": row["households"],
        "interview": casework.loads(row["interview"]),
        "recommendation": casework.loads(row["recommendation"]),
        "decision": casework.loads(row["decision"]),
        "quote": quote,
        "quote_frozen": row["quote"] is not None,
        # Set at signature (requests submitted before the officer's choice existed may hold
        # a link made at submission, which nothing uses: not shown).
        "organization_id": (
            str(row["organization_id"]) if row["organization_id"] and row["agreement_id"] else None
        ),
        "matching_organizations": [
            {
                "organization_id": str(m["id"]),
                "name": m["name"],
                "type": m["type"],
                "registered_at": m["created_at"],
            }
            for m in matched
        ],
        "agreement_id": str(row["agreement_id"]) if row["agreement_id"] else None,
        "allowed_actions": [
            a.value
            for a in machine.allowed_actions(
                State(row["status"]), machine.roles_of(principal.roles)
            )
        ],
        "timeline": timeline,
    }


async def list_requests(
    pool: asyncpg.Pool, status: list[str], limit: int, before: datetime | None
) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT id, reference, status, organization_type, form->'organization'->>'name' AS org,
                  form->'categories' AS categories, created_at, updated_at
             FROM data_requests
            WHERE (cardinality($1::text[]) = 0 OR status = ANY($1::text[]))
              AND ($2::timestamptz IS NULL OR created_at < $2)
            ORDER BY created_at DESC, id LIMIT $3""",
        status,
        before,
        limit,
    )
    return [
        {
            "request_id": str(r["id"]),
            "reference": r["reference"],
            "status": r["status"],
            "organization": r["org"],
            "organization_type": r["organization_type"],
            "categories": casework.loads(r["categories"]),
            "submitted_at": r["created_at"],
            "updated_at": r["updated_at"],
        }
        for r in rows
    ]


async def quote(pool: asyncpg.Pool, principal: Principal, ident: str) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        request_id = await resolve(conn, ident)
        row = await conn.fetchrow("SELECT * FROM data_requests WHERE id = $1", request_id)
        answer = quote_of(row).as_json()
        await audit.append_action(
            conn, principal, "GET /v1/staff/requests/{id}/quote", {"request": row["reference"]}
        )
    return {**answer, "frozen": row["quote"] is not None}


async def expire_agreements(conn: asyncpg.Connection) -> int:
    """Agreements past their validity become ``expired``, and their requests follow (the
    ``system`` pseudo-role's ``expire``). Access already stops at ``valid_to``: this makes
    the status say so. Run by ``nser partners expire`` (daily, from cron or a timer)."""
    async with conn.transaction():
        expired = await conn.fetch(
            """UPDATE agreements SET status = 'expired', updated_at = now(),
                      status_reason = 'validity ended'
                WHERE status IN ('active', 'suspended') AND valid_to <= now()
                RETURNING id"""
        )
        ids = [r["id"] for r in expired]
        rows = await conn.fetch(
            """SELECT id, status FROM data_requests
                WHERE agreement_id = ANY($1::uuid[]) AND status IN ('active', 'suspended')
                FOR UPDATE""",
            ids,
        )
        for row in rows:
            before = State(row["status"])
            after = machine.next_state(before, Action.expire, [Role.system])
            await _set_status(conn, row["id"], after)
            await casework.append_event(
                conn, REQUESTS, row["id"], Action.expire, before, after, None, ["system"], {}
            )
    return len(ids)
