"""Interactive API docs served entirely from this service (no CDN: works offline).

The Swagger UI files come from the ``fastapi-offline`` package (Swagger UI 5, which reads
the OpenAPI 3.1 that FastAPI writes) instead of being copied into this repository.

The pages carry no inline script, so they run under the same Content-Security-Policy as the
website (``app/web/security.py``, no ``'unsafe-inline'``): ``/docs`` starts Swagger UI from
``/static/js/docs.js``, which reads its settings from the page's ``data-`` attributes, and
the OAuth2 redirect page loads FastAPI's own redirect script as a file.
"""

from __future__ import annotations

import re
from html import escape
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_oauth2_redirect_html
from starlette.responses import FileResponse, HTMLResponse, Response

from app.errors import NotFound

router = APIRouter(include_in_schema=False)

STATIC = Path(str(files("fastapi_offline") / "static"))
# URL name -> (file in the package, media type): an allow-list, no path built from input.
ASSETS = {
    "swagger-ui-bundle.js": ("swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": ("swagger-ui.css", "text/css"),
    "swagger-ui-favicon-32x32.png": ("favicon.png", "image/png"),
}
CACHE = {"Cache-Control": "public, max-age=86400"}

# FastAPI's redirect page is one inline script: the same script, served as a file.
_REDIRECT_SCRIPT = re.search(
    r"<script>(.*)</script>", bytes(get_swagger_ui_oauth2_redirect_html().body).decode(), re.S
)
if _REDIRECT_SCRIPT is None:  # pragma: no cover - a FastAPI that changed its page
    raise RuntimeError("FastAPI's OAuth2 redirect page no longer has one inline script")
REDIRECT_SCRIPT = _REDIRECT_SCRIPT.group(1).strip() + "\n"

_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{root}/docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="{root}/docs/static/swagger-ui-favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"
     data-oauth2-redirect-url="{root}/docs/oauth2-redirect"></div>
<script src="{root}/docs/static/swagger-ui-bundle.js"></script>
<script src="{root}/static/js/docs.js"></script>
</body>
</html>
"""

_REDIRECT_PAGE = """<!doctype html>
<html lang="en-US">
<head>
<meta charset="utf-8">
<title>Swagger UI: OAuth2 Redirect</title>
</head>
<body>
<script src="{root}/docs/static/oauth2-redirect.js"></script>
</body>
</html>
"""


def _root(request: Request) -> str:
    return escape(str(request.scope.get("root_path", "")))


@router.get("/docs")
async def get_docs(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json, with its assets served locally."""
    root = _root(request)
    return HTMLResponse(
        _DOCS_PAGE.format(
            title=escape(f"{request.app.title} - API docs"),
            root=root,
            openapi=f"{root}{escape(request.app.openapi_url)}",
        )
    )


@router.get("/docs/oauth2-redirect")
async def get_docs_oauth2_redirect(request: Request) -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page."""
    return HTMLResponse(_REDIRECT_PAGE.format(root=_root(request)))


@router.get("/docs/static/{name}")
async def get_docs_asset(name: str) -> Response:
    """One of the Swagger UI files."""
    if name == "oauth2-redirect.js":
        return Response(REDIRECT_SCRIPT, media_type="text/javascript", headers=CACHE)
    asset = ASSETS.get(name)
    if asset is None:
        raise NotFound("no such docs asset")
    filename, media_type = asset
    return FileResponse(STATIC / filename, media_type=media_type, headers=CACHE)
