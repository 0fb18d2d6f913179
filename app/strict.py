"""Fail closed: a request with a parameter the operation does not know is refused.

One dependency, installed on the whole application (``create_app``), runs before every
operation's own dependencies. It answers 422 problem+json when

- the query string holds a name the matched operation does not declare (a misspelt filter
  must never widen an answer: ``?distric=PK604`` is refused, not ignored), or
- a query or path value holds a control character (``U+0000``-``U+001F``, ``U+007F``):
  no such text reaches the database from any endpoint.

The names an operation accepts are read once from its FastAPI dependant, so a new route is
covered without writing a check of its own. JSON bodies fail closed through their models
(``app.schemas.base.StrictModel``), the token form through ``app.routers.tokens``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from app.errors import PayloadTooLarge

Body = TypeVar("Body", bound=BaseModel)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_allowed: dict[int, frozenset[str]] = {}


def has_control(text: str) -> bool:
    return CONTROL.search(text) is not None


def dependants(root: Dependant) -> Iterator[Dependant]:
    """An operation's dependant and every sub-dependency's, depth first."""
    stack = [root]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current.dependencies)


def accepted_query_names(route: APIRoute) -> frozenset[str]:
    """The query parameter names (aliases) an operation declares, its dependencies' included."""
    names = _allowed.get(id(route))
    if names is None:
        found: set[str] = set()
        for dependant in dependants(route.dependant):
            for param in dependant.query_params:
                model = param.field_info.annotation
                if isinstance(model, type) and issubclass(model, BaseModel):
                    found |= {f.alias or n for n, f in model.model_fields.items()}
                else:
                    found.add(param.alias)
        names = frozenset(found)
        _allowed[id(route)] = names
    return names


def error(location: str, name: str, message: str, kind: str) -> dict[str, Any]:
    return {"loc": (location, name), "msg": message, "type": kind}


CONTROL_MESSAGE = "control characters are not allowed"


async def reject_unknown_parameters(request: Request) -> None:
    """The application-wide dependency: unknown query names and control characters are 422."""
    route = request.scope.get("route")
    errors: list[dict[str, Any]] = []
    if isinstance(route, APIRoute) and request.query_params:
        accepted = accepted_query_names(route)
        for name in dict.fromkeys(request.query_params.keys()):
            if name not in accepted:
                shown = CONTROL.sub("?", name)[:100]
                message = f"unknown query parameter {shown!r}"
                errors.append(error("query", shown, message, "extra_forbidden"))
    for name, value in request.query_params.multi_items():
        if has_control(value):
            shown = CONTROL.sub("?", name)[:100]
            errors.append(error("query", shown, CONTROL_MESSAGE, "string_pattern_mismatch"))
    for name, value in request.path_params.items():
        if isinstance(value, str) and has_control(value):
            errors.append(error("path", name, CONTROL_MESSAGE, "string_pattern_mismatch"))
    if errors:
        raise RequestValidationError(errors)


def json_body(model: type[Body], max_bytes: int) -> Callable[[Request], Awaitable[Body]]:
    """A dependency reading a JSON body of at most ``max_bytes`` into ``model`` (strict).

    Over the cap is 413 before the rest is read; anything the model refuses is 422 with
    each error located under ``body``. Declare the body in the OpenAPI document with
    ``app.openapi.json_request_body(model)``.
    """

    async def dependency(request: Request) -> Body:
        return parse_json(model, await read_capped(request, max_bytes))

    return dependency


async def read_capped(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``max_bytes``."""
    declared = request.headers.get("content-length")
    too_large = PayloadTooLarge(f"the body is over the {max_bytes}-byte limit")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(model: type[Body], raw: bytes) -> Body:
    """``raw`` JSON into ``model``; every refusal is a 422 located under ``body``."""
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False)
            ]
        ) from None
