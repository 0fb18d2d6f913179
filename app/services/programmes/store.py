"""Programmes in the database: create, version the rule, name in agreements, read.

A rule version is written once and never edited: a change is a new version (the latest is
in force), so an eligibility answer can always be traced to the rule that gave it, as a
score is traced to its PMT model. Every rule is validated (``rules.parse_rule``, and its
geography codes against ``geo_units``) before it is stored; a refused rule stores nothing.
Staff writes are audited as actions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from app.auth.partner import Principal
from app.errors import Conflict, NotFound, ValidationFailed
from app.schemas import programmes as s
from app.services.audit import trail as audit
from app.services.programmes import rules
from app.services.programmes.rules import Rule, RuleError

assert set(s.Condition.__args__) == set(rules.CONDITIONS)  # type: ignore[attr-defined]

_SELECT = """
SELECT p.id, p.code, p.name, p.organization_id, o.name AS organization, p.description,
       p.status, p.closed_at, p.closed_reason, p.updated_at, r.version, r.rule
  FROM programmes p
  JOIN organizations o ON o.id = p.organization_id
  JOIN LATERAL (SELECT version, rule FROM programme_rules
                 WHERE programme_id = p.id ORDER BY version DESC LIMIT 1) r ON true
"""


@dataclass(frozen=True)
class Current:
    """A programme and the rule version in force."""

    id: uuid.UUID
    code: str
    status: str
    closed_at: datetime | None
    closed_reason: str | None  # staff only: not in ``view``
    version: int
    rule: Rule
    view: dict[str, Any]


def _view(row: asyncpg.Record) -> dict[str, Any]:
    rule = row["rule"]
    return {
        "programme_id": str(row["id"]),
        "code": row["code"],
        "name": row["name"],
        "organization_id": str(row["organization_id"]),
        "organization": row["organization"],
        "description": row["description"],
        "status": row["status"],
        "closed_at": row["closed_at"],
        "version": row["version"],
        "rule": orjson.loads(rule) if isinstance(rule, str) else rule,
        "updated_at": row["updated_at"],
    }


def _current(row: asyncpg.Record) -> Current:
    view = _view(row)
    return Current(
        id=row["id"],
        code=row["code"],
        status=row["status"],
        closed_at=row["closed_at"],
        closed_reason=row["closed_reason"],
        version=row["version"],
        rule=rules.parse_rule(view["rule"]),
        view=view,
    )


def _ref_clause(ref: str) -> tuple[str, object]:
    """A programme is named by its id or by its code."""
    try:
        return "p.id = $1", uuid.UUID(ref)
    except ValueError:
        return "p.code = $1", ref


async def get(conn: asyncpg.Connection | asyncpg.Pool, ref: str) -> Current | None:
    where, value = _ref_clause(ref)
    row = await conn.fetchrow(f"{_SELECT} WHERE {where}", value)
    return _current(row) if row is not None else None


async def for_partner(conn: asyncpg.Connection | asyncpg.Pool, p: Principal, ref: str) -> Current:
    """The programme if the partner's agreement names it; 404 otherwise (an unnamed
    programme is not revealed to exist)."""
    where, value = _ref_clause(ref)
    row = await conn.fetchrow(
        f"""{_SELECT} WHERE {where} AND EXISTS (SELECT 1 FROM agreement_programmes ap
             WHERE ap.programme_id = p.id AND ap.agreement_id = $2)""",
        value,
        p.agreement_id,
    )
    if row is None:
        raise NotFound(f"no programme {ref!r} is named by the agreement")
    return _current(row)


async def list_for_partner(pool: asyncpg.Pool, p: Principal) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        f"""{_SELECT} JOIN agreement_programmes ap
              ON ap.programme_id = p.id AND ap.agreement_id = $1 ORDER BY p.code""",
        p.agreement_id,
    )
    return [_view(row) for row in rows]


async def list_all(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [_view(row) for row in await pool.fetch(f"{_SELECT} ORDER BY p.code")]


async def staff_view(pool: asyncpg.Pool, ref: str) -> dict[str, Any]:
    """The programme with every rule version, the agreements that name it, and why it
    was closed (staff only)."""
    current = await get(pool, ref)
    if current is None:
        raise NotFound(f"no programme {ref!r}")
    versions = await pool.fetch(
        """SELECT version, rule::text AS rule, note, created_by, created_at FROM programme_rules
            WHERE programme_id = $1 ORDER BY version""",
        current.id,
    )
    agreements = await pool.fetch(
        "SELECT agreement_id FROM agreement_programmes WHERE programme_id = $1 "
        "ORDER BY agreement_id",
        current.id,
    )
    return {
        **current.view,
        "closed_reason": current.closed_reason,
        "versions": [{**dict(v), "rule": orjson.loads(v["rule"])} for v in versions],
        "agreements": [str(a["agreement_id"]) for a in agreements],
    }


async def validate_rule(conn: asyncpg.Connection | asyncpg.Pool, doc: dict[str, Any]) -> Rule:
    """Parse the document and check its geography codes exist; 422 names the problem."""
    try:
        rule = rules.parse_rule(doc)
    except RuleError as exc:
        raise ValidationFailed(str(exc)) from exc
    if rule.geography:
        known = await conn.fetch(
            "SELECT code FROM geo_units WHERE code = ANY($1::text[])", list(rule.geography)
        )
        missing = sorted(set(rule.geography) - {r["code"] for r in known})
        if missing:
            raise ValidationFailed(f"rule.geography: {missing[0]!r} is not a known unit code")
    return rule


async def create(pool: asyncpg.Pool, staff: Principal, body: s.ProgrammeIn) -> dict[str, Any]:
    try:
        organization = uuid.UUID(body.organization_id)
    except ValueError as exc:
        raise ValidationFailed("organization_id is not a UUID") from exc
    try:
        uuid.UUID(body.code)
    except ValueError:
        pass
    else:
        raise ValidationFailed("code must not be shaped like an id")
    async with pool.acquire() as conn, conn.transaction():
        rule = await validate_rule(conn, body.rule.model_dump())
        if not await conn.fetchval("SELECT 1 FROM organizations WHERE id = $1", organization):
            raise ValidationFailed(f"organization_id: no organization {organization}")
        programme_id = await conn.fetchval(
            """INSERT INTO programmes (code, name, organization_id, description)
               VALUES ($1, $2, $3, $4) ON CONFLICT (code) DO NOTHING RETURNING id""",
            body.code,
            body.name,
            organization,
            body.description,
        )
        if programme_id is None:
            raise Conflict(f"a programme with code {body.code!r} exists")
        await _insert_version(conn, programme_id, 1, rule, body.note, staff.client_id)
        await audit.append_action(
            conn,
            staff,
            "POST /v1/staff/programmes",
            {"programme": programme_id, "code": body.code, "version": 1},
        )
    return await staff_view(pool, str(programme_id))


async def _insert_version(
    conn: asyncpg.Connection,
    programme_id: uuid.UUID,
    version: int,
    rule: Rule,
    note: str,
    actor: str,
) -> None:
    await conn.execute(
        """INSERT INTO programme_rules (programme_id, version, rule, note, created_by)
           VALUES ($1, $2, $3::jsonb, $4, $5)""",
        programme_id,
        version,
        orjson.dumps(rules.normalize(rule)).decode(),
        note,
        actor,
    )
    await conn.execute("UPDATE programmes SET updated_at = now() WHERE id = $1", programme_id)


async def add_version(
    pool: asyncpg.Pool, staff: Principal, ref: str, body: s.RuleVersionIn
) -> dict[str, Any]:
    """A new rule version, in force from now; the earlier ones are kept."""
    where, value = _ref_clause(ref)
    async with pool.acquire() as conn, conn.transaction():
        # The row lock serializes two new versions of one programme.
        programme_id = await conn.fetchval(
            f"SELECT p.id FROM programmes p WHERE {where} FOR UPDATE", value
        )
        if programme_id is None:
            raise NotFound(f"no programme {ref!r}")
        rule = await validate_rule(conn, body.rule.model_dump())
        version = await conn.fetchval(
            "SELECT max(version) + 1 FROM programme_rules WHERE programme_id = $1", programme_id
        )
        await _insert_version(conn, programme_id, version, rule, body.note, staff.client_id)
        await audit.append_action(
            conn,
            staff,
            "POST /v1/staff/programmes/{programme_id}/versions",
            {"programme": programme_id, "version": version},
        )
    return await staff_view(pool, str(programme_id))


async def name_in_agreement(
    conn: asyncpg.Connection,
    actor: Principal | None,
    programme_ref: str,
    agreement_id: uuid.UUID,
    named: bool = True,
) -> None:
    """Name (or stop naming) a programme in an agreement. ``actor`` None: the operator CLI."""
    current = await get(conn, programme_ref)
    if current is None:
        raise NotFound(f"no programme {programme_ref!r}")
    async with conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM agreements WHERE id = $1", agreement_id):
            raise NotFound(f"no agreement {agreement_id}")
        if named:
            await conn.execute(
                """INSERT INTO agreement_programmes (agreement_id, programme_id) VALUES ($1, $2)
                   ON CONFLICT DO NOTHING""",
                agreement_id,
                current.id,
            )
        else:
            await conn.execute(
                "DELETE FROM agreement_programmes WHERE agreement_id = $1 AND programme_id = $2",
                agreement_id,
                current.id,
            )
        if actor is not None:
            await audit.append_action(
                conn,
                actor,
                ("PUT" if named else "DELETE")
                + " /v1/staff/programmes/{programme_id}/agreements/{agreement_id}",
                {"programme": current.id, "agreement": agreement_id},
            )


async def set_named(
    pool: asyncpg.Pool, staff: Principal, ref: str, agreement_id: uuid.UUID, named: bool
) -> None:
    async with pool.acquire() as conn:
        await name_in_agreement(conn, staff, ref, agreement_id, named)


__all__ = [
    "Current",
    "add_version",
    "create",
    "for_partner",
    "get",
    "list_all",
    "list_for_partner",
    "name_in_agreement",
    "set_named",
    "staff_view",
    "validate_rule",
]
