"""Custom analysis (category ii): a protected cross-tab of rows x columns, stored.

The request names row and column dimensions, the measures (households, members, mean PMT
score, share of households below a cut-off) and the beneficiary filters. It is checked
against the agreement like the partner summaries (geography 403, locked dimensions 403)
and against the agreement's earlier aggregate queries (409, differencing), computed through
``protect`` and stored with the request, the agreement, the registry data version and the
time, so that ``GET /v1/partner/analysis/{id}`` gives the same answer again. Both are audited.

**The M&E team** (staff with role ``me``, scope ``analysis:read``) asks through the same
path (``POST /v1/staff/analysis``), as the recipient :func:`staff_analyst` describes: the
whole country, the unlocked dimensions and the locked ones ``NSER_STAFF_ANALYSIS_DIMENSIONS``
grants (checked like an agreement's), the same disclosure policy, and one differencing log
for the whole team (no agreement: ``agreement_id`` NULL). Its analyses are stored and read
back by the team only, and audited with the staff member's id.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg
import orjson

from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.errors import Forbidden, NotFound, ValidationFailed
from app.replicas import Reads
from app.schemas.products import AnalysisRequest
from app.services.audit import trail as audit
from app.services.disclosure.policy import Policy
from app.services.disclosure.table import Cell
from app.services.products import aggregate, differencing
from app.services.registry import version as registry_version
from app.services.sharing.beneficiaries import check_geography
from app.services.sharing.beneficiaries_sql import Filters

ENDPOINT = "POST /v1/partner/analysis"
READ_ENDPOINT = "GET /v1/partner/analysis/{analysis_id}"
STAFF_ENDPOINT = "POST /v1/staff/analysis"
STAFF_READ_ENDPOINT = "GET /v1/staff/analysis/{analysis_id}"


def staff_analyst(staff: Principal, dimensions: Iterable[str]) -> Principal:
    """A staff member holding ``analysis:read`` (role ``me``) as a recipient of category ii:
    the whole country (no geography scope), the unlocked dimensions and ``dimensions`` (the
    locked ones granted to the staff, ``NSER_STAFF_ANALYSIS_DIMENSIONS``), no agreement
    (the staff's own differencing log). 403 for anyone else."""
    if staff.kind != "staff" or Scope.ANALYSIS_READ not in staff.scopes:
        raise Forbidden("staff analyses are the M&E team's (role me, scope analysis:read)")
    return dataclasses.replace(
        staff,
        agreement_id=None,
        organization_id=None,
        categories=frozenset({"ii"}),
        dimensions=frozenset(dimensions),
        geo_codes=(),
    )


def _endpoints(p: Principal) -> tuple[str, str]:
    """What the audit log records of an analysis asked, and of one read again."""
    if p.kind == "staff":
        return STAFF_ENDPOINT, STAFF_READ_ENDPOINT
    if p.agreement_id is None:
        raise AssertionError("a partner's analysis without its agreement")
    return ENDPOINT, READ_ENDPOINT


def filters_of(request: AnalysisRequest) -> Filters:
    given = request.filters
    return Filters(
        province=list(given.province),
        division=list(given.division),
        district=list(given.district),
        tehsil=list(given.tehsil),
        union_council=list(given.union_council),
        score_min=given.score_min,
        score_max=given.score_max,
        poverty_band=list(dict.fromkeys(given.poverty_band)),
        member_type=list(dict.fromkeys(given.member_type)),
    )


def dimensions_of(p: Principal, request: AnalysisRequest) -> list[str]:
    """Rows then columns, checked like a partner's group_by (422 unknown, 403 not granted)."""
    dims = aggregate.parse_group_by([*request.rows, *request.columns], granted=p.dimensions)
    if "share_below" in request.measures and request.cut_off is None:
        raise ValidationFailed("cut_off: required when measures include share_below")
    return dims


def _render(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "analysis_id": str(row["id"]),
        "query_id": row["query_id"],
        "computed_at": row["computed_at"].isoformat(),
        "registry_version": row["registry_version"],
        "request": AnalysisRequest.model_validate(orjson.loads(row["request"])).model_dump(
            mode="json"
        ),
        "cells": orjson.loads(row["cells"]),
        "margins": orjson.loads(row["margins"]),
        "disclosure": orjson.loads(row["disclosure"]),
    }


async def run(
    reads: Reads, p: Principal, request: AnalysisRequest, policy: Policy
) -> dict[str, Any]:
    """Count (in one snapshot, on a read replica when the service has one), then check, log
    and audit in one transaction on the primary; protect it, store it (on the primary)."""
    endpoint, _ = _endpoints(p)
    dims = dimensions_of(p, request)
    f = filters_of(request)
    await check_geography(reads, p, f)

    async def count(conn: asyncpg.Connection) -> tuple[differencing.Sketch, list[Cell]]:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            mine = await differencing.selection(conn, f, p.geo_codes)
            interior = await aggregate.interior_cells(conn, dims, f, p.geo_codes, request.cut_off)
            return mine, interior

    mine, interior = await reads.run(count)
    cells = aggregate.full_table(dims, interior)
    members = cells[-1].members  # the grand total, last
    pool = reads.primary
    async with pool.acquire() as conn, conn.transaction():
        await differencing.lock_agreement(conn, p.agreement_id)
        version = await registry_version.data_version(conn)
        overlap = await differencing.check_selection(conn, p, f, mine, policy.threshold)
        query_id = await differencing.log_query(conn, p, "analysis", dims, overlap)
        await audit.append(
            conn,
            audit.AuditRecord.of(
                p,
                endpoint=endpoint,
                filters=f.as_audit(),
                dimensions=dims,
                households=overlap.households,
                members=members,
            ),
        )
    table = await aggregate.protect_table(dims, cells, policy, request.measures)
    row = await pool.fetchrow(
        """INSERT INTO analysis_results (agreement_id, client_id, query_id, request, cells,
               margins, disclosure, households, members, registry_version)
           VALUES ($1, $2, $3, $4::jsonb, $5::json, $6::json, $7::json, $8, $9, $10)
           RETURNING id, query_id, computed_at, registry_version, request::text AS request,
                     cells::text AS cells, margins::text AS margins,
                     disclosure::text AS disclosure""",
        p.agreement_id,
        p.client_id,
        query_id,
        request.model_dump_json(),
        orjson.dumps(table.rows).decode(),
        orjson.dumps(table.margins).decode(),
        orjson.dumps(table.disclosure.as_json()).decode(),
        overlap.households,
        members,
        version,
    )
    assert row is not None
    return _render(row)


async def get(pool: asyncpg.Pool, p: Principal, analysis_id: uuid.UUID) -> dict[str, Any]:
    """A stored analysis of the caller's own agreement (the staff's: one of the staff's),
    404 otherwise; audited."""
    _, endpoint = _endpoints(p)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT id, query_id, computed_at, registry_version, request::text AS request,
                      cells::text AS cells, margins::text AS margins,
                      disclosure::text AS disclosure, households, members
                 FROM analysis_results
                WHERE id = $1 AND agreement_id IS NOT DISTINCT FROM $2""",
            analysis_id,
            p.agreement_id,
        )
        if row is None:
            whose = "of the staff" if p.agreement_id is None else "under this agreement"
            raise NotFound(f"no analysis {analysis_id} {whose}")
        answer = _render(row)
        request = AnalysisRequest.model_validate(answer["request"])
        await audit.append(
            conn,
            audit.AuditRecord.of(
                p,
                endpoint=endpoint,
                filters={**filters_of(request).as_audit(), "analysis_id": str(analysis_id)},
                dimensions=[*request.rows, *request.columns],
                households=row["households"],
                members=row["members"],
            ),
        )
    return answer
