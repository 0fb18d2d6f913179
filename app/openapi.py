"""The OpenAPI document tells the truth: every status an operation can answer, and its type.

FastAPI lists what a route declares, plus a 422 in its own ``application/json`` shape. The
service answers every error as problem+json (``app.errors``), and some statuses come from
layers a route does not see. This module completes each operation from what it depends on:

- every operation: 422 (an unknown query parameter or a control character, ``app.strict``);
- an operation on the database (the pool or a session): 503 with ``Retry-After``;
- an operation behind a bearer token: 401 and 403, and the ``bearerAuth`` security scheme;
- a rate-limited operation (``app.rate_limit.limit``): 429 with ``Retry-After``;

and gives every error response without a body model of its own (the token endpoint's OAuth
errors keep theirs) the ``application/problem+json`` content with the shared ``Problem``
schema. Routes still declare their own statuses (404, 409, 413...) with :func:`problems`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.auth.deps import get_principal
from app.deps import get_pool, get_reads, get_session
from app.errors import PROBLEM_JSON
from app.schemas.problem import Problem, ProblemError
from app.strict import dependants

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}

DESCRIPTIONS = {
    400: "The request is malformed",
    401: "Missing, expired or invalid bearer token",
    403: "The caller's agreement does not allow this (or is suspended, revoked, expired)",
    404: "No such resource (or none the caller may see)",
    409: "Conflicts with the resource's current state",
    413: "The body is over the size or record limit",
    422: "A parameter, field or value is unknown or invalid; `errors` names each",
    429: "Rate limit reached; retry after `Retry-After` seconds",
    503: "The registry's database is unavailable; retry after `Retry-After` seconds",
}


def problems(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for error statuses a route raises itself (problem+json).

    ``descriptions`` overrides the default wording by status, e.g. ``_404="..."``.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        text = descriptions.get(f"_{status}") or DESCRIPTIONS.get(status)
        out[status] = {
            "description": text or HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
        }
    return out


_BODY_MODELS: list[type[BaseModel]] = []


def json_request_body(*models: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON body read by ``app.strict.json_body``: one model,
    or one of several (an action whose body depends on a path parameter)."""
    _BODY_MODELS.extend(models)
    refs = [{"$ref": f"#/components/schemas/{model.__name__}"} for model in models]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {
        "requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}
    }


def implied_statuses(dependant: Dependant, endpoint: Any) -> tuple[set[int], bool]:
    """The error statuses an operation answers through its dependencies (its dependant,
    application-wide dependencies included) and decorators; and whether it needs a token."""
    calls = {dep.call for dep in dependants(dependant) if dep.call is not None}
    statuses = {422}
    if calls & {get_pool, get_reads, get_session}:
        statuses.add(503)
    secured = get_principal in calls
    if secured:
        statuses |= {401, 403}
    if getattr(endpoint, "rate_limited", False):
        statuses.add(429)
    return statuses, secured


def _as_problem(response: dict[str, Any]) -> None:
    content = response.get("content") or {}
    own = {k: v for k, v in content.items() if k != "application/json"}
    json_schema = (content.get("application/json") or {}).get("schema", {})
    if "application/json" in content and (
        "oneOf" in json_schema
        or json_schema.get("$ref", "").rsplit("/", 1)[-1] not in ("HTTPValidationError", "")
    ):
        return  # a body model of its own (the token endpoint's OAuth error, DCI's bodies)
    own[PROBLEM_JSON] = {"schema": PROBLEM_REF}
    response["content"] = own


def complete(document: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    by_operation = {
        (context.path_format, method.lower()): context
        for context in iter_route_contexts(app.routes)
        if getattr(context, "dependant", None) is not None
        for method in context.methods or ()
    }
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            route = by_operation.get((path, method))
            if route is None:
                continue
            statuses, secured = implied_statuses(route.dependant, route.endpoint)
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for status in sorted(statuses):
                entry = responses.setdefault(str(status), {})
                entry.setdefault("description", DESCRIPTIONS[status])  # a route's own wins
                if status in (429, 503):
                    entry.setdefault("headers", {}).update(_RETRY_AFTER)
            for code, response in responses.items():
                if code[0] in "45":
                    _as_problem(response)
            if secured:
                operation["security"] = [{"bearerAuth": []}]
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    models: list[type[BaseModel]] = [Problem, ProblemError, *_BODY_MODELS]
    _, defs = models_json_schema(
        [(m, "validation") for m in models],
        ref_template="#/components/schemas/{model}",
    )
    schemas.update(defs.get("$defs", {}))
    components.setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from `POST /v1/auth/token` (client credentials).",
    }
    return document


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with the completed, cached document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = complete(document, app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
