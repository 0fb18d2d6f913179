"""Request context: request id, one JSON access-log line and metrics per request; and the
scheme a trusted TLS proxy says the client used.

Pure ASGI middlewares: ``BaseHTTPMiddleware`` runs the app in a separate task and wraps
every body chunk, which costs a large share of a short request's time on the hot path.
"""

from __future__ import annotations

import os
import re
from time import perf_counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.errors import PayloadTooLarge, ProblemResponse, problem
from app.logging import access_log, mask_cnic, request_id_var
from app.rate_limit import IpNetwork, is_trusted

# An incoming id is kept only if it is short and plain, so it cannot forge log lines or
# carry data (a CNIC, a header injection) into our logs and responses.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}", re.ASCII)
_HEADER = b"x-request-id"
_PID = os.getpid()  # uvicorn spawns its workers, so each imports this afresh


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _HEADER:
            return value.decode("ascii") if _SANE_REQUEST_ID.fullmatch(value) else None
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # 128 random bits, like a uuid4, without building a UUID object on every request.
        request_id = _incoming_request_id(scope) or os.urandom(16).hex()
        request_id_var.set(request_id)  # the task's own context: no reset needed
        id_header = (_HEADER, request_id.encode("ascii"))
        status = 500
        started = perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = perf_counter() - started
            # The router records the matched route in the scope; its template names the series.
            route = getattr(scope.get("route"), "path", None) or metrics.UNMATCHED_ROUTE
            method: str = scope["method"]
            metrics.observe(method, route, status, duration)
            client = scope.get("client")
            access_log.write(
                {
                    "method": method,
                    "path": mask_cnic(scope["path"]),
                    "route": route,
                    "status": status,
                    "duration_ms": round(duration * 1000, 3),
                    "client": client[0] if client else None,
                    "pid": _PID,  # which worker answered
                }
            )


_PROTO_HEADER = b"x-forwarded-proto"
_SCHEMES = {"http", "https"}


def forwarded_proto(
    peer: str | None, headers: list[tuple[bytes, bytes]], trusted: list[IpNetwork]
) -> str | None:
    """The scheme a trusted proxy says the client used, or None to keep the connection's.

    Only a peer in ``trusted`` is believed, and only the right-most value of
    ``X-Forwarded-Proto``: the one that proxy wrote (values left of it came from further
    away, possibly from the client). Anything but ``http`` or ``https`` is ignored.
    """
    if peer is None or not is_trusted(peer, trusted):
        return None
    values = [value.decode("latin-1") for name, value in headers if name == _PROTO_HEADER]
    if not values:
        return None
    last = values[-1].rsplit(",", 1)[-1].strip().lower()
    return last if last in _SCHEMES else None


class TrustedProxyScheme:
    """Pure ASGI: a request a trusted proxy (``NSER_TRUSTED_PROXIES``) received over TLS is
    served as ``https``, so pages carry HSTS and their cookies are ``Secure``.

    uvicorn's own proxy-header handling stays off (``nser serve``): it would also rewrite
    the client address, which :mod:`app.rate_limit` derives itself from the same networks.
    """

    def __init__(self, app: ASGIApp, trusted: list[IpNetwork]) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            scheme = forwarded_proto(client[0] if client else None, scope["headers"], self.trusted)
            if scheme is not None:
                scope["scheme"] = scheme
        await self.app(scope, receive, send)


class RequestLimits:
    """Pure ASGI, ahead of routing: what no endpoint takes is refused before any work.

    - a ``Content-Encoding`` other than ``identity``: 415 with ``Accept-Encoding: identity``
      (no endpoint inflates a compressed body, so a gzip bomb is never opened);
    - a declared ``Content-Length`` over ``max_body`` (the largest body any endpoint takes):
      413 before a byte of it is read; a body without a length (chunked) is cut at the same
      size, 413 as it passes;
    - more than ``max_query_params`` query parameters: 414 before the query is parsed.

    Each endpoint's own cap (``app.strict.read_capped``) is smaller still; the server's
    limits on the head and the deadlines on head and body are ``app.http_guard``'s.
    """

    def __init__(self, app: ASGIApp, max_body: int, max_query_params: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_query_params = max_query_params

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        max_body = self.max_body
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_body:
                    raise PayloadTooLarge(f"the body is over the {max_body}-byte limit")
            return message

        await self.app(scope, capped_receive, send)

    def _refusal(self, scope: Scope) -> ProblemResponse | None:
        query: bytes = scope.get("query_string", b"")
        if query and query.count(b"&") + 1 > self.max_query_params:
            return problem(
                414,
                f"more than {self.max_query_params} query parameters",
            )
        for name, value in scope["headers"]:
            if name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                return problem(
                    415,
                    "compressed request bodies are not accepted: send the body uncompressed "
                    "(Content-Encoding: identity)",
                    headers={"Accept-Encoding": "identity"},
                )
            if name == b"content-length":
                declared = value.strip()
                if not declared.isdigit():
                    return problem(400, "Content-Length must be a number of bytes")
                if int(declared) > self.max_body:
                    return problem(413, f"the body is over the {self.max_body}-byte limit")
        return None
