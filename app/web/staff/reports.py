"""The M&E reports in the console (``/staff/reports…``): tables, a chart, CSV downloads.

The six reports of ``GET /v1/staff/reports/{name}`` (requests, data shared, updates,
revenue, obligations, grievances), read through the same service function
(:func:`app.services.monitoring.reports.read`), so the same snapshot, numbers and audit row
(one per page or download, with its range and format). Who may read them is the API's
rule: the scope ``reports:read`` of the member's roles now (officer, secretary, M&E,
staff administrator); anyone else gets a 403 page that says so.

Each report page shows every table of the report, a bar chart of its main figures
(server-rendered SVG, with the chart's numbers as a table) and a CSV download per table:
the service's own CSV (``Report.csv``), so the download holds the same numbers as the table.
The page writes codes (request states, organization types, categories, kinds, grievance
states and reasons) as words in its language (:data:`CODE_LABELS`); the CSV keeps the
codes, for machines.

Also here, for the console's other report-like pages (``audit``, ``analyses``):
:class:`Refused` and :class:`ConsoleRoute` (a 403 or 409 as a page saying why),
:func:`holding` (a dependency: the member's roles must carry a scope) and
:func:`bar_chart`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse, Response

from app.auth.scopes import Scope
from app.deps import PoolDep, SettingsDep
from app.errors import ValidationFailed
from app.schemas.updates import UPDATE_KINDS
from app.services.grievances.sla import Targets
from app.services.monitoring import reports
from app.services.staff.sessions import StaffSession
from app.web.i18n import N_
from app.web.render import WebContext, WebDep, page, web_context
from app.web.staff.auth import StaffRoute, StaffSessionDep
from app.web.staff.grievances import REASONS as GRIEVANCE_REASONS
from app.web.staff.grievances import STATES as GRIEVANCE_STATES
from app.web.staff.requests import CATEGORY_LABELS, ORGANIZATION_TYPES, STATE_LABELS
from app.web.staff.work import OBLIGATION_KINDS
from app.web.staff.work import OVERDUE as BREACHES

INDEX = "/staff/reports"


# --- shared by the console's report, audit and analysis pages ---------------------------


class Refused(Exception):
    """A page the member may not open, or an action refused in this state: a page (403,
    409…) that says why (``message``, already translated)."""

    def __init__(self, session: StaffSession, status: int, message: str) -> None:
        super().__init__(message)
        self.session = session
        self.status = status
        self.message = message


class ConsoleRoute(StaffRoute):
    """The console's route class, turning :class:`Refused` into its page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def refusing(request: Request) -> Response:
            try:
                return await handler(request)
            except Refused as exc:
                lang = request.query_params.get("lang")
                web = await web_context(request, lang if lang in ("en", "ur") else None)
                return page(
                    web,
                    "staff/reports/refused.html",
                    status=exc.status,
                    member=exc.session,
                    message=exc.message,
                )

        return refusing


def holding(scope: Scope, why: str) -> Callable[..., Coroutine[Any, Any, StaffSession]]:
    """A dependency: the signed-in member, whose roles now carry ``scope``; else a 403 page
    saying ``why`` (an ``N_`` message: who may)."""

    async def check(web: WebDep, session: StaffSessionDep) -> StaffSession:
        if scope not in session.principal.scopes:
            raise Refused(session, 403, web.gettext(why))
        return session

    return check


