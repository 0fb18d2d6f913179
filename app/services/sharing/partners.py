"""Organizations, agreements and API clients: creation and status changes (operator CLI)."""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from limits import parse_many

from app.auth import secrets as client_secrets
from app.models.requests import STAFF_ROLES
from app.services.audit import trail as audit
from app.services.sharing import rules as sharing
from app.services.sharing.rules import RuleViolation


@dataclass(frozen=True)
class NewPartner:
    organization_id: uuid.UUID
    agreement_id: uuid.UUID
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class NewAgreement:
    organization_id: uuid.UUID
    agreement_id: uuid.UUID
    client_id: str | None
    client_secret: str | None


@dataclass(frozen=True)
class NewStaffClient:
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class PartnerSpec:
    name: str
    type: str
    categories: list[str]
    dimensions: list[str]
    geo_codes: list[str]
    update_kinds: list[str]
    valid_days: int = 365
    rate_limit: str | None = None
    extract_geo_level: str = "tehsil"


async def _check_geo(conn: asyncpg.Connection, codes: list[str]) -> None:
    if not codes:
        return
    known = {
        row["code"]
        for row in await conn.fetch("SELECT code FROM geo_units WHERE code = ANY($1)", codes)
    }
    unknown = [code for code in codes if code not in known]
    if unknown:
        raise RuleViolation(f"unknown geography code {unknown[0]!r}")


def validate(spec: PartnerSpec) -> None:
    if not spec.name.strip():
        raise RuleViolation("an organization name is required")
    sharing.check_organization_type(spec.type)
    sharing.check_categories(spec.categories)
    sharing.check_dimensions(spec.dimensions)
    sharing.check_update_kinds(spec.update_kinds)
    if spec.valid_days < 1:
        raise RuleViolation("--valid-days must be at least 1")
    if spec.extract_geo_level not in sharing.EXTRACT_GEO_LEVELS:
        raise RuleViolation(
            f"extract geography level must be one of {', '.join(sharing.EXTRACT_GEO_LEVELS)}"
        )
    if spec.rate_limit is not None:
        try:
            parse_many(spec.rate_limit)
        except ValueError as exc:
            raise RuleViolation(f"invalid rate limit {spec.rate_limit!r}") from exc


async def create_partner(conn: asyncpg.Connection, spec: PartnerSpec) -> NewPartner:
    """The operator's way (``nser partners create``): organization, agreement and client."""
    made = await create_agreement(conn, spec)
    assert made.client_id is not None
    assert made.client_secret is not None
    return NewPartner(made.organization_id, made.agreement_id, made.client_id, made.client_secret)


async def create_by_operator(conn: asyncpg.Connection, spec: PartnerSpec) -> NewPartner:
    """``nser partners create``: an agreement made outside the request workflow. The audit
    log says so, with what was granted, in the same transaction."""
    async with conn.transaction():
        made = await create_partner(conn, spec)
        await audit.append(
            conn,
            audit.AuditRecord(
                actor_type="operator",
                client_id=None,
                agreement_id=made.agreement_id,
                organization_id=made.organization_id,
                endpoint="nser partners create",
                filters={
                    "workflow": "bypassed",
                    "categories": spec.categories,
                    "geography": spec.geo_codes,
                },
                dimensions=spec.dimensions,
                households=0,
                members=0,
            ),
        )
    return made


