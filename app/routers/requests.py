"""Data-sharing requests from organizations (§4.1, Annex I): apply, follow, withdraw.

No credentials: any organization may apply. The 201 carries a status link whose token is
the requester's only key; a wrong token is 404, like an unknown reference.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import JSONResponse

from app.deps import PoolDep
from app.openapi import json_request_body, problems
from app.rate_limit import client_ip, limit, request_form_limits
from app.schemas.requests import RequestAccepted, RequestForm, RequestStatus
from app.services.requests import store
from app.strict import json_body

router = APIRouter(prefix="/v1/requests", tags=["requests"])

Reference = Annotated[str, Path(pattern=r"^DSR-[0-9]{4}-[0-9]{6}$", examples=["DSR-2026-000123"])]
Token = Annotated[str, Query(min_length=20, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


async def _form(request: Request) -> RequestForm:
    cap: int = request.app.state.settings.request_form_max_bytes
    return await json_body(RequestForm, cap)(request)


@router.post(
    "",
    status_code=201,
    response_model=RequestAccepted,
    openapi_extra=json_request_body(RequestForm),
    responses=problems(413),
)
@limit(request_form_limits, key_func=client_ip)
async def submit_request(
    request: Request, pool: PoolDep, form: Annotated[RequestForm, Depends(_form)]
) -> JSONResponse:
    """Apply for data (the Data Request Form, §4.1.3 a-j). Keep the ``status_url``: its
    token is shown once and is the only way to follow or withdraw the request."""
    made = await store.submit(pool, form)
    body: dict[str, Any] = {
        "request_id": str(made.request_id),
        "reference": made.reference,
        "status": "submitted",
        "status_url": made.status_url,
    }
    return JSONResponse(body, status_code=201, headers={"Location": made.status_url})


@router.get(
    "/{reference}",
    response_model=RequestStatus,
    responses=problems(404, _404="No request has this reference and token"),
)
async def get_request_status(reference: Reference, token: Token, pool: PoolDep) -> Any:
    """The request's status and the dates of its steps; never staff notes or names."""
    return await store.public_view(pool, reference, token)


@router.post(
    "/{reference}/withdraw",
    response_model=RequestStatus,
    responses=problems(404, 409, _404="No request has this reference and token"),
)
async def withdraw_request(reference: Reference, token: Token, pool: PoolDep) -> Any:
    """Withdraw the request (before the Secretary's approval; 409 after it)."""
    return await store.withdraw_by_requester(pool, reference, token)
