"""Who is calling: the principal behind a verified token, with its agreement read live."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.auth.scopes import agreement_scopes, parse_scope, staff_scopes
from app.errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class Principal:
    client_id: str
    kind: str  # 'partner' | 'staff'
    scopes: frozenset[str]
    agreement_id: uuid.UUID | None = None
    organization_id: uuid.UUID | None = None
    organization_type: str | None = None
    categories: frozenset[str] = frozenset()
    dimensions: frozenset[str] = frozenset()
    geo_codes: tuple[str, ...] = ()
    update_kinds: frozenset[str] = frozenset()
    rate_limit: str | None = None
    extract_geo_level: str = "tehsil"
    pseudonym_key: bytes | None = None
    roles: frozenset[str] = frozenset()  # staff only: officer, committee, secretary, me, admin


# One indexed read per request: the client and, for partners, its agreement and organization.
_PRINCIPAL_SQL = """
SELECT c.client_id, c.kind, c.roles, c.disabled_at, c.staff_disabled_at,
       a.id AS agreement_id, a.status, a.valid_from, a.valid_to, a.categories, a.dimensions,
       a.geo_codes, a.update_kinds, a.rate_limit, a.extract_geo_level, a.pseudonym_key,
       o.id AS organization_id, o.type AS organization_type
  FROM api_clients c
  LEFT JOIN agreements a ON a.id = c.agreement_id
  LEFT JOIN organizations o ON o.id = a.organization_id
 WHERE c.client_id = $1
"""


def check_agreement(row: asyncpg.Record | dict[str, Any], now: datetime | None = None) -> None:
    """Forbidden unless the agreement is active and within its validity, right now."""
    now = now or datetime.now(UTC)
    if row["status"] != "active":
        raise Forbidden(f"agreement {row['agreement_id']} is {row['status']}")
    if not row["valid_from"] <= now < row["valid_to"]:
        raise Forbidden(f"agreement {row['agreement_id']} is outside its validity period")


async def load_principal(
    conn: asyncpg.Connection | asyncpg.Pool, claims: dict[str, Any]
) -> Principal:
    row = await conn.fetchrow(_PRINCIPAL_SQL, claims["sub"])
    if row is None:
        raise Unauthorized("token for an unknown client")
    if row["disabled_at"] is not None:
        raise Forbidden("client credentials are disabled")
    if row["staff_disabled_at"] is not None:
        raise Forbidden("the staff member is disabled")
    granted = parse_scope(claims.get("scope"))
    if row["kind"] == "staff":
        return Principal(
            client_id=row["client_id"],
            kind="staff",
            scopes=granted & staff_scopes(row["roles"]),
            roles=frozenset(row["roles"]),
        )
    if str(row["agreement_id"]) != claims.get("agreement_id"):
        raise Forbidden("token was issued under another agreement")
    check_agreement(row)
    live = agreement_scopes(row["categories"], row["update_kinds"])
    return Principal(
        client_id=row["client_id"],
        kind="partner",
        scopes=granted & live,
        agreement_id=row["agreement_id"],
        organization_id=row["organization_id"],
        organization_type=row["organization_type"],
        categories=frozenset(row["categories"]),
        dimensions=frozenset(row["dimensions"]),
        geo_codes=tuple(row["geo_codes"]),
        update_kinds=frozenset(row["update_kinds"]),
        rate_limit=row["rate_limit"],
        extract_geo_level=row["extract_geo_level"],
        pseudonym_key=bytes(row["pseudonym_key"]),
    )