async def create_agreement(
    conn: asyncpg.Connection,
    spec: PartnerSpec,
    *,
    organization_id: uuid.UUID | None = None,
    with_client: bool = True,
    contact: dict[str, str] | None = None,
) -> NewAgreement:
    """An agreement for ``spec`` under a new organization (or ``organization_id``), with an
    API client unless ``with_client`` is false; the secret is returned once, never stored.
    ``contact`` is a new organization's contact details; an existing organization's record
    is never changed here."""
    validate(spec)
    await _check_geo(conn, spec.geo_codes)
    now = datetime.now(UTC)
    async with conn.transaction():
        if organization_id is None:
            organization_id = await conn.fetchval(
                """INSERT INTO organizations (name, type, contact) VALUES ($1, $2, $3::jsonb)
                   RETURNING id""",
                spec.name.strip(),
                spec.type,
                json.dumps(contact or {}),
            )
        agreement_id: uuid.UUID = await conn.fetchval(
            """INSERT INTO agreements (organization_id, categories, dimensions, geo_codes,
                   update_kinds, extract_geo_level, rate_limit, pseudonym_key, valid_from,
                   valid_to)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id""",
            organization_id,
            sharing.check_categories(spec.categories),
            sharing.check_dimensions(spec.dimensions),
            list(dict.fromkeys(spec.geo_codes)),
            sharing.check_update_kinds(spec.update_kinds),
            spec.extract_geo_level,
            spec.rate_limit,
            secrets.token_bytes(32),
            now,
            now + timedelta(days=spec.valid_days),
        )
        client_id = secret = None
        if with_client:
            secret = client_secrets.new_client_secret()
            client_id = client_secrets.new_client_id("partner")
            await conn.execute(
                """INSERT INTO api_clients (client_id, kind, agreement_id, secret_hash, name)
                   VALUES ($1, 'partner', $2, $3, $4)""",
                client_id,
                agreement_id,
                client_secrets.hash_secret(secret),
                spec.name.strip(),
            )
    assert organization_id is not None
    return NewAgreement(organization_id, agreement_id, client_id, secret)


async def set_agreement_status(
    conn: asyncpg.Connection, agreement_id: str, status: str, reason: str | None = None
) -> None:
    """The operator's ``nser partners suspend|resume|revoke``: the agreement changes, the
    request that led to it (if any) follows on its timeline, and the audit log records it.
    Revoked and expired agreements are final."""
    try:
        ident = uuid.UUID(agreement_id)
    except ValueError as exc:
        raise RuleViolation(f"not an agreement id: {agreement_id!r}") from exc
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT status, organization_id FROM agreements WHERE id = $1 FOR UPDATE", ident
        )
        if row is None:
            raise RuleViolation(f"no agreement {agreement_id}")
        current = row["status"]
        if current in ("revoked", "expired") and status != current:
            raise RuleViolation(f"agreement {agreement_id} is {current}; it cannot change status")
        await conn.execute(
            """UPDATE agreements SET status = $2, status_reason = $3, updated_at = now()
                WHERE id = $1""",
            ident,
            status,
            reason,
        )
        verb = {"active": "resume", "suspended": "suspend", "revoked": "revoke"}[status]
        request = await conn.fetchrow(
            """SELECT id, status FROM data_requests
                WHERE agreement_id = $1 AND status IN ('active', 'suspended') FOR UPDATE""",
            ident,
        )
        if request is not None and request["status"] != status:
            await conn.execute(
                "UPDATE data_requests SET status = $2, updated_at = now() WHERE id = $1",
                request["id"],
                status,
            )
            await conn.execute(
                """INSERT INTO request_events (request_id, action, from_status, to_status,
                       payload)
                   VALUES ($1, $2, $3, $4,
                           jsonb_build_object('operator', true, 'reason', $5::text))""",
                request["id"],
                verb,
                request["status"],
                status,
                reason,
            )
        await audit.append(
            conn,
            audit.AuditRecord(
                actor_type="operator",
                client_id=None,
                agreement_id=ident,
                organization_id=row["organization_id"],
                endpoint=f"nser partners {verb}",
                filters={"from": current, "to": status, "reason": reason},
                dimensions=[],
                households=0,
                members=0,
            ),
        )


async def create_staff_client(
    conn: asyncpg.Connection, name: str, roles: list[str]
) -> NewStaffClient:
    """A staff client with ``roles`` (at least one): its scopes are its roles', read live.
    A client with no role would hold no scope, so none is created."""
    if not name.strip():
        raise RuleViolation("a name is required")
    roles = list(dict.fromkeys(roles))
    for role in roles:
        if role not in STAFF_ROLES:
            raise RuleViolation(f"unknown role {role!r} (one of {', '.join(STAFF_ROLES)})")
    if not roles:
        raise RuleViolation(
            f"a staff client needs a role ({', '.join(STAFF_ROLES)}): its scopes are its roles'"
        )
    secret = client_secrets.new_client_secret()
    client_id = client_secrets.new_client_id("staff")
    await conn.execute(
        """INSERT INTO api_clients (client_id, kind, agreement_id, secret_hash, name, roles)
           VALUES ($1, 'staff', NULL, $2, $3, $4)""",
        client_id,
        client_secrets.hash_secret(secret),
        name.strip(),
        roles,
    )
    return NewStaffClient(client_id, secret)
