"""``/dci/registry/subscribe`` and ``/dci/registry/unsubscribe``: subscriptions to registry
events in the DCI Social Registry API v1.0.0 (app.services.dci.subscriptions).

Both answer at once with the standard's acknowledgement (``{"message": {"ack_status":
"ACK", ...}}``); what became of the message follows as an ``on-subscribe`` /
``on-unsubscribe`` callback. Notifications of the subscribed events are ``notify``
callbacks (app.services.dci.notify). The same token, rate limit and error bodies as the
DCI search (app.routers.dci).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.deps import PoolDep, SettingsDep
from app.errors import DATABASE_UNAVAILABLE, AppError
from app.openapi import json_request_body
from app.rate_limit import limit, partner_client_key, partner_limits
from app.routers.dci import DciPartner, _body, _json, _responses, as_dci, unavailable
from app.schemas.dci_subscriptions import DciAck, DciSubscribeRequest, DciUnsubscribeRequest
from app.services.dci import subscriptions

router = APIRouter(prefix="/dci", tags=["dci"])

_ERRORS = (
    (
        400,
        "err.request.bad / err.version.not_supported / err.encryption.invalid: the message "
        "was not taken; err.sender_uri.invalid: header.sender_uri is not under the "
        "agreement's registered callback base",
    ),
    (
        401,
        "err.request.unauthorized: missing, expired or invalid bearer token; "
        "err.signature.missing / err.signature.invalid: the agreement registered a key and "
        "the message's signature is missing or does not hold",
    ),
    (403, "err.request.forbidden: the agreement does not allow this, or has no DCI registration"),
    (413, "err.request.bad: the body is over 256 KiB"),
    (415, "err.request.bad: the body is not application/json"),
    (503, "err.service.unavailable: the registry's database is unavailable; retry"),
)
_SECURITY: dict[str, Any] = {"security": [{"bearerAuth": []}]}


def _error_responses() -> dict[int | str, Any]:
    return _responses(DciAck, "ACK: taken; the outcome follows as a callback", *_ERRORS)


@router.post(
    "/registry/subscribe",
    summary="DCI subscribe: notifications of registry events, by callback",
    responses=_error_responses(),
    openapi_extra={**json_request_body(DciSubscribeRequest), **_SECURITY},
)
@limit(partner_limits, key_func=partner_client_key)
async def subscribe(
    request: Request, partner: DciPartner, pool: PoolDep, settings: SettingsDep
) -> Response:
    """Each request of the message becomes a subscription (or is rejected with its reason);
    acknowledged at once, the outcome sent as an ``on-subscribe`` callback."""
    body = await _body(request)
    try:
        ack = await subscriptions.subscribe(pool, settings, partner, body)
    except AppError as exc:
        raise as_dci(exc) from None
    except DATABASE_UNAVAILABLE:
        raise unavailable() from None
    return _json(200, ack.body())


@router.post(
    "/registry/unsubscribe",
    summary="DCI unsubscribe: end subscriptions by code",
    responses=_error_responses(),
    openapi_extra={**json_request_body(DciUnsubscribeRequest), **_SECURITY},
)
@limit(partner_limits, key_func=partner_client_key)
async def unsubscribe(
    request: Request, partner: DciPartner, pool: PoolDep, settings: SettingsDep
) -> Response:
    """The caller's subscriptions named by code end; acknowledged at once, the outcome sent
    as an ``on-unsubscribe`` callback."""
    body = await _body(request)
    try:
        ack = await subscriptions.unsubscribe(pool, settings, partner, body)
    except AppError as exc:
        raise as_dci(exc) from None
    except DATABASE_UNAVAILABLE:
        raise unavailable() from None
    return _json(200, ack.body())
