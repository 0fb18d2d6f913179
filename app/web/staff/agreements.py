"""An agreement in the console (``/staff/agreements/{id}``): its scope, clients, usage and
spot checks, and the oversight actions of the member's roles.

The page reads :func:`app.services.monitoring.oversight.view` (the organization's name and
type, no contact details, so no personal data); usage is the agreement's API clients' calls
of the last 30 days from the audit log, by endpoint and day, as an inline SVG chart with
its table. The actions are the staff API's: ``spot_checks.record`` (the M&E team: a check,
and a failed one may suspend or revoke) and the Secretary's ``spot_checks.suspend``,
``revoke`` (with reasons, no spot check) and ``resume``. Suspending, resuming and revoking
need a recent passkey verification; a role that may not act gets 403 and an agreement in
the wrong state 409, each shown on the page saying why.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import ValidationError
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.auth.scopes import Scope
from app.deps import PoolDep, SettingsDep
from app.errors import Conflict, Forbidden
from app.schemas.requests import ResumeIn, RevokeIn, SpotCheckIn, SuspendIn
from app.services.monitoring import oversight, spot_checks
from app.services.staff.sessions import StaffSession
from app.web.i18n import N_
from app.web.render import WebContext, WebDep, WebError, page
from app.web.staff.auth import StaffRoute, StaffSessionDep, require_recent_verification
from app.web.staff.forms import read_form
from app.web.staff.requests import CATEGORY_LABELS, ORGANIZATION_TYPES, STATE_LABELS

BASE = "/staff/agreements"
router = APIRouter(prefix=BASE, route_class=StaffRoute, include_in_schema=False)

AGREEMENT_STATES = {
    "active": N_("Active"),
    "suspended": N_("Suspended"),
    "revoked": N_("Revoked"),
    "expired": N_("Expired"),
}
ACTIONS = {
    "spot_check": N_("Record a spot check"),
    "suspend": N_("Suspend the agreement"),
    "revoke": N_("Revoke the agreement"),
    "resume": N_("Resume the agreement"),
    "secretary_suspend": N_("Suspend the agreement (the Secretary's decision)"),
    "secretary_revoke": N_("Revoke the agreement (the Secretary's decision)"),
}
DONE = {
    "spot_check": N_("The spot check was recorded."),
    "suspend": N_("The agreement was suspended: the partner's next call is refused."),
    "revoke": N_("The agreement was revoked. This is final."),
    "resume": N_("The agreement was resumed: the partner's calls are served again."),
    "secretary_suspend": N_("The agreement was suspended: the partner's next call is refused."),
    "secretary_revoke": N_("The agreement was revoked. This is final."),
}
Done = Annotated[str | None, Query(pattern="^(" + "|".join(DONE) + ")$")]
STEP_UP = frozenset({"suspend", "revoke", "resume", "secretary_suspend", "secretary_revoke"})
FIELDS = {
    "spot_check": frozenset({"outcome", "findings"}),
    "suspend": frozenset({"findings"}),
    "revoke": frozenset({"findings"}),
    "resume": frozenset({"reasons"}),
    "secretary_suspend": frozenset({"reasons"}),
    "secretary_revoke": frozenset({"reasons"}),
}
CHART_W, CHART_H = 600, 160


def _chart(view: oversight.AgreementView) -> dict[str, Any]:
    """Calls per day over the window, as bars of an inline SVG (oldest day on the left)."""
    used = view.usage
    days = [used.since + timedelta(days=i) for i in range((used.until - used.since).days + 1)]
    peak = max(used.by_day.values(), default=0) or 1
    width = CHART_W / max(len(days), 1)
    bars = []
    for i, day in enumerate(days):
        n = used.by_day.get(day, 0)
        height = round(n / peak * (CHART_H - 20), 1)
        bars.append(
            {
                "x": round(i * width + 1, 1),
                "y": round(CHART_H - height, 1),
                "w": round(max(width - 2, 1), 1),
                "h": height,
                "day": day,
                "n": n,
            }
        )
    return {"bars": bars, "peak": peak, "width": CHART_W, "height": CHART_H}


async def _page(
    web: WebContext,
    pool: PoolDep,
    session: StaffSession,
    agreement_id: uuid.UUID,
    *,
    done: str | None = None,
    problem: str | None = None,
    problem_detail: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    async with pool.acquire() as conn:
        view = await oversight.view(conn, agreement_id)
    scopes = session.principal.scopes
    actions = (
        oversight.actions_for(view.agreement["status"], session.roles)
        if Scope.AGREEMENTS_OVERSEE in scopes
        else []
    )
    return page(
        web,
        "staff/agreements/agreement.html",
        status=status,
        member=session,
        view=view,
        a=view.agreement,
        chart=_chart(view),
        actions=actions,
        action_labels=ACTIONS,
        step_up=STEP_UP,
        agreement_states=AGREEMENT_STATES,
        state_labels=STATE_LABELS,
        category_labels=CATEGORY_LABELS,
        organization_types=ORGANIZATION_TYPES,
        done=DONE.get(done or ""),
        problem=problem,
        problem_detail=problem_detail,
    )


def _require_read(session: StaffSession, web: WebContext) -> None:
    if Scope.REQUESTS_READ not in session.principal.scopes:
        raise WebError(403, web.gettext("Your roles do not open agreements."))


@router.get("/{agreement_id}", response_class=HTMLResponse)
async def agreement_page(
    web: WebDep, session: StaffSessionDep, pool: PoolDep, agreement_id: uuid.UUID, done: Done = None
) -> HTMLResponse:
    """Scope, clients, the last 30 days' usage, spot checks, and this member's actions."""
    _require_read(session, web)
    return await _page(web, pool, session, agreement_id, done=done)


async def _act(
    request: Request,
    web: WebContext,
    session: StaffSession,
    pool: PoolDep,
    settings: SettingsDep,
    agreement_id: uuid.UUID,
    action: str,
) -> Response:
    form = await read_form(request, web, FIELDS[action], repeatable=frozenset())
    if action in STEP_UP:
        require_recent_verification(session, settings, back=f"{BASE}/{agreement_id}")
    principal = session.principal
    problem_detail: str | None = None
    values = {name: form.get(name, [""])[0].strip() for name in FIELDS[action]}
    if Scope.AGREEMENTS_OVERSEE not in principal.scopes:
        problem, status = web.gettext("Your roles do not allow this action."), 403
    else:
        try:
            if action == "resume":
                await spot_checks.resume(pool, principal, agreement_id, ResumeIn(**values))
            elif action == "secretary_suspend":
                await spot_checks.suspend(pool, principal, agreement_id, SuspendIn(**values))
            elif action == "secretary_revoke":
                await spot_checks.revoke(pool, principal, agreement_id, RevokeIn(**values))
            else:
                check = (
                    SpotCheckIn(outcome=values["outcome"] or "passed", findings=values["findings"])
                    if action == "spot_check"
                    else SpotCheckIn(outcome="failed", findings=values["findings"], action=action)
                )
                await spot_checks.record(pool, principal, agreement_id, check)
        except ValidationError as exc:
            problem, status = web.gettext("Please check the form and try again."), 422
            problem_detail = str(exc.errors()[0].get("msg", ""))
        except Forbidden as exc:
            problem, status = web.gettext("Your roles do not allow this action."), 403
            problem_detail = exc.detail
        except Conflict as exc:
            state = str(exc.extra.get("state", ""))
            problem = web.gettext(
                "This action is not possible while the agreement is %(state)s.",
                state=web.gettext(AGREEMENT_STATES.get(state, state)),
            )
            status, problem_detail = 409, exc.detail
        else:
            return RedirectResponse(
                f"{BASE}/{agreement_id}?done={action}&lang={web.lang}", status_code=303
            )
    return await _page(
        web,
        pool,
        session,
        agreement_id,
        problem=problem,
        problem_detail=problem_detail,
        status=status,
    )


# The oversight actions, by the path segment their forms post to: a spot check that changes
# nothing (M&E), one that suspends or revokes the agreement (M&E; step-up), and the
# Secretary suspending, revoking or lifting a suspension with reasons (step-up).
BY_PATH = {
    "spot-check": "spot_check",
    "suspend": "suspend",
    "revoke": "revoke",
    "resume": "resume",
    "secretary-suspend": "secretary_suspend",
    "secretary-revoke": "secretary_revoke",
}
AgreementAction = Annotated[
    Literal["spot-check", "suspend", "revoke", "resume", "secretary-suspend", "secretary-revoke"],
    Path(description="spot-check, suspend, revoke, resume, secretary-suspend, secretary-revoke"),
]


@router.post("/{agreement_id}/{action}", response_class=HTMLResponse)
async def act(
    request: Request,
    web: WebDep,
    session: StaffSessionDep,
    pool: PoolDep,
    settings: SettingsDep,
    agreement_id: uuid.UUID,
    action: AgreementAction,
) -> Response:
    """One oversight action by the member (step-up first for suspending, revoking and
    resuming)."""
    return await _act(request, web, session, pool, settings, agreement_id, BY_PATH[action])
