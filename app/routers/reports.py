"""``GET /v1/staff/reports/{name}``: the M&E reports (protocol §6.4), JSON or CSV.

What each report counts, and how, is ``app.services.monitoring.reports``. Staff holding
``reports:read`` (roles officer, secretary, me, admin) read them; every read is audited.
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import PoolDep, SettingsDep
from app.schemas.base import IsoDate
from app.services.grievances.sla import Targets
from app.services.monitoring import reports

router = APIRouter(prefix="/v1/staff", tags=["staff"])

ReportReader = Annotated[Principal, Depends(require_scope(Scope.REPORTS_READ))]
CSV = "text/csv"
Table = Literal["rows", "stages", "overdue"]

_ROWS = {"type": "array", "items": {"type": "object"}}
_REPORT_SCHEMA = {
    "type": "object",
    "required": ["report", "from", "to", "generated_at", "rows", "totals"],
    "properties": {
        "report": {"type": "string", "enum": list(reports.REPORTS)},
        "from": {"type": ["string", "null"], "format": "date"},
        "to": {"type": ["string", "null"], "format": "date"},
        "generated_at": {"type": "string", "format": "date-time"},
        "rows": _ROWS,
        "totals": {"type": "object"},
        "stages": {**_ROWS, "description": "requests only: time spent in each stage"},
        "overdue": {
            **_ROWS,
            "description": "obligations and grievances only: the overdue obligations or cases",
        },
    },
}


def wants_csv(accept: str) -> bool:
    """CSV when ``Accept`` names ``text/csv`` (q > 0) ahead of an explicit JSON."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        weights[media] = max(q, weights.get(media, 0.0))
    csv_q = weights.get(CSV, 0.0)
    return csv_q > 0 and csv_q >= weights.get("application/json", 0.0)


@router.get(
    "/reports/{name}",
    response_class=Response,
    responses={
        200: {
            "description": "The report: JSON (default) or CSV (`Accept: text/csv`)",
            "content": {"application/json": {"schema": _REPORT_SCHEMA}, CSV: {}},
        }
    },
)
async def get_report(
    request: Request,
    name: Annotated[
        reports.ReportName,
        Path(description="requests, data-shared, updates, revenue, obligations or grievances"),
    ],
    staff: ReportReader,
    pool: PoolDep,
    settings: SettingsDep,
    start: Annotated[
        IsoDate | None, Query(alias="from", description="first day (UTC), inclusive")
    ] = None,
    end: Annotated[
        IsoDate | None, Query(alias="to", description="last day (UTC), inclusive")
    ] = None,
    table: Annotated[
        Table,
        Query(
            description="CSV only: which table (requests: rows or stages; obligations and "
            "grievances: rows or overdue; JSON always holds every table)"
        ),
    ] = "rows",
) -> Response:
    """A monitoring report over `from`..`to` (UTC days, inclusive; each optional).

    - `requests`: submitted in range, per status, organization type and granted category
      ("unreviewed" before review); `stages`: hours spent in each non-terminal state
      (median, 90th percentile; a stay still running counts up to `generated_at`).
    - `data-shared`: households and members delivered per agreement and category (iii
      scores, iv lists, v lists with dimensions, vi extracts), from the audit log.
    - `updates`: records partners sent back per agreement and kind, by outcome (dry runs
      excluded).
    - `revenue`: approvals in range per organization type; quoted and waived totals (PKR).
    - `obligations`: due in range, per kind: open, overdue, met; `overdue` lists them.
    - `grievances`: filed in range, per reason: outcomes, open, overdue against the
      service-level targets, median days to triage and to closure; `overdue` lists them.

    JSON holds every table; CSV (`Accept: text/csv`) holds one, chosen by `table`. Every
    read is audited. `from` after `to`, an unknown report or table is 422.
    """
    fmt: reports.Format = "csv" if wants_csv(request.headers.get("accept", "")) else "json"
    report = await reports.read(
        pool, staff, name, start, end, fmt=fmt, table=table, grievance_targets=Targets.of(settings)
    )
    if fmt == "csv":
        return Response(report.csv(table), media_type="text/csv; charset=utf-8")
    return Response(orjson.dumps(report.as_json()), media_type="application/json")
