"""Summary tables (category i): households and members by area, band, gender, age bracket.

Public (no credentials): down to districts, answered from the public cube the worker
refreshes (app.services.products.public); :func:`public_summary` here counts the same
table straight from the registry, the reference the cube's answers are tested and
measured against. Partners (``summaries:read``): down to union councils within the agreement's
geography, any dimension the agreement grants, audited, and checked against the
agreement's earlier queries for differencing (app.services.products.differencing).

Every table is one GROUP BY for its interior cells, ``with_margins`` for the margins and
``protect`` for suppression and rounding: ``rows`` are the interior cells, ``margins`` the
totals (null for each dimension totalled over), all published by the same ``protect`` call.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from app.auth.partner import Principal
from app.replicas import Reads
from app.services.audit import trail as audit
from app.services.disclosure.policy import Policy
from app.services.disclosure.table import Cell
from app.services.products import aggregate, differencing
from app.services.registry import version as registry_version
from app.services.sharing.beneficiaries import check_geography
from app.services.sharing.beneficiaries_sql import Filters
from app.settings import Settings

ENDPOINT = "GET /v1/partner/summaries"
PUBLIC_GEO_LEVELS = ("province", "division", "district")
COUNTS = ("households", "members")


def policy_of(settings: Settings) -> Policy:
    """The disclosure policy of the service's settings."""
    return Policy(
        threshold=settings.suppress_below, rounding_base=settings.disclosure_rounding_base
    )


_PUBLIC = Principal(client_id="public", kind="public", scopes=frozenset())


async def public_summary(
    pool: asyncpg.Pool | asyncpg.Connection,
    group_by: list[str],
    geo: dict[str, list[str]],
    policy: Policy,
    version: int | None = None,
) -> dict[str, Any]:
    """The public table counted from the registry now (no cube, no cache): ``{"rows",
    "margins", "suppressed_below", "disclosure", "registry_version"}``. ``geo`` holds
    province/division/district codes (ANDed). The service answers visitors from the cube;
    this is the reference its answers must equal."""
    dims = aggregate.parse_group_by(group_by, granted=None)
    f = Filters(
        province=list(geo.get("province", [])),
        division=list(geo.get("division", [])),
        district=list(geo.get("district", [])),
    )
    if version is None:
        version = await registry_version.data_version(pool)
    await check_geography(pool, _PUBLIC, f)  # 422 for an unknown code
    cells = aggregate.full_table(dims, await aggregate.interior_cells(pool, dims, f))
    table = await aggregate.protect_table(dims, cells, policy, COUNTS)
    return {
        "rows": table.rows,
        "margins": table.margins,
        "suppressed_below": policy.threshold,
        "disclosure": table.disclosure.as_json(),
        "registry_version": version,
    }


async def partner_summary(
    reads: Reads, p: Principal, group_by: list[str], f: Filters, policy: Policy
) -> dict[str, Any]:
    """A partner's table: checked against the agreement (403/422) and its earlier queries
    (409); counted (in one snapshot, on a read replica when the service has one), then
    checked, logged and audited in one transaction on the primary, then protected."""
    dims = aggregate.parse_group_by(group_by, granted=p.dimensions)
    await check_geography(reads, p, f)
    assert p.agreement_id is not None

    async def count(conn: asyncpg.Connection) -> tuple[differencing.Sketch, list[Cell]]:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            mine = await differencing.selection(conn, f, p.geo_codes)
            return mine, await aggregate.interior_cells(conn, dims, f, p.geo_codes)

    mine, interior = await reads.run(count)
    cells = aggregate.full_table(dims, interior)
    async with reads.primary.acquire() as conn, conn.transaction():
        await differencing.lock_agreement(conn, p.agreement_id)
        version = await registry_version.data_version(conn)
        overlap = await differencing.check_selection(conn, p, f, mine, policy.threshold)
        query_id = await differencing.log_query(conn, p, "summaries", dims, overlap)
        await audit.append(
            conn,
            audit.AuditRecord.of(
                p,
                endpoint=ENDPOINT,
                filters=f.as_audit(),
                dimensions=dims,
                households=overlap.households,
                members=cells[-1].members,  # the grand total, last
            ),
        )
    table = await aggregate.protect_table(dims, cells, policy, COUNTS)
    return {
        "query_id": query_id,
        "rows": table.rows,
        "margins": table.margins,
        "suppressed_below": policy.threshold,
        "disclosure": table.disclosure.as_json(),
        "registry_version": version,
    }
