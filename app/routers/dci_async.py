"""``/dci/``, asynchronous: the DCI search and transaction status answered by callback.

- ``POST /dci/registry/search``: a search message acknowledged at once (``ACK`` and the
  correlation id); its ``on-search`` answer is sent later to ``header.sender_uri``;
- ``POST /dci/registry/txn/status``: likewise, answered by a ``txn-on-status`` callback.

The same token, rate limit, checks and error bodies as the sync routes (app/routers/dci.py),
plus ``err.sender_uri.invalid`` when the answer has nowhere it may go. The work is a job
in PostgreSQL, run by the workers (app.services.dci.jobs).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.auth.partner import Principal
from app.deps import ReadsDep, SettingsDep
from app.errors import DATABASE_UNAVAILABLE, AppError
from app.openapi import json_request_body
from app.rate_limit import limit, partner_client_key, partner_limits
from app.replicas import Reads
from app.routers.dci import DciPartner, _body, _json, as_dci, unavailable
from app.schemas.dci import DciErrors, DciSearchRequest, DciTxnStatusRequest
from app.schemas.dci_async import DciAck
from app.services.dci import jobs
from app.settings import Settings

router = APIRouter(prefix="/dci", tags=["dci"])

_SECURITY: dict[str, Any] = {"security": [{"bearerAuth": []}]}


def _responses(*errors: tuple[int, str]) -> dict[int | str, Any]:
    out: dict[int | str, Any] = {
        202: {
            "model": DciAck,
            "description": "ACK: accepted (or accepted before: the same correlation id); "
            "the answer comes by callback",
        }
    }
    for status, text in errors:
        out[status] = {"model": DciErrors, "description": text}
    return out


_ERRORS = (
    (
        400,
        "the message was not taken: err.request.bad, err.version.not_supported, "
        "err.encryption.invalid, err.signature.missing / err.signature.invalid (the "
        "agreement registered a key), err.sender_uri.invalid (no DCI registration, or "
        "header.sender_uri not under its callback base URL); a message_id used before for "
        "another message",
    ),
    (401, "err.request.unauthorized: missing, expired or invalid bearer token"),
    (403, "err.request.forbidden: the agreement does not allow this"),
    (413, "err.request.bad: the body is over 256 KiB"),
    (415, "err.request.bad: the body is not application/json"),
    (503, "err.service.unavailable: the registry's database is unavailable; retry"),
)


async def _accept(
    request: Request, partner: Principal, reads: Reads, settings: Settings, kind: str
) -> Response:
    body = await _body(request)
    try:
        accepted = await jobs.accept(reads, settings, partner, body, kind=kind)
    except AppError as exc:
        raise as_dci(exc) from None
    except DATABASE_UNAVAILABLE:
        raise unavailable() from None
    return _json(202, jobs.ack(accepted))


@router.post(
    "/registry/search",
    status_code=202,
    summary="DCI search (asynchronous): acknowledged now, answered by an on-search callback",
    responses=_responses(*_ERRORS),
    openapi_extra={**json_request_body(DciSearchRequest), **_SECURITY},
)
@limit(partner_limits, key_func=partner_client_key)
async def search(
    request: Request, partner: DciPartner, reads: ReadsDep, settings: SettingsDep
) -> Response:
    """The message checked as the sync search checks it, then stored; its ``on-search``
    (each request's page of households, or why it was rejected) is posted to
    ``header.sender_uri`` (or the registered callback base URL), signed, once the workers
    have run it."""
    return await _accept(request, partner, reads, settings, "search")


@router.post(
    "/registry/txn/status",
    status_code=202,
    summary="DCI transaction status (asynchronous): answered by a txn-on-status callback",
    responses=_responses(*_ERRORS),
    openapi_extra={**json_request_body(DciTxnStatusRequest), **_SECURITY},
)
@limit(partner_limits, key_func=partner_client_key)
async def txn_status(
    request: Request, partner: DciPartner, reads: ReadsDep, settings: SettingsDep
) -> Response:
    """The message checked as the sync status checks it, then stored; the
    ``txn-on-status`` callback carries what ``/dci/registry/sync/txn/status`` would have
    answered (an unknown transaction: ``rjct`` with the reason)."""
    return await _accept(request, partner, reads, settings, "txn-status")
