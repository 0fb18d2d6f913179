"""The audit log in the console (``/staff/audit``): search it, and see that it is intact.

**Who**: the members whose roles carry ``audit:read`` now — the M&E team (oversight of how
partners and staff use the data) and the staff administrators (who answer for the staff's
accounts); others get a 403 page saying so.

**Search** (:func:`app.services.audit.search.search`): the rows of a partner, an
agreement, a household (the staff reads that name it) or a staff member, in a range of at
most 31 days (the last 7 by default), newest first, 50 a page with a keyset cursor
("Older entries"). Each page is one index range scan, whatever the log's size; a search
with no partner, agreement, household or staff member is not run. Every search (each page)
is itself written to the audit log, with its criteria.

**Verification**: the last checkpoint ``nser audit verify`` recorded (its seal checked) and
how many rows came after it; "Verify the new rows" runs the CLI's incremental verification
(:func:`app.services.audit.search.verify_recent`) when at most 200,000 rows are new (else
the page says to run ``nser audit verify``). A full walk is never run for a page.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import HTMLResponse

from app.auth.scopes import Scope
from app.deps import PoolDep
from app.errors import Conflict, ValidationFailed
from app.services.audit import search
from app.services.audit.trail import Verdict
from app.services.staff.sessions import StaffSession
from app.web.i18n import N_
from app.web.render import WebContext, WebDep, page
from app.web.staff.forms import read_form
from app.web.staff.reports import ConsoleRoute, Refused, holding

PATH = "/staff/audit"
router = APIRouter(prefix=PATH, route_class=ConsoleRoute, include_in_schema=False)

AUDITORS = N_(
    "The audit log is searched by the monitoring and evaluation team and the staff "
    "administrators. Your roles do not include either."
)
Auditor = Annotated[StaffSession, Depends(holding(Scope.AUDIT_READ, AUDITORS))]
DEFAULT_DAYS = 7
_STAFF_ID = re.compile(r"nss_[0-9a-f]{24}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
Text = Annotated[str | None, Query(max_length=60)]


def _uuid(web: WebContext, value: str, field: str, errors: dict[str, str]) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        errors[field] = web.gettext(
            "Enter an id of 32 hexadecimal digits, as 0b6f…-…, or leave it empty."
        )
        return None


def _day(web: WebContext, value: str, field: str, errors: dict[str, str]) -> date | None:
    if _DAY.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    errors[field] = web.gettext("Enter a date as YYYY-MM-DD, for example 2026-01-31.")
    return None


async def _verification_page(
    web: WebContext,
    pool: PoolDep,
    member: StaffSession,
    *,
    form: dict[str, str],
    errors: dict[str, str] | None = None,
    results: search.Page | None = None,
    verdict: Verdict | None = None,
    status: int = 200,
) -> HTMLResponse:
    async with pool.acquire() as conn:
        state = await search.last_verification(conn)
    base = {k: v for k, v in form.items() if v and k != "after"}
    next_link = None
    if results is not None and results.next is not None:
        next_link = f"{PATH}?" + urlencode({**base, "after": str(results.next), "lang": web.lang})
    first_link = None
    if form.get("after"):
        first_link = f"{PATH}?" + urlencode({**base, "lang": web.lang})
    return page(
        web,
        "staff/audit/search.html",
        status=status,
        member=member,
        form=form,
        errors=errors or {},
        results=results,
        next_link=next_link,
        first_link=first_link,
        state=state,
        verdict=verdict,
        verify_max=search.VERIFY_MAX_ROWS,
        max_days=search.MAX_DAYS,
        page_size=search.PAGE,
    )


@router.get("", response_class=HTMLResponse)
async def audit_page(
    web: WebDep,
    member: Auditor,
    pool: PoolDep,
    partner: Text = None,
    agreement: Text = None,
    household: Text = None,
    staff: Text = None,
    start: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    """The search form, a page of results when someone is named, and the verification."""
    today = web_today()
    form = {
        "partner": (partner or "").strip(),
        "agreement": (agreement or "").strip(),
        "household": (household or "").strip(),
        "staff": (staff or "").strip(),
        "from": (start or str(today - timedelta(days=DEFAULT_DAYS - 1))).strip(),
        "to": (end or str(today)).strip(),
        "after": after or "",
    }
    named = any(form[k] for k in ("partner", "agreement", "household", "staff"))
    if not named:
        return await _verification_page(web, pool, member, form=form)
    errors: dict[str, str] = {}
    organization_id = _uuid(web, form["partner"], "partner", errors)
    agreement_id = _uuid(web, form["agreement"], "agreement", errors)
    household_id = _uuid(web, form["household"], "household", errors)
    if form["staff"] and not _STAFF_ID.fullmatch(form["staff"]):
        errors["staff"] = web.gettext("Enter a staff id, as nss_ followed by 24 characters.")
    first = _day(web, form["from"], "from", errors)
    last = _day(web, form["to"], "to", errors)
    cursor = None
    if after:
        try:
            cursor = search.Cursor.parse(after)
        except ValidationFailed:
            errors["after"] = web.gettext("This page link is not valid; search again.")
    if not errors and first and last:
        if first > last:
            errors["from"] = web.gettext("The first day must be on or before the last day.")
        elif (last - first).days + 1 > search.MAX_DAYS:
            errors["to"] = web.gettext(
                "Search at most %(days)s days at a time.", days=search.MAX_DAYS
            )
    if errors:
        return await _verification_page(web, pool, member, form=form, errors=errors, status=422)
    assert first is not None
    assert last is not None
    query = search.Query(
        first,
        last,
        organization_id=organization_id,
        agreement_id=agreement_id,
        household_id=household_id,
        staff_id=form["staff"] or None,
    )
    async with pool.acquire() as conn:
        results = await search.search(conn, member, query, cursor)
    return await _verification_page(web, pool, member, form=form, results=results)


def web_today() -> date:
    """Today, UTC (the search's days are UTC days)."""
    return datetime.now(UTC).date()


@router.post("/verify", response_class=HTMLResponse)
async def verify(request: Request, web: WebDep, member: Auditor, pool: PoolDep) -> HTMLResponse:
    """Verify the rows added since the last checkpoint (the CLI's incremental verification),
    when there are not too many; the outcome is shown and audited."""
    await read_form(request, web, frozenset(), repeatable=frozenset())
    try:
        async with pool.acquire() as conn:
            verdict = await search.verify_recent(conn, member)
    except Conflict as exc:
        code = exc.extra.get("code")
        if code == "no_checkpoint":
            message = web.gettext(
                "The audit log has never been verified. Run `nser audit verify` on the "
                "server first; after that, new rows can be verified here."
            )
        else:
            message = web.gettext(
                "Too many rows were added since the last verification to verify them here "
                "(more than %(limit)s). Run `nser audit verify` on the server.",
                limit=web.fmt.number(search.VERIFY_MAX_ROWS),
            )
        raise Refused(member, 409, message) from None
    today = web_today()
    form: dict[str, Any] = {
        "partner": "",
        "agreement": "",
        "household": "",
        "staff": "",
        "from": str(today - timedelta(days=DEFAULT_DAYS - 1)),
        "to": str(today),
        "after": "",
    }
    return await _verification_page(web, pool, member, form=form, verdict=verdict)
