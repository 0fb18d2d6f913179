"""What-if targeting simulations in the staff console (``/staff/simulations…``, scope
``simulations:run``: the Secretary, M&E and staff administrators).

Start one (a programme's rule in force against a candidate rule and/or a candidate PMT
model version, at a transfer amount per family), follow it while the worker runs it, and
read its result: entering and leaving eligibility by province and by band as tables with
inline SVG bars, the caseloads and their cost. The page of a simulation still pending or
running refreshes itself (``static/refresh.js`` asks for the page again every few seconds
and reloads once its status changed); without JavaScript, a "Refresh" link does it.

Starting and reading are the staff API's service calls (:mod:`app.services.targeting.
simulation`: ``submit`` audits the start as a staff action; ``get``).
"""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.auth.scopes import Scope
from app.deps import PoolDep
from app.errors import ValidationFailed
from app.schemas.targeting import SimulationIn
from app.services.programmes import store as programmes
from app.services.staff.sessions import StaffSession
from app.services.targeting import simulation
from app.web.render import WebContext, WebDep, page
from app.web.staff.auth import StaffRoute, StaffSessionDep
from app.web.staff.forms import read_form
from app.web.staff.programmes import CONDITIONS, RAISED_ROWS, RULE_FIELDS, UNITS, rule_of

LIST = "/staff/simulations"
router = APIRouter(prefix=LIST, route_class=StaffRoute, include_in_schema=False)
FIELDS = (RULE_FIELDS - {"note"}) | {"programme_id", "pmt_version", "transfer_amount", "label"}
RECENT = 20
BAR_WIDTH = 240  # the longest bar, in SVG units


def _may(session: StaffSession) -> bool:
    return Scope.SIMULATIONS_RUN.value in session.principal.scopes


def _not_allowed(web: WebContext, session: StaffSession) -> HTMLResponse:
    return page(web, "staff/simulations/not_allowed.html", status=403, member=session)


async def _start_page(
    web: WebContext,
    pool: PoolDep,
    session: StaffSession,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    recent = await pool.fetch(
        """SELECT id, status, request->>'label' AS label, request->'programme'->>'code' AS code,
                  created_at FROM simulations ORDER BY created_at DESC, id LIMIT $1""",
        RECENT,
    )
    models = await pool.fetch("SELECT version, is_current FROM pmt_models ORDER BY version")
    return page(
        web,
        "staff/simulations/start.html",
        status=status_code,
        member=session,
        recent=recent,
        models=models,
        programmes=await programmes.list_all(pool),
        values=values or {"transfer_amount": "2000", "requires": []},
        errors=errors or {},
        conditions=CONDITIONS,
        units=UNITS,
        raised_rows=RAISED_ROWS,
    )


@router.get("", response_class=HTMLResponse)
async def simulations(web: WebDep, session: StaffSessionDep, pool: PoolDep) -> HTMLResponse:
    """Start a simulation; the recent ones."""
    if not _may(session):
        return _not_allowed(web, session)
    return await _start_page(web, pool, session)


def body_of(values: dict[str, Any]) -> dict[str, Any]:
    """The API's body from the form: a blank cut-off keeps the rule in force."""
    body: dict[str, Any] = {
        "programme_id": values.get("programme_id") or None,
        "label": " ".join(values.get("label", "").split()),
    }
    try:
        body["transfer_amount"] = Decimal(values.get("transfer_amount", "").strip())
    except InvalidOperation:
        body["transfer_amount"] = values.get("transfer_amount", "")
    if values.get("pmt_version"):
        body["pmt_version"] = values["pmt_version"]
    if values.get("cut_off", "").strip():
        body["rule"] = rule_of(values)
    return body


@router.post("", response_class=HTMLResponse)
async def start(request: Request, web: WebDep, session: StaffSessionDep, pool: PoolDep) -> Response:
    """Queue the simulation (the API's ``POST /v1/staff/simulations``)."""
    form = await read_form(request, web, FIELDS, repeatable=frozenset({"requires"}))
    if not _may(session):
        return _not_allowed(web, session)
    values: dict[str, Any] = {k: v[0] for k, v in form.items() if k != "requires"}
    values["requires"] = form.get("requires", [])
    errors: dict[str, str] = {}
    body = body_of(values)
    if not body["programme_id"]:
        errors["programme_id"] = web.gettext("Choose the programme whose rule is compared.")
    if "rule" not in body and "pmt_version" not in body:
        errors["form"] = web.gettext(
            "Give a candidate: a PMT model version, a cut-off for a candidate rule, or both."
        )
    parsed: SimulationIn | None = None
    if not errors:
        try:
            parsed = SimulationIn.model_validate(body)
        except ValidationError as exc:
            for error in exc.errors():
                loc = [str(p) for p in error["loc"]]
                if loc[0] == "transfer_amount":
                    errors["transfer_amount"] = web.gettext(
                        "Enter the amount in rupees per family (a number, 0 or more)."
                    )
                elif loc[0] == "label":
                    errors["label"] = web.gettext("The label is too long (at most 200 characters).")
                elif loc[0] == "rule" and len(loc) > 1 and loc[1] == "raised_cut_offs":
                    errors["raised"] = web.gettext(
                        "Each raised cut-off needs a condition and a score from 0 to 100."
                    )
                elif loc[0] == "rule" and len(loc) > 1 and loc[1] == "geography":
                    errors["geography"] = web.gettext(
                        "Enter geography codes (digits and letters), separated by spaces."
                    )
                else:
                    errors["cut_off"] = web.gettext("Enter a cut-off score from 0 to 100.")
    if parsed is not None:
        try:
            sim_id = await simulation.submit(
                pool, session.principal, parsed.model_dump(mode="json")
            )
        except ValidationFailed as exc:
            errors["form"] = exc.detail
    if errors:
        return await _start_page(web, pool, session, values=values, errors=errors, status_code=422)
    return RedirectResponse(f"{LIST}/{sim_id}?lang={web.lang}", status_code=303)


def bars(rows: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """An SVG bar chart's geometry: entering and leaving households per row."""
    top = max(
        [
            1,
            *(r["entering"]["households"] for r in rows),
            *(r["leaving"]["households"] for r in rows),
        ]
    )
    out = []
    for i, r in enumerate(rows):
        entering, leaving = r["entering"]["households"], r["leaving"]["households"]
        out.append(
            {
                "label": r.get(label) or "",
                "y": i * 34,
                "entering": entering,
                "leaving": leaving,
                "entering_width": round(BAR_WIDTH * entering / top, 1),
                "leaving_width": round(BAR_WIDTH * leaving / top, 1),
            }
        )
    return {"rows": out, "height": max(34, len(out) * 34), "width": BAR_WIDTH}


@router.get("/{simulation_id}", response_class=HTMLResponse)
async def simulation_page(
    web: WebDep, session: StaffSessionDep, pool: PoolDep, simulation_id: uuid.UUID
) -> HTMLResponse:
    """The simulation's status while it runs; its result once done."""
    if not _may(session):
        return _not_allowed(web, session)
    found = await simulation.get(pool, session.principal, simulation_id)
    result = found["result"]
    charts: dict[str, Any] = {}
    if result:
        for row in result["by_province"]:
            row["label"] = row.get("name") or row["province_code"]
        charts = {
            "province": bars(result["by_province"], "label"),
            "band": bars(result["by_band"], "band"),
        }
    return page(
        web,
        "staff/simulations/simulation.html",
        member=session,
        sim=found,
        result=result,
        charts=charts,
        running=found["status"] in ("pending", "running"),
    )
