"""One error hierarchy, rendered as RFC 9457 problem+json everywhere."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
import orjson
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("nser.errors")


class ProblemResponse(Response):
    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = list(errors)
    body.update(extra)
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


class AppError(Exception):
    status = 400
    title: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.extra = dict(extra or {})  # extension members of the problem body


class BadRequest(AppError):
    status = 400


class Unauthorized(AppError):
    status = 401

    def __init__(self, detail: str = "missing or invalid bearer token") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class SignInFailed(AppError):
    """A person's sign-in to the staff console (a passkey) failed, or is needed: 401, with no
    bearer challenge (the console's pages and their scripts use a session cookie)."""

    status = 401


class Forbidden(AppError):
    status = 403


class NotFound(AppError):
    status = 404


class Conflict(AppError):
    status = 409


class Gone(AppError):
    status = 410


class PayloadTooLarge(AppError):
    status = 413


class ValidationFailed(AppError):
    status = 422


class TooManyRequests(AppError):
    status = 429


class ServiceUnavailable(AppError):
    status = 503


# Raised when PostgreSQL is unreachable, restarting or refusing connections, or while a
# primary fails over: InternalClientError is asyncpg's TargetServerAttributeNotMatched (no
# host of a multi-host URL accepts writes yet) and its protocol-state errors on a connection
# the dying server sent its last message on (docs/operations.md, "Failover (Patroni)").
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        out.append(
            {
                "loc": loc,
                "field": ".".join(loc[1:]) or ".".join(loc),
                "message": err.get("msg", "invalid"),
                "type": err.get("type", "invalid"),
            }
        )
    return out


def register_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_request: Request, exc: AppError) -> Response:
        return problem(
            exc.status,
            exc.detail,
            title=exc.title,
            errors=exc.errors,
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such resource"
        return problem(exc.status_code, detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        errors = _validation_errors(exc)
        detail = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors[:5])
        return problem(422, detail or "invalid request", errors=errors)

    async def _database_unavailable(request: Request, exc: Exception) -> Response:
        # The database restarting or out of connections is a moment, not a server bug:
        # the client may retry (nothing was half-done: transactions roll back).
        log.warning(
            "database unavailable: %s", type(exc).__name__, extra={"path": request.url.path}
        )
        return problem(
            503,
            "the registry is temporarily unavailable; try again shortly",
            headers={"Retry-After": "5"},
        )

    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_unavailable)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _exc: ClientDisconnect) -> Response:
        # The client left, or its body did not arrive in time (app.http_guard answered 408
        # and closed): nobody reads this answer, but the access log records it.
        log.info("client disconnected before its body arrived", extra={"path": request.url.path})
        return problem(408, "the request body did not arrive")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Never a bare 500 body: log it with the request id, answer problem+json.
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem(500, "internal error; the request id identifies it in the logs")
