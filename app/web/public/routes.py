"""The public website's routes: every page's router, included by ``create_app``."""

from __future__ import annotations

from fastapi import APIRouter

from app.web.public.apply import routes as apply
from app.web.public.check import routes as check
from app.web.public.grievance import routes as grievance
from app.web.public.home import routes as home
from app.web.public.map import routes as map_page
from app.web.public.statistics import routes as statistics

router = APIRouter()
for page in (home, apply, check, statistics, map_page, grievance):
    router.include_router(page.router)
