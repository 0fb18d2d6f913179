"""What every page of the website shares: WebRoute, friendly error pages, static assets.

Every page router uses :class:`WebRoute`, so that whatever goes wrong on a page — a bad
``?lang=``, an unknown parameter, a service error — is answered as a page in the visitor's
language rather than as the API's problem+json. Pages are left out of ``/openapi.json``:
they are not part of the partner contract. The pages themselves are in
:mod:`app.web.public`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from slowapi.errors import RateLimitExceeded
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from app.errors import DATABASE_UNAVAILABLE, AppError
from app.rate_limit import retry_after_seconds
from app.web import i18n, security
from app.web.i18n import N_
from app.web.render import WebContext, WebError, page, web_secret

STATIC = i18n.TRANSLATIONS.parent / "static"
# The paths the website answers (security headers and HTML errors apply to these).
WEB_PREFIXES = ("/check", "/statistics", "/map", "/apply", "/grievance", "/static/", "/staff/")
# Paths that always answer problem+json, whatever the client accepts.
API_PREFIXES = ("/v1/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/.well-known")

# Titles of error pages, by status; translated where they are shown.
_TITLES = {
    400: N_("The request could not be understood"),
    403: N_("This form has expired"),
    404: N_("Page not found"),
    413: N_("What was sent is too large"),
    422: N_("Some of what was sent is not valid"),
    429: N_("Too many requests"),
    503: N_("The registry is busy"),
}


def _error_context(request: Request) -> WebContext:
    lang = i18n.negotiate(
        request.query_params.get("lang"),  # only en or ur count; anything else is ignored
        request.cookies.get(i18n.COOKIE),
        request.headers.get("accept-language"),
    )
    return WebContext(
        request=request,
        lang=lang,
        csrf_cookie=request.cookies.get(security.CSRF_COOKIE) or security.new_csrf_cookie(),
        secret=web_secret(request, "csrf"),
    )


def error_page(
    request: Request,
    status: int,
    message: str | None = None,
    *,
    web: WebContext | None = None,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A page for ``status`` with ``message`` (already translated) or the status's own."""
    web = web or _error_context(request)
    title = web.gettext(_TITLES.get(status, HTTPStatus(status).phrase))
    if message is None:
        message = {
            400: web.gettext("Please go back and try again."),
            404: web.gettext("There is no page at this address."),
            422: web.gettext("Please check the address or the form and try again."),
            503: web.gettext(
                "The registry is temporarily unavailable. Please try again in a few minutes."
            ),
        }.get(status, web.gettext("Please go back and try again."))
    return page(web, "error.html", status=status, headers=headers, title=title, message=message)


class WebRoute(APIRoute):
    """An APIRoute whose failures are pages, not problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def as_page(request: Request) -> Response:
            try:
                return await handler(request)
            except WebError as exc:
                return error_page(request, exc.status, exc.message, headers=exc.headers)
            except RequestValidationError:
                return error_page(request, 422)
            except AppError as exc:
                return error_page(request, exc.status, headers=dict(exc.headers or {}))
            except RateLimitExceeded:  # an HTTPException: before that clause
                wait = retry_after_seconds(request, request.app.state.rate_limit_backend)
                return error_page(request, 429, headers={"Retry-After": str(wait)})
            except StarletteHTTPException as exc:
                return error_page(request, exc.status_code)
            except DATABASE_UNAVAILABLE:
                return error_page(request, 503, headers={"Retry-After": "5"})

        return as_page


def _wants_page(request: Request) -> bool:
    """A browser asking for a page: not an API path, and HTML accepted."""
    path = request.url.path
    if path.startswith(API_PREFIXES):
        return False
    return "text/html" in request.headers.get("accept", "")


def install(app: FastAPI) -> None:
    """Mount the static assets; a browser that asks for a page that does not exist gets a
    page, not problem+json."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    api_handler = app.exception_handlers[StarletteHTTPException]

    async def http_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, StarletteHTTPException) and _wants_page(request):
            return error_page(request, exc.status_code)
        answer = api_handler(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    app.add_exception_handler(StarletteHTTPException, http_error)
