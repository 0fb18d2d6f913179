"""The M&E team's reports (protocol §6.4): requests, data shared, updates, revenue, obligations,
grievances.

Each report covers a range of days, ``start`` to ``end`` inclusive (both optional), as UTC
days: a timestamp ``t`` is in the range when ``start 00:00 UTC <= t < (end + 1) 00:00 UTC``.
Every report is read from one REPEATABLE READ snapshot; the read is then written to the audit
log before the report is handed back, so an unaudited report never leaves the service.

A report is a main table, ``rows``, with ``totals`` over it; ``requests`` and ``obligations``
carry a second table (``stages``, ``overdue``). :data:`COLUMNS` fixes every table's columns
and their order (the CSV header), so an empty table still has its header.

``requests``
    Requests *submitted* in the range (``data_requests.created_at``). ``rows``: one per
    ``(status, organization_type, category)`` with its count; ``category`` is the category
    the officer granted at review, or ``"unreviewed"`` before a review (a request may ask
    for several categories; only the reviewed one is ever granted). ``stages``: for every
    non-terminal state, the time requests spent in it, in hours, from ``request_events``:
    a stay runs from the event that entered the state to the request's next event. A stay
    still running (the request's current state) counts up to ``generated_at``, so a backlog
    shows as long stays rather than vanishing from the figures; ``open`` says how many such
    stays there are. Terminal states (rejected, withdrawn, revoked, expired) are left out:
    nothing leaves them, so time "spent" in them means nothing. Median and 90th percentile
    are PostgreSQL ``percentile_cont`` (linear interpolation); null for a state never
    entered.

``data-shared``
    What partners received, from the audit log (rows with an agreement, ``at`` in range),
    per agreement and category: summaries are i, custom analyses (asked or read again) ii,
    maps vii, geo-tagged points viii; score look-ups (``/v1/partner/scores/{cnic}``) are
    category iii; beneficiary lists (``/v1/partner/beneficiaries (page|csv|ndjson)``) are iv, or v
    when the access selected dimensions; anonymized extracts are vi. Other audited actions
    of a partner (none deliver data) are not counted. ``households`` and ``members`` are the
    sums of what each access delivered (the log holds counts, not ids): a household sent
    twice counts twice.

``updates``
    Batches partners sent back, received in range (``update_batches.received_at``), dry
    runs included (a dry run matches records against the registry as a real run does, so
    M&E sees it), registry staff's own batches (grievance re-surveys) excluded. One row per
    agreement, record kind (stored on each record's outcome, ``update_results.kind``; a
    kind the service does not know, or a record whose kind could not be read, is
    ``"other"``) and ``dry_run``: records ``received`` (with an outcome so far) and how
    many were ``applied``, ``rejected``, in ``conflicts`` or ``unchanged``; ``batches`` is
    how many batches held that kind. ``unchanged`` is the registry's truth
    (``update_results.unchanged``), also where the partner was told ``applied`` because
    "unchanged" would have confirmed a value it may not read; ``applied`` counts only the
    records that changed the registry (or, in a dry run, would have). ``totals`` also
    counts records of batches still waiting for the worker (``pending``), which have no
    kind yet, and the dry runs among the batches and records (``dry_run_batches``,
    ``dry_run_records``).

``revenue``
    Requests the Secretary approved in range (the ``approve`` event's time), per
    organization type: counts by the frozen quote's basis, ``quoted_total`` (G of formula
    and case-by-case quotes) and ``waived_total`` (for gratis quotes, the formula amount
    C + F they carry for information, 0 when absent: a gratis case-by-case category), as
    decimal strings of rupees.

``obligations``
    Obligations *due* in range (``due_on``), per kind: ``open`` (not yet due), ``overdue``
    (open and due before today, UTC), ``met``, ``total``; ``overdue`` lists the overdue ones.
    The three statuses do not overlap, as in ``GET /v1/staff/obligations``.

``grievances``
    Grievances *filed* in range, per reason: outcomes, open, overdue now against the
    service-level targets (``NSER_GRIEVANCE_TRIAGE_DAYS``, ``NSER_GRIEVANCE_RESOLVE_DAYS``),
    late steps and median days to triage and to closure; ``overdue`` lists the overdue
    cases. What is counted, and how, is ``app.services.grievances.report``.

Public: ``ReportName``, ``REPORTS``, ``TABLES``, ``COLUMNS``, ``Report``, ``build``,
``read``, ``check_table``, ``to_csv``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, get_args

import asyncpg

from app.auth.partner import Principal
from app.errors import ValidationFailed
from app.models.requests import OBLIGATION_KINDS
from app.models.sharing import ORGANIZATION_TYPES
from app.schemas.updates import UPDATE_KINDS
from app.services.audit import trail as audit
from app.services.grievances import report as grievance_report
from app.services.grievances.sla import Targets
from app.services.products import analysis, geo, maps, summaries
from app.services.requests.machine import TERMINAL, State
from app.services.sharing.rules import CATEGORIES

ReportName = Literal["requests", "data-shared", "updates", "revenue", "obligations", "grievances"]
REPORTS: tuple[str, ...] = get_args(ReportName)
Format = Literal["json", "csv"]
ENDPOINT = "GET /v1/staff/reports/{name}"

# Each report's tables: the first is the main one, ``rows``.
TABLES: Mapping[str, tuple[str, ...]] = {
    "requests": ("rows", "stages"),
    "data-shared": ("rows",),
    "updates": ("rows",),
    "revenue": ("rows",),
    "obligations": ("rows", "overdue"),
    "grievances": ("rows", "overdue"),
}
_PARTNER = ("organization", "organization_id", "agreement_id")
_OUTCOMES = ("applied", "rejected", "conflicts", "unchanged")
COLUMNS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("requests", "rows"): ("status", "organization_type", "category", "requests"),
    ("requests", "stages"): ("stage", "entered", "open", "median_hours", "p90_hours"),
    ("data-shared", "rows"): (*_PARTNER, "category", "accesses", "households", "members"),
    ("updates", "rows"): (*_PARTNER, "kind", "dry_run", "batches", "received", *_OUTCOMES),
    ("revenue", "rows"): (
        "organization_type",
        "approved",
        "formula",
        "case_by_case",
        "gratis",
        "quoted_total",
        "waived_total",
    ),
    ("obligations", "rows"): ("kind", "open", "overdue", "met", "total"),
    ("obligations", "overdue"): (
        "obligation_id",
        "organization",
        "request",
        "agreement_id",
        "kind",
        "due_on",
        "days_overdue",
    ),
    ("grievances", "rows"): grievance_report.ROWS,
    ("grievances", "overdue"): grievance_report.OVERDUE,
}

UNREVIEWED = "unreviewed"
OTHER_KIND = "other"
# The audit endpoints of partner data access (app.services.sharing), by category.
SCORES_ENDPOINT = "/v1/partner/scores/{cnic}"
BENEFICIARIES_PREFIX = "/v1/partner/beneficiaries"
EXTRACTS_PREFIX = "/v1/partner/extracts/anonymized"
_STATES = list(State)
STAGES: tuple[State, ...] = tuple(s for s in State if s not in TERMINAL)


@dataclass(frozen=True)
class Range:
    """Inclusive UTC days; ``None`` is open-ended."""

    start: date | None
    end: date | None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValidationFailed(
                f"from ({self.start}) is after to ({self.end})",
                errors=[
                    {
                        "loc": ["query", "from"],
                        "field": "from",
                        "message": "must be on or before to",
                        "type": "value_error",
                    }
                ],
            )

    @property
    def since(self) -> datetime | None:
        """The first instant of the range."""
        return None if self.start is None else datetime.combine(self.start, time(), UTC)

    @property
    def until(self) -> datetime | None:
        """The first instant after the range (None when it runs to the end of time)."""
        if self.end is None or self.end == date.max:
            return None
        return datetime.combine(self.end + timedelta(days=1), time(), UTC)


@dataclass(frozen=True)
class Report:
    name: str
    range: Range
    generated_at: datetime
    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "report": self.name,
            "from": self.range.start,
            "to": self.range.end,
            "generated_at": self.generated_at,
            "rows": self.rows,
            "totals": self.totals,
            **self.tables,
        }

    def table(self, name: str) -> list[dict[str, Any]]:
        return self.rows if name == "rows" else self.tables[name]

    def csv(self, table: str = "rows") -> str:
        return to_csv(COLUMNS[(self.name, table)], self.table(table))


# --- rendering ------------------------------------------------------------------------

# A cell a spreadsheet would run as a formula (organization names come from the public form).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # as in the JSON form
        return "true" if value else "false"
    if isinstance(value, date | datetime):
        return value.isoformat()
    text = str(value)
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def to_csv(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """A header line, then one line per row, cells in ``columns`` order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row[c]) for c in columns])
    return buffer.getvalue()


