"""The public look-up answered ahead of FastAPI's routing, in plain ASGI.

``GET /v1/public/scores/{cnic}`` is the busiest endpoint by far (every citizen checking a
poverty level). FastAPI's route matching, dependency solving and response validation cost
it more than twice the database query itself, so this layer answers it directly with the
very same function the FastAPI route calls (:func:`public_score_response`). It sits inside
the request-context middleware, so request ids, access logs and metrics are unchanged, and
it labels the request with the route template; the FastAPI route's OpenAPI description
stays the contract.
Anything else — other paths, other methods, a path with more segments — passes through.
"""

from __future__ import annotations

from typing import NamedTuple

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.rate_limit import scope_client_ip
from app.routers.public_scores import PATH_PREFIX, public_score_response


class _RouteLabel(NamedTuple):
    """What the request-context middleware reads of the matched route: its template."""

    path: str


_ROUTE = _RouteLabel(PATH_PREFIX + "{cnic}")


class PublicLookupFastPath:
    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith(PATH_PREFIX):
                written = path[len(PATH_PREFIX) :]
                # A query string goes to FastAPI, which refuses parameters it does not know.
                if written and "/" not in written and not scope.get("query_string"):
                    scope["route"] = _ROUTE  # names the metrics series, as routing would
                    state = self.api.state
                    client = scope_client_ip(scope, state)
                    response = await public_score_response(state, written, client)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
