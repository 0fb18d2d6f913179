""" "My work" (``/staff/``): what waits on the signed-in member now, by their roles.

The page is the staff API's ``GET /v1/staff/my-work`` as HTML: the same
:func:`app.services.console.queues.my_work`, called with the member as a staff principal
whose scopes are their roles' scopes now (``staff_scopes``), so the sections shown are the
ones their roles act on. Each item links to its page; each section shows its count and its
breakdown. The queues name no person, so the page writes no audit row (opening an item
does).
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import HTMLResponse

from app.deps import PoolDep, SettingsDep
from app.services.console import queues
from app.web.i18n import N_
from app.web.render import WebDep, page
from app.web.staff.auth import StaffRoute, StaffSessionDep
from app.web.staff.requests import STATE_LABELS
from app.web.staff.routes import ROLE_LABELS

router = APIRouter(route_class=StaffRoute, include_in_schema=False)

# Items per section on the page (the counts are the whole queue's).
SHOWN = 25

GRIEVANCE_STATES = {
    "received": N_("Received"),
    "triaged": N_("Triaged"),
    "resurvey_ordered": N_("Re-survey ordered"),
}
GRIEVANCE_REASONS = {
    "wrong_members": N_("Household members recorded wrongly"),
    "wrong_assets": N_("Assets or living conditions recorded wrongly"),
    "resurvey": N_("Asks for a re-survey"),
    "deceased_listed": N_("A deceased person is listed"),
    "other": N_("Other"),
}
OVERDUE = {"triage": N_("Triage overdue"), "resolve": N_("Resolution overdue")}
OBLIGATION_KINDS = {"findings": N_("Research findings"), "updates": N_("Data updates")}


@router.get("/staff/", response_class=HTMLResponse)
async def my_work(
    web: WebDep, session: StaffSessionDep, pool: PoolDep, settings: SettingsDep
) -> HTMLResponse:
    """The member's queues: requests waiting on their roles (and for how long), grievances
    new or overdue, obligations falling due, agreements due for a spot check."""
    async with pool.acquire() as conn:
        work = await queues.my_work(conn, session.principal, queues.Rules.of(settings), limit=SHOWN)
    return page(
        web,
        "staff/work/home.html",
        member=session,
        work=work,
        role_labels=ROLE_LABELS,
        state_labels=STATE_LABELS,
        grievance_states=GRIEVANCE_STATES,
        grievance_reasons=GRIEVANCE_REASONS,
        overdue_labels=OVERDUE,
        obligation_kinds=OBLIGATION_KINDS,
    )
