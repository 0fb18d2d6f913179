"""``/dci/``: the registry in the DCI Social Registry API v1.0.0 (spdci), over the agreements.

- ``POST /dci/registry/sync/search``: households matching an ``idtype-value``,
  ``expression`` or ``predicate`` query, as spdci Group records, a page per request;
- ``POST /dci/registry/sync/txn/status``: what became of a search, subscribe or unsubscribe
  transaction.

The same bearer token as ``/v1/partner`` (client credentials), the same rate limit, the
same sharing rules and audit (``app.services.dci``). Errors are the standard's bodies
(``{"errors": [{"code": "err.…", "message": …}]}``, or the reply envelope with ``rjct``),
except a 422 for an unknown query parameter and a 429, which are problem+json as elsewhere.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

from app.auth.deps import get_principal
from app.auth.partner import Principal
from app.deps import PoolDep, ReadsDep, SettingsDep
from app.errors import DATABASE_UNAVAILABLE, AppError, PayloadTooLarge
from app.openapi import json_request_body
from app.rate_limit import limit, partner_client_key, partner_limits
from app.schemas.dci import (
    DciErrors,
    DciSearchReply,
    DciSearchRequest,
    DciTxnStatusReply,
    DciTxnStatusRequest,
)
from app.services.dci import envelope
from app.services.dci import search as dci_search
from app.services.dci.envelope import DciError
from app.strict import read_capped

router = APIRouter(prefix="/dci", tags=["dci"])
MAX_BODY = 256 * 1024
_CODES = {
    400: envelope.BAD,
    401: envelope.UNAUTHORIZED,
    403: envelope.FORBIDDEN,
    404: envelope.NOT_FOUND,
    413: envelope.BAD,
    422: envelope.BAD,
    429: envelope.TOO_MANY,
    503: envelope.UNAVAILABLE,
}
_UNAVAILABLE = "the registry is temporarily unavailable; try again shortly"


def as_dci(exc: AppError) -> DciError:
    code = _CODES.get(exc.status, envelope.BAD)
    headers = dict(exc.headers or {})
    return DciError(exc.status, code, exc.detail, headers)


def unavailable() -> DciError:
    return DciError(503, envelope.UNAVAILABLE, _UNAVAILABLE, {"Retry-After": "5"})


async def dci_principal(request: Request, pool: PoolDep, settings: SettingsDep) -> Principal:
    """The partner behind the bearer token, as ``/v1/partner`` reads it; a missing or bad
    token is 401 ``err.request.unauthorized``, a disabled client or an agreement that is
    not active is 403 ``err.request.forbidden``."""
    try:
        return await get_principal(request, pool, settings)
    except AppError as exc:
        raise as_dci(exc) from None
    except DATABASE_UNAVAILABLE:
        raise unavailable() from None


DciPartner = Annotated[Principal, Depends(dci_principal)]


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def error_response(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DciError)
    return _json(exc.status, exc.body(), exc.headers or None)


def install(app: FastAPI) -> None:
    """The routes and their error bodies."""
    app.add_exception_handler(DciError, error_response)
    app.include_router(router)


async def _body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise DciError(415, envelope.BAD, "the body must be application/json")
    try:
        raw = await read_capped(request, MAX_BODY)
    except PayloadTooLarge as exc:
        raise DciError(413, envelope.BAD, exc.detail) from None
    return envelope.parse_body(raw)


def _responses(ok: type, ok_text: str, *errors: tuple[int, str]) -> dict[int | str, Any]:
    out: dict[int | str, Any] = {200: {"model": ok, "description": ok_text}}
    for status, text in errors:
        out[status] = {"model": DciErrors, "description": text}
    return out


_COMMON = (
    (401, "err.request.unauthorized: missing, expired or invalid bearer token"),
    (403, "err.request.forbidden: the agreement does not allow this"),
    (413, "err.request.bad: the body is over 256 KiB"),
    (415, "err.request.bad: the body is not application/json"),
    (503, "err.service.unavailable: the registry's database is unavailable; retry"),
)
_SECURITY: dict[str, Any] = {"security": [{"bearerAuth": []}]}
_SEARCH_400 = {
    "description": "The message was not taken (`errors`: err.request.bad, "
    "err.version.not_supported, err.encryption.invalid, err.signature.missing, "
    "err.signature.invalid), or a request in it was rejected "
    "(the on-search envelope, `status: rjct`, each request's `rjct.…` reason; nothing run)",
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/DciErrors"},
                    {"$ref": "#/components/schemas/DciSearchReply"},
                ]
            }
        }
    },
}


@router.post(
    "/registry/sync/search",
    summary="DCI sync search: households as spdci Group records",
    responses={
        **_responses(DciSearchReply, "on-search: every request `succ` with its page", *_COMMON),
        400: _SEARCH_400,
    },
    openapi_extra={**json_request_body(DciSearchRequest), **_SECURITY},
)
@limit(partner_limits, key_func=partner_client_key)
async def sync_search(request: Request, partner: DciPartner, reads: ReadsDep) -> Response:
    """Each request of the message (at most 10) answered at once with one page of the
    households its query matches within the caller's agreement."""
    body = await _body(request)
    try:
        reply = await dci_search.sync_search(reads, partner, body)
    except AppError as exc:
        raise as_dci(exc) from None
    except DATABASE_UNAVAILABLE:
        raise unavailable() from None
    return _json(reply.status_code, reply.body)


@router.post(
    "/registry/sync/txn/status",
    summary="DCI sync transaction status: what became of a search, subscribe or unsubscribe",
    responses=_responses(
        DciTxnStatusReply,
        "txn-on-status: the transaction's requests, their statuses and counts, or the "
        "subscription codes it made or ended (no records, no filters)",
        (
            400,
            "err.request.bad / err.version.not_supported / err.signature.missing / "
            "err.signature.invalid: the message was not taken",
        ),
        (404, "err.request.not_found: no such transaction of this client"),
        *_COMMON,
    ),
    openapi_extra={**json_request_body(DciTxnStatusRequest), **_SECURITY},
)
@limit(partner_limits, key_func=partner_client_key)
async def sync_txn_status(request: Request, partner: DciPartner, pool: PoolDep) -> Response:
    """The status of one of the caller's own search, subscribe or unsubscribe transactions,
    by transaction id, correlation id or reference ids; another client's transaction, or one
    of another kind than ``txn_type``, is not found."""
    body = await _body(request)
    try:
        reply = await dci_search.txn_status(pool, partner, body)
    except AppError as exc:
        raise as_dci(exc) from None
    except DATABASE_UNAVAILABLE:
        raise unavailable() from None
    return _json(reply.status_code, reply.body)
