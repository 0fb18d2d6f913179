"""Interactive API docs served entirely from this service (no CDN: works offline).

The Swagger UI files come from the ``fastapi-offline`` package (Swagger UI 5, which reads
the OpenAPI 3.1 that FastAPI writes) instead of being copied into this repository.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import FileResponse, HTMLResponse

from app.errors import NotFound

router = APIRouter(include_in_schema=False)

STATIC = Path(str(files("fastapi_offline") / "static"))
# URL name -> (file in the package, media type): an allow-list, no path built from input.
ASSETS = {
    "swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": ("swagger-ui.css", "text/css"),
    "swagger-ui-favicon-32x32.png": ("favicon.png", "image/png"),
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
    """One of the Swagger UI files."""
    asset = ASSETS.get(name)
    if asset is None:
        raise NotFound("no such docs asset")
    filename, media_type = asset
    return FileResponse(
        STATIC / filename,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )
