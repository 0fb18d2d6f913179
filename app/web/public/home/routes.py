"""The home page, ``/``: what the registry is, what the public can do here, and links."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import HTMLResponse

from app.web.render import WebDep, page
from app.web.site import WebRoute

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def home(web: WebDep) -> HTMLResponse:
    """What the registry is, what the public can do here, and links."""
    return page(web, "home/home.html")
