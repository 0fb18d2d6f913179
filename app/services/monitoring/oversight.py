"""One agreement as its overseers see it: scope, clients, usage, spot checks, and what each
of the overseers' roles may do to it now.

Read in one REPEATABLE READ snapshot: the agreement with its organization (name and type
only: no contact details, so the page is not a read of personal data), the request that led
to it, its API clients, its spot checks newest first (``ix_spot_checks_agreement``), and the
clients' calls of the last 30 days by endpoint and day from the audit log
(:mod:`app.services.audit.usage`). The changes themselves are ``spot_checks.record`` and
the Secretary's ``spot_checks.suspend``, ``revoke`` and ``resume``, the same as the staff
API's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from app.errors import NotFound
from app.services.audit import usage
from app.services.monitoring import spot_checks

SPOT_CHECKS_SHOWN = 50


@dataclass(frozen=True)
class AgreementView:
    agreement: dict[str, Any]
    request: dict[str, Any] | None
    clients: list[dict[str, Any]]
    spot_checks: list[dict[str, Any]]
    spot_check_count: int
    usage: usage.Usage
    as_of: datetime


def actions_for(status: str, roles: frozenset[str]) -> list[str]:
    """What a member holding ``roles`` may do to an agreement in ``status``: the M&E team
    records spot checks (failed ones may suspend an active agreement or revoke an active or
    suspended one); the Secretary suspends an active agreement, revokes an active or
    suspended one (``secretary_suspend``, ``secretary_revoke``: with reasons, no spot
    check) and lifts a suspension."""
    out: list[str] = []
    if spot_checks.CHECKERS & roles:
        if status in ("active", "suspended"):
            out.append("spot_check")
        if status == "active":
            out.append("suspend")
        if status in ("active", "suspended"):
            out.append("revoke")
    if "secretary" in roles:
        if status == "suspended":
            out.append("resume")
        if status == "active":
            out.append("secretary_suspend")
        if status in ("active", "suspended"):
            out.append("secretary_revoke")
    return out


async def view(conn: asyncpg.Connection, agreement_id: uuid.UUID) -> AgreementView:
    """The agreement ``agreement_id`` (404 if there is none)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        now: datetime = await conn.fetchval("SELECT now()")
        row = await conn.fetchrow(
            """SELECT a.id, a.status, a.status_reason, a.categories, a.dimensions, a.geo_codes,
                      a.update_kinds, a.extract_geo_level, a.rate_limit, a.valid_from,
                      a.valid_to, a.created_at, o.id AS organization_id,
                      o.name AS organization, o.type AS organization_type
                 FROM agreements a JOIN organizations o ON o.id = a.organization_id
                WHERE a.id = $1""",
            agreement_id,
        )
        if row is None:
            raise NotFound("no such agreement")
        geo = await conn.fetch(
            "SELECT code, name_en, name_ur, level FROM geo_units WHERE code = ANY($1::text[])",
            list(row["geo_codes"]),
        )
        request = await conn.fetchrow(
            "SELECT id, reference, status FROM data_requests WHERE agreement_id = $1 LIMIT 1",
            agreement_id,
        )
        clients = await conn.fetch(
            """SELECT client_id, created_at, disabled_at FROM api_clients
                WHERE agreement_id = $1 ORDER BY created_at, client_id""",
            agreement_id,
        )
        checks = await conn.fetch(
            """SELECT id, at, by_client_id, outcome, findings, action FROM spot_checks
                WHERE agreement_id = $1 ORDER BY at DESC LIMIT $2""",
            agreement_id,
            SPOT_CHECKS_SHOWN,
        )
        check_count: int = await conn.fetchval(
            "SELECT count(*) FROM spot_checks WHERE agreement_id = $1", agreement_id
        )
        used = await usage.by_endpoint_and_day(conn, [c["client_id"] for c in clients], now)
    names = {g["code"]: g for g in geo}
    agreement = {
        **dict(row),
        "categories": list(row["categories"]),
        "dimensions": list(row["dimensions"]),
        "update_kinds": list(row["update_kinds"]),
        "geography": [
            {
                "code": code,
                "name_en": names[code]["name_en"] if code in names else None,
                "name_ur": names[code]["name_ur"] if code in names else None,
                "level": names[code]["level"] if code in names else None,
            }
            for code in row["geo_codes"]
        ],
    }
    return AgreementView(
        agreement=agreement,
        request=dict(request) if request else None,
        clients=[dict(c) for c in clients],
        spot_checks=[dict(c) for c in checks],
        spot_check_count=check_count,
        usage=used,
        as_of=now,
    )
