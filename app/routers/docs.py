"""Interactive API docs served entirely from this service (no CDN: works offline)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import FileResponse, HTMLResponse

from app.errors import NotFound

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "swagger-ui-favicon-32x32.png": "image/png",
}


@router.get("/docs")
async def get_docs(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json, with its assets served locally."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{root}/docs/static/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/static/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/static/swagger-ui-favicon-32x32.png",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
    )


@router.get("/docs/oauth2-redirect")
async def get_docs_oauth2_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/docs/static/{name}")
async def get_docs_asset(name: str) -> FileResponse:
    """One of the vendored Swagger UI files (an allow-list: no path is built from input)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound("no such docs asset")
    return FileResponse(
        STATIC / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
    )