@dataclass(frozen=True)
class Bar:
    label: str
    value: float


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    desc: str,
    number: Callable[[float], str],
    rtl: bool = False,
    chart_id: str = "chart",
    width: int = 720,
    row_height: int = 30,
    label_width: int = 210,
) -> Markup:
    """A horizontal bar chart as inline SVG (every text escaped). With ``rtl`` the labels
    are on the right and the bars grow leftwards. Shown beside a table of the same numbers."""
    top = 6
    value_room = 90
    span = width - label_width - value_room
    largest = max((b.value for b in bars), default=0) or 1
    height = top * 2 + max(len(bars), 1) * row_height
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'direction="{"rtl" if rtl else "ltr"}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]
    # Text runs in the page's direction (the svg's ``direction``): "start" is the left edge
    # of a left-to-right text and the right edge of an Urdu one.
    for i, bar in enumerate(bars):
        y = top + i * row_height
        mid = y + row_height / 2
        w = max(bar.value, 0) / largest * span
        if rtl:
            label_x, x = width - 4, width - label_width - w
            value_x = x - 6
        else:
            label_x, x = 4, label_width
            value_x = x + w + 6
        parts.append(
            f'<text x="{label_x}" y="{mid:.1f}" dominant-baseline="central" '
            f'text-anchor="start" class="chart-label">{escape(bar.label)}</text>'
            f'<rect x="{x:.1f}" y="{y + 5}" width="{w:.1f}" height="{row_height - 10}" '
            f'class="chart-bar"/>'
            f'<text x="{value_x:.1f}" y="{mid:.1f}" dominant-baseline="central" '
            f'text-anchor="start" class="chart-number">{escape(number(bar.value))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above is escaped


def cell_text(web: WebContext, value: Any) -> str:
    """A table cell as the page's language writes it (the CSV keeps the raw value)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return web.gettext("Yes") if value else web.gettext("No")
    if isinstance(value, int):
        return web.fmt.number(value)
    if isinstance(value, float):
        return web.fmt.number(value, 2)
    if isinstance(value, Decimal):
        return web.fmt.number(float(value), 2)
    if isinstance(value, datetime):
        return web.fmt.datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


# --- the reports ------------------------------------------------------------------------

router = APIRouter(prefix=INDEX, route_class=ConsoleRoute, include_in_schema=False)

READERS = N_(
    "Reports are read by officers, the Secretary, the monitoring and evaluation team and "
    "staff administrators. Your roles do not include any of these."
)
Reader = Annotated[StaffSession, Depends(holding(Scope.REPORTS_READ, READERS))]

TITLES = {
    "requests": N_("Data-sharing requests"),
    "data-shared": N_("Data shared with partners"),
    "updates": N_("Updates sent back by partners"),
    "revenue": N_("Revenue"),
    "obligations": N_("Partners' obligations"),
    "grievances": N_("Grievances"),
}
SUMMARIES = {
    "requests": N_(
        "Requests submitted in the range, by status, organization type and category granted, "
        "and the hours requests spent in each stage."
    ),
    "data-shared": N_(
        "Households and members delivered to each agreement, by data category, from the audit log."
    ),
    "updates": N_(
        "Records partners sent back, by agreement and kind: applied, rejected, in conflict "
        "or unchanged."
    ),
    "revenue": N_(
        "Requests approved in the range, by organization type: how they were priced, the "
        "amounts quoted and waived (PKR)."
    ),
    "obligations": N_("Obligations due in the range, by kind: open, overdue and met."),
    "grievances": N_(
        "Grievances filed in the range, by reason: outcomes, open cases, cases past the "
        "service-level targets and the median days to triage and to close."
    ),
}
TABLE_TITLES = {
    ("requests", "rows"): N_("Requests by status, organization type and category"),
    ("requests", "stages"): N_("Time spent in each stage (hours)"),
    ("data-shared", "rows"): N_("Data delivered per agreement and category"),
    ("updates", "rows"): N_("Records sent back per agreement and kind"),
    ("revenue", "rows"): N_("Approvals and amounts per organization type"),
    ("obligations", "rows"): N_("Obligations per kind"),
    ("obligations", "overdue"): N_("Overdue obligations"),
    ("grievances", "rows"): N_("Grievances per reason"),
    ("grievances", "overdue"): N_("Overdue grievances"),
}
COLUMN_LABELS = {
    "status": N_("Status"),
    "organization_type": N_("Organization type"),
    "category": N_("Category"),
    "requests": N_("Requests"),
    "stage": N_("Stage"),
    "entered": N_("Entered"),
    "open": N_("Open"),
    "median_hours": N_("Median hours"),
    "p90_hours": N_("90th percentile hours"),
    "organization": N_("Organization"),
    "organization_id": N_("Organization id"),
    "agreement_id": N_("Agreement"),
    "accesses": N_("Accesses"),
    "households": N_("Households"),
    "members": N_("Members"),
    "kind": N_("Kind"),
    "dry_run": N_("Dry run"),
    "batches": N_("Batches"),
    "received": N_("Received"),
    "applied": N_("Applied"),
    "rejected": N_("Rejected"),
    "conflicts": N_("Conflicts"),
    "unchanged": N_("Unchanged"),
    "approved": N_("Approved"),
    "formula": N_("Formula"),
    "case_by_case": N_("Case by case"),
    "gratis": N_("Gratis"),
    "quoted_total": N_("Quoted (PKR)"),
    "waived_total": N_("Waived (PKR)"),
    "overdue": N_("Overdue"),
    "met": N_("Met"),
    "total": N_("Total"),
    "obligation_id": N_("Obligation"),
    "request": N_("Request"),
    "due_on": N_("Due on"),
    "days_overdue": N_("Days overdue"),
    "reason": N_("Reason"),
    "filed": N_("Filed"),
    "score_changed": N_("Score changed"),
    "score_unchanged": N_("Score unchanged"),
    "triage_overdue": N_("Triage overdue"),
    "resolve_overdue": N_("Resolution overdue"),
    "triaged_late": N_("Triaged late"),
    "closed_late": N_("Closed late"),
    "median_days_to_triage": N_("Median days to triage"),
    "median_days_to_close": N_("Median days to close"),
    "grievance_id": N_("Grievance"),
    "reference": N_("Reference"),
    "filed_at": N_("Filed at"),
    "breach": N_("Target missed"),
    "due_at": N_("Due at"),
}
# What each report's chart shows: a title, then how its bars come from the report.
CHART_TITLES = {
    "requests": N_("Requests by status"),
    "data-shared": N_("Households delivered by data category"),
    "updates": N_("Records sent back by outcome"),
    "revenue": N_("Requests approved by organization type"),
    "obligations": N_("Obligations by kind"),
    "grievances": N_("Grievances filed by reason"),
}
_TEXT_COLUMNS = frozenset(
    {
        "status",
        "organization_type",
        "category",
        "stage",
        "organization",
        "organization_id",
        "agreement_id",
        "kind",
        "obligation_id",
        "request",
        "reason",
        "grievance_id",
        "reference",
        "breach",
        "due_on",
        "filed_at",
        "due_at",
    }
)
# The words for the codes in the reports' cells and chart labels, by report and column,
# the console's own where it has them (request states, organization types, categories,
# grievance states and reasons, obligation kinds). The CSV keeps the codes.
UPDATE_KIND_LABELS = {
    "member_birth": N_("A birth"),
    "member_death": N_("A death"),
    "member_update": N_("A member's details"),
    "address_change": N_("A change of address"),
    "phone_change": N_("A change of phone number"),
    "household_survey": N_("A household survey"),
    "new_household": N_("A new household"),
    "member_move": N_("A member moving household"),
    reports.OTHER_KIND: N_("Another or unreadable kind"),
}
assert set(UPDATE_KIND_LABELS) == {*UPDATE_KINDS, reports.OTHER_KIND}
CODE_LABELS: dict[tuple[str, str], Mapping[str, str]] = {
    ("requests", "status"): STATE_LABELS,
    ("requests", "stage"): STATE_LABELS,
    ("requests", "organization_type"): ORGANIZATION_TYPES,
    ("requests", "category"): {**CATEGORY_LABELS, reports.UNREVIEWED: N_("Not reviewed yet")},
    ("data-shared", "category"): CATEGORY_LABELS,
    ("updates", "kind"): UPDATE_KIND_LABELS,
    ("revenue", "organization_type"): ORGANIZATION_TYPES,
    ("obligations", "kind"): OBLIGATION_KINDS,
    ("grievances", "status"): GRIEVANCE_STATES,
    ("grievances", "reason"): GRIEVANCE_REASONS,
    ("grievances", "breach"): BREACHES,
}
# Each chart's bars (but ``updates``'s, its totals by outcome): a code column and the
# number summed per code.
CHART_BARS = {
    "requests": ("status", "requests"),
    "data-shared": ("category", "households"),
    "revenue": ("organization_type", "approved"),
    "obligations": ("kind", "total"),
    "grievances": ("reason", "filed"),
}
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def code_word(name: str, column: str, value: Any, gettext: Callable[[str], str]) -> str | None:
    """The word for a code in column ``column`` of report ``name``, in the page's language;
    None for a value that is not a code (a name, an id, a number) or a code with no word."""
    label = CODE_LABELS.get((name, column), {}).get(value) if isinstance(value, str) else None
    return gettext(label) if label is not None else None


def chart_bars(report: reports.Report, gettext: Callable[[str], str]) -> list[Bar]:
    """The numbers the report's chart draws (also shown as a table under it), each bar
    labelled with the word for its code."""
    name, rows = report.name, report.rows
    if name == "updates":
        outcomes = ("applied", "rejected", "conflicts", "unchanged")
        return [Bar(gettext(COLUMN_LABELS[k]), float(report.totals[k])) for k in outcomes]
    key, value = CHART_BARS[name]
    totals: dict[str, float] = {}
    for row in rows:
        code = str(row[key])
        totals[code] = totals.get(code, 0) + float(row[value] or 0)
    return [Bar(code_word(name, key, code, gettext) or code, v) for code, v in totals.items()]


def _label_width(bars: Sequence[Bar]) -> int:
    """Room for the chart's longest label (about 7.5 px a character at 14 px), 210 to 380."""
    longest = max((len(bar.label) for bar in bars), default=0)
    return min(380, max(210, round(longest * 7.5) + 12))


def _day(web: WebContext, value: str | None, field: str, errors: dict[str, str]) -> date | None:
    if not value:
        return None
    if _DAY.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    errors[field] = web.gettext("Enter a date as YYYY-MM-DD, for example 2026-01-31.")
    return None


Name = Annotated[reports.ReportName, Path(description="the report")]
Day = Annotated[str | None, Query(max_length=10)]
TableName = Annotated[str, Query(pattern="^(rows|stages|overdue)$")]


@router.get("", response_class=HTMLResponse)
async def index(web: WebDep, member: Reader) -> HTMLResponse:
    """The reports this member may read, each with what it counts."""
    return page(
        web,
        "staff/reports/index.html",
        member=member,
        names=reports.REPORTS,
        titles=TITLES,
        summaries=SUMMARIES,
    )


@router.get("/{name}", response_class=HTMLResponse)
async def report_page(
    web: WebDep,
    member: Reader,
    pool: PoolDep,
    settings: SettingsDep,
    name: Name,
    start: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=10)] = None,
) -> HTMLResponse:
    """One report over ``from``..``to`` (UTC days, inclusive, each optional): its tables,
    its chart and a CSV download per table. Audited as the API's read."""
    errors: dict[str, str] = {}
    first, last = _day(web, start, "from", errors), _day(web, end, "to", errors)
    if first and last and first > last:
        errors["from"] = web.gettext("The first day must be on or before the last day.")
    report = None
    if not errors:
        try:
            report = await reports.read(
                pool,
                member.principal,
                name,
                first,
                last,
                fmt="json",
                grievance_targets=Targets.of(settings),
            )
        except ValidationFailed as exc:
            errors["from"] = exc.detail
    values: dict[str, Any] = {
        "member": member,
        "name": name,
        "names": reports.REPORTS,
        "titles": TITLES,
        "summaries": SUMMARIES,
        "start": start or "",
        "end": end or "",
        "errors": errors,
        "report": report,
    }
    if report is None:
        return page(web, "staff/reports/report.html", status=422, **values)
    bars = chart_bars(report, web.gettext)
    chart_title = web.gettext(CHART_TITLES[name])
    tables = [
        {
            "name": table,
            "title": web.gettext(TABLE_TITLES[(name, table)]),
            "columns": reports.COLUMNS[(name, table)],
            "rows": report.table(table),
        }
        for table in reports.TABLES[name]
    ]
    query = "&".join(f"{k}={v}" for k, v in (("from", first), ("to", last)) if v)
    return page(
        web,
        "staff/reports/report.html",
        **values,
        tables=tables,
        labels=COLUMN_LABELS,
        text_columns=_TEXT_COLUMNS,
        show=lambda value: cell_text(web, value),
        word=lambda column, value: code_word(name, column, value, web.gettext),
        bars=bars,
        chart_title=chart_title,
        chart=bar_chart(
            bars,
            title=chart_title,
            desc=web.gettext(
                "A bar for each value; the same numbers are in the table under the chart."
            ),
            number=lambda v: web.fmt.number(v),
            rtl=web.dir == "rtl",
            chart_id=f"chart-{name}",
            label_width=_label_width(bars),
        ),
        csv_query=query,
    )


@router.get("/{name}/csv")
async def report_csv(
    member: Reader,
    pool: PoolDep,
    settings: SettingsDep,
    name: Name,
    start: Annotated[str | None, Query(alias="from", pattern=r"^\d{4}-\d{2}-\d{2}$")] = None,
    end: Annotated[str | None, Query(alias="to", pattern=r"^\d{4}-\d{2}-\d{2}$")] = None,
    table: TableName = "rows",
) -> Response:
    """One table of the report as CSV (the service's CSV: the page's numbers), downloaded
    as a file. Audited as the API's CSV read."""
    try:
        first = date.fromisoformat(start) if start else None
        last = date.fromisoformat(end) if end else None
    except ValueError:
        raise ValidationFailed("from, to: not a date (YYYY-MM-DD)") from None
    report = await reports.read(
        pool,
        member.principal,
        name,
        first,
        last,
        fmt="csv",
        table=table,
        grievance_targets=Targets.of(settings),
    )
    span = "-".join(str(d) for d in (first, last) if d) or "all"
    return Response(
        report.csv(table),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="nser-{name}-{table}-{span}.csv"',
            "Cache-Control": "no-store",
        },
    )