def _money(value: Decimal | None) -> str:
    """A decimal string of rupees: "725000", "7.5", "0" (no exponent, no trailing zeros)."""
    text = format(value or Decimal(0), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def _hours(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _partner(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "organization": row["organization"],
        "organization_id": str(row["organization_id"]) if row["organization_id"] else None,
        "agreement_id": str(row["agreement_id"]),
    }


def _order(values: Sequence[str]) -> dict[str, int]:
    return {v: i for i, v in enumerate(values)}


# --- the reports ----------------------------------------------------------------------


async def _requests(conn: asyncpg.Connection, r: Range, now: datetime) -> Report:
    submitted = """data_requests d
        WHERE ($1::timestamptz IS NULL OR d.created_at >= $1)
          AND ($2::timestamptz IS NULL OR d.created_at < $2)"""
    counts = await conn.fetch(
        f"""SELECT d.status, d.organization_type,
                   coalesce(d.review->>'category', '{UNREVIEWED}') AS category,
                   count(*) AS n
              FROM {submitted}
             GROUP BY 1, 2, 3""",
        r.since,
        r.until,
    )
    stays = await conn.fetch(
        f"""WITH stays AS (
                SELECT e.to_status AS stage,
                       lead(e.at) OVER (PARTITION BY e.request_id ORDER BY e.id) AS left_at,
                       e.at
                  FROM request_events e
                 WHERE e.request_id IN (SELECT d.id FROM {submitted}))
            SELECT stage, count(*) AS entered, count(*) FILTER (WHERE left_at IS NULL) AS open,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY hours) AS median,
                   percentile_cont(0.9) WITHIN GROUP (ORDER BY hours) AS p90
              FROM (SELECT stage, left_at,
                           greatest(extract(epoch FROM coalesce(left_at, $3) - at), 0)::float8
                               / 3600 AS hours
                      FROM stays) s
             WHERE stage <> ALL($4::text[])
             GROUP BY stage""",
        r.since,
        r.until,
        now,
        [s.value for s in TERMINAL],
    )
    states = _order(_STATES)
    types = _order(ORGANIZATION_TYPES)
    categories = _order((*CATEGORIES, UNREVIEWED))
    rows = [
        {
            "status": c["status"],
            "organization_type": c["organization_type"],
            "category": c["category"],
            "requests": c["n"],
        }
        for c in sorted(
            counts,
            key=lambda c: (
                states.get(c["status"], len(states)),
                types.get(c["organization_type"], len(types)),
                categories.get(c["category"], len(categories)),
                c["category"],
            ),
        )
    ]
    by_stage = {s["stage"]: s for s in stays}
    stages = []
    for state in STAGES:
        s = by_stage.get(state.value)
        stages.append(
            {
                "stage": state.value,
                "entered": s["entered"] if s else 0,
                "open": s["open"] if s else 0,
                "median_hours": _hours(s["median"]) if s else None,
                "p90_hours": _hours(s["p90"]) if s else None,
            }
        )
    totals = {"requests": sum(row["requests"] for row in rows)}
    return Report("requests", r, now, rows, totals, {"stages": stages})


async def _data_shared(conn: asyncpg.Connection, r: Range, now: datetime) -> Report:
    found = await conn.fetch(
        """SELECT s.agreement_id, s.organization_id, o.name AS organization, s.category,
                  count(*) AS accesses, sum(s.households)::bigint AS households,
                  sum(s.members)::bigint AS members
             FROM (SELECT a.agreement_id, a.organization_id, a.households, a.members,
                          CASE
                            WHEN a.endpoint = $3 THEN 'iii'
                            WHEN starts_with(a.endpoint, $4) THEN
                              CASE WHEN cardinality(a.dimensions) > 0 THEN 'v' ELSE 'iv' END
                            WHEN starts_with(a.endpoint, $5) THEN 'vi'
                            WHEN a.endpoint = $6 THEN 'i'
                            WHEN a.endpoint = ANY($7::text[]) THEN 'ii'
                            WHEN starts_with(a.endpoint, $8) THEN 'vii'
                            WHEN starts_with(a.endpoint, $9) THEN 'viii'
                          END AS category
                     FROM audit_log a
                    WHERE a.agreement_id IS NOT NULL
                      AND ($1::timestamptz IS NULL OR a.at >= $1)
                      AND ($2::timestamptz IS NULL OR a.at < $2)) s
             LEFT JOIN organizations o ON o.id = s.organization_id
            WHERE s.category IS NOT NULL
            GROUP BY 1, 2, 3, 4
            ORDER BY o.name, s.agreement_id, s.category""",
        r.since,
        r.until,
        SCORES_ENDPOINT,
        BENEFICIARIES_PREFIX + " (",
        EXTRACTS_PREFIX + " (",
        summaries.ENDPOINT,
        [analysis.ENDPOINT, analysis.READ_ENDPOINT],
        maps.PARTNER_ENDPOINT + "/",
        geo.ENDPOINT + " (",
    )
    rows = [
        {
            **_partner(f),
            "category": f["category"],
            "accesses": f["accesses"],
            "households": f["households"],
            "members": f["members"],
        }
        for f in found
    ]
    totals = {k: sum(row[k] for row in rows) for k in ("accesses", "households", "members")}
    return Report("data-shared", r, now, rows, totals)


_UPDATES_RANGE = """b.source = 'partner'
    AND ($1::timestamptz IS NULL OR b.received_at >= $1)
    AND ($2::timestamptz IS NULL OR b.received_at < $2)"""


async def _updates(conn: asyncpg.Connection, r: Range, now: datetime) -> Report:
    found = await conn.fetch(
        f"""SELECT b.agreement_id, b.organization_id, o.name AS organization,
                   CASE WHEN u.kind = ANY($3::text[]) THEN u.kind ELSE '{OTHER_KIND}' END AS kind,
                   b.dry_run,
                   count(DISTINCT b.id) AS batches, count(*) AS received,
                   count(*) FILTER (WHERE u.outcome = 'applied' AND NOT u.unchanged)
                       AS applied,
                   count(*) FILTER (WHERE u.outcome = 'rejected') AS rejected,
                   count(*) FILTER (WHERE u.outcome = 'conflict') AS conflicts,
                   count(*) FILTER (WHERE u.unchanged) AS unchanged
              FROM update_batches b
              JOIN update_results u ON u.batch_id = b.id
              LEFT JOIN organizations o ON o.id = b.organization_id
             WHERE {_UPDATES_RANGE}
             GROUP BY 1, 2, 3, 4, 5""",
        r.since,
        r.until,
        list(UPDATE_KINDS),
    )
    batches = await conn.fetchrow(
        f"""SELECT count(*) AS batches, coalesce(sum(b.record_count), 0)::bigint AS records,
                   count(*) FILTER (WHERE b.dry_run) AS dry_run_batches,
                   coalesce(sum(b.record_count) FILTER (WHERE b.dry_run), 0)::bigint
                       AS dry_run_records,
                   (SELECT count(*) FROM update_results u JOIN update_batches b
                       ON b.id = u.batch_id WHERE {_UPDATES_RANGE}) AS outcomes
              FROM update_batches b WHERE {_UPDATES_RANGE}""",
        r.since,
        r.until,
    )
    assert batches is not None
    kinds = _order((*UPDATE_KINDS, OTHER_KIND))
    rows = [
        {
            **_partner(f),
            "kind": f["kind"],
            "dry_run": f["dry_run"],
            "batches": f["batches"],
            "received": f["received"],
            **{k: f[k] for k in _OUTCOMES},
        }
        for f in sorted(
            found,
            key=lambda f: (
                f["organization"] or "",
                str(f["agreement_id"]),
                kinds[f["kind"]],
                f["dry_run"],
            ),
        )
    ]
    totals: dict[str, Any] = {
        "batches": batches["batches"],
        "records": batches["records"],
        "pending": batches["records"] - batches["outcomes"],
        "dry_run_batches": batches["dry_run_batches"],
        "dry_run_records": batches["dry_run_records"],
        **{k: sum(row[k] for row in rows) for k in ("received", *_OUTCOMES)},
    }
    return Report("updates", r, now, rows, totals)


async def _revenue(conn: asyncpg.Connection, r: Range, now: datetime) -> Report:
    found = await conn.fetch(
        """SELECT d.organization_type, count(*) AS approved,
                  count(*) FILTER (WHERE d.quote->>'basis' = 'formula') AS formula,
                  count(*) FILTER (WHERE d.quote->>'basis' = 'case_by_case') AS case_by_case,
                  count(*) FILTER (WHERE d.quote->>'basis' = 'gratis') AS gratis,
                  sum((d.quote->>'G')::numeric)
                      FILTER (WHERE d.quote->>'basis' IN ('formula', 'case_by_case')) AS quoted,
                  sum(coalesce((d.quote->>'C')::numeric, 0)
                      + coalesce((d.quote->>'F')::numeric, 0))
                      FILTER (WHERE d.quote->>'basis' = 'gratis') AS waived
             FROM request_events e JOIN data_requests d ON d.id = e.request_id
            WHERE e.action = 'approve' AND e.to_status = 'approved'
              AND ($1::timestamptz IS NULL OR e.at >= $1)
              AND ($2::timestamptz IS NULL OR e.at < $2)
            GROUP BY 1""",
        r.since,
        r.until,
    )
    by_type = {f["organization_type"]: f for f in found}
    counts = ("approved", "formula", "case_by_case", "gratis")
    types = [*ORGANIZATION_TYPES, *sorted(set(by_type) - set(ORGANIZATION_TYPES))]
    rows = []
    quoted_total = waived_total = Decimal(0)
    for kind in types:
        f = by_type.get(kind)
        quoted = (f["quoted"] if f else None) or Decimal(0)
        waived = (f["waived"] if f else None) or Decimal(0)
        quoted_total += quoted
        waived_total += waived
        rows.append(
            {
                "organization_type": kind,
                **{c: f[c] if f else 0 for c in counts},
                "quoted_total": _money(quoted),
                "waived_total": _money(waived),
            }
        )
    totals: dict[str, Any] = {
        **{c: sum(row[c] for row in rows) for c in counts},
        "quoted_total": _money(quoted_total),
        "waived_total": _money(waived_total),
        "currency": "PKR",
    }
    return Report("revenue", r, now, rows, totals)


async def _obligations(conn: asyncpg.Connection, r: Range, now: datetime) -> Report:
    today = now.date()
    due = "($1::date IS NULL OR o.due_on >= $1) AND ($2::date IS NULL OR o.due_on <= $2)"
    found = await conn.fetch(
        f"""SELECT o.kind,
                   count(*) FILTER (WHERE o.status = 'open' AND o.due_on >= $3) AS open,
                   count(*) FILTER (WHERE o.status = 'open' AND o.due_on < $3) AS overdue,
                   count(*) FILTER (WHERE o.status = 'met') AS met,
                   count(*) AS total
              FROM obligations o WHERE {due} GROUP BY 1""",
        r.start,
        r.end,
        today,
    )
    late = await conn.fetch(
        f"""SELECT o.id, o.kind, o.due_on, o.agreement_id, d.reference,
                   coalesce(org.name, d.form->'organization'->>'name') AS organization
              FROM obligations o
              JOIN data_requests d ON d.id = o.request_id
              LEFT JOIN organizations org ON org.id = d.organization_id
             WHERE {due} AND o.status = 'open' AND o.due_on < $3
             ORDER BY o.due_on, o.id""",
        r.start,
        r.end,
        today,
    )
    by_kind = {f["kind"]: f for f in found}
    fields = ("open", "overdue", "met", "total")
    kinds = [*OBLIGATION_KINDS, *sorted(set(by_kind) - set(OBLIGATION_KINDS))]
    rows = [
        {"kind": kind, **{k: by_kind[kind][k] if kind in by_kind else 0 for k in fields}}
        for kind in kinds
    ]
    overdue = [
        {
            "obligation_id": str(o["id"]),
            "organization": o["organization"],
            "request": o["reference"],
            "agreement_id": str(o["agreement_id"]) if o["agreement_id"] else None,
            "kind": o["kind"],
            "due_on": o["due_on"],
            "days_overdue": (today - o["due_on"]).days,
        }
        for o in late
    ]
    totals: dict[str, Any] = {k: sum(row[k] for row in rows) for k in fields}
    totals["as_of"] = today
    return Report("obligations", r, now, rows, totals, {"overdue": overdue})


async def _grievances(
    conn: asyncpg.Connection, r: Range, now: datetime, targets: Targets
) -> Report:
    rows, totals, overdue = await grievance_report.build(conn, r.since, r.until, now, targets)
    return Report("grievances", r, now, rows, totals, {"overdue": overdue})


_BUILDERS = {
    "requests": _requests,
    "data-shared": _data_shared,
    "updates": _updates,
    "revenue": _revenue,
    "obligations": _obligations,
}


async def build(
    conn: asyncpg.Connection,
    name: str,
    start: date | None,
    end: date | None,
    now: datetime | None = None,
    *,
    grievance_targets: Targets | None = None,
) -> Report:
    """The report ``name`` over ``start``..``end`` (inclusive), from one snapshot; 422 for an
    unknown name or ``start`` after ``end``. Not audited: see :func:`read`.
    ``grievance_targets``: the service-level targets (default 7 and 30 days)."""
    _check_name(name)
    span = Range(start, end)
    now = now or datetime.now(UTC)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if name == "grievances":
            return await _grievances(conn, span, now, grievance_targets or Targets())
        return await _BUILDERS[name](conn, span, now)


def _check_name(name: str) -> None:
    if name not in TABLES:
        raise ValidationFailed(f"unknown report {name!r} (one of {', '.join(REPORTS)})")


def check_table(name: str, table: str) -> None:
    """422 unless ``table`` is one of report ``name``'s tables."""
    _check_name(name)
    if table not in TABLES[name]:
        raise ValidationFailed(
            f"report {name} has no table {table!r} (one of {', '.join(TABLES[name])})",
            errors=[
                {
                    "loc": ["query", "table"],
                    "field": "table",
                    "message": f"one of {', '.join(TABLES[name])}",
                    "type": "value_error",
                }
            ],
        )


async def read(
    pool: asyncpg.Pool,
    principal: Principal,
    name: str,
    start: date | None,
    end: date | None,
    *,
    fmt: Format = "json",
    table: str = "rows",
    grievance_targets: Targets | None = None,
) -> Report:
    """A staff member reads a report: built, then the read is audited (report, range, format)
    before it is handed back."""
    check_table(name, table)
    async with pool.acquire() as conn:
        report = await build(conn, name, start, end, grievance_targets=grievance_targets)
        filters: dict[str, Any] = {"report": name, "from": start, "to": end, "format": fmt}
        if fmt == "csv" and table != "rows":
            filters["table"] = table
        await audit.append(
            conn,
            audit.AuditRecord.of(
                principal,
                endpoint=ENDPOINT,
                filters=filters,
                dimensions=[],
                households=0,
                members=0,
            ),
        )
    return report


__all__ = [
    "COLUMNS",
    "REPORTS",
    "TABLES",
    "Report",
    "ReportName",
    "build",
    "check_table",
    "read",
    "to_csv",
]
