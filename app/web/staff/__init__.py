"""The staff console (``/staff/``): passkey sign-in, enrolment, step-up, the member's
landing page and the administrators' pages, in English and Urdu.

Routes, page logic and templates live together here (``templates/staff/…``, the passkey
script in ``static/``), over the website's shared rendering, languages, CSRF and security
headers (:mod:`app.web.render`, :mod:`app.web.i18n`, :mod:`app.web.security`); the work is
the staff service's (:mod:`app.services.staff`).

- :mod:`app.web.staff.auth` — the session cookie, the signed-in member
  (``StaffSessionDep``, ``AdminDep``), ``require_recent_verification`` (step-up) and the
  route class that turns "sign in first" and "verify again" into redirects;
- :mod:`app.web.staff.routes` — sign-in, enrolment, step-up, sign-out, and the JSON steps
  of the passkey ceremonies their script calls;
- :mod:`app.web.staff.work` — "My work" (``/staff/``), the member's queues by role;
- :mod:`app.web.staff.requests` — data-sharing requests: list, page, workflow actions;
- :mod:`app.web.staff.agreements` — an agreement: scope, clients, usage, spot checks,
  suspend, resume and revoke;
- :mod:`app.web.staff.admin` — staff members for administrators (role ``admin``);
- :mod:`app.web.staff.grievances`, :mod:`~app.web.staff.programmes`,
  :mod:`~app.web.staff.simulations` — casework, programmes' rules and simulations;
- :mod:`app.web.staff.reports` — the M&E reports (tables, charts, CSV);
- :mod:`app.web.staff.audit` — the audit log's search and verification;
- :mod:`app.web.staff.analyses` — the M&E team's analyses through disclosure control.

``install(app)`` mounts the script and includes the routers.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from fastapi import APIRouter, FastAPI
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"


def _area(name: str) -> APIRouter:
    """The router of the console's area ``name`` (``app.web.staff.<name>.router``)."""
    router: APIRouter = importlib.import_module(f"app.web.staff.{name}").router
    return router


def install(app: FastAPI) -> None:
    from app.web.staff.admin import router as admin_pages
    from app.web.staff.routes import ceremonies, router

    app.mount("/staff/static", StaticFiles(directory=STATIC), name="staff-static")
    app.include_router(ceremonies)
    app.include_router(router)
    app.include_router(admin_pages)
    app.include_router(_area("work"))
    app.include_router(_area("requests"))
    app.include_router(_area("agreements"))
    app.include_router(_area("grievances"))
    app.include_router(_area("programmes"))
    app.include_router(_area("simulations"))
    app.include_router(_area("reports"))
    app.include_router(_area("audit"))
    app.include_router(_area("analyses"))
