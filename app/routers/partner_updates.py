"""Updates back into the registry (docs/api.md "Updates back into the registry", protocol §5.2)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import Response

from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import PoolDep, SettingsDep
from app.errors import Forbidden
from app.openapi import problems
from app.schemas.updates import BatchAccepted, BatchStatus, UpdateBatchIn
from app.services.ingest import store as ingest_service

router = APIRouter(prefix="/v1/partner/updates", tags=["partner updates"])
UpdatesWriter = Annotated[Principal, Depends(require_scope(Scope.UPDATES_WRITE))]

_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": UpdateBatchIn.model_json_schema()}},
    }
}


def _json(payload: dict[str, Any], status: int) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _sender(principal: Principal) -> ingest_service.Sender:
    if principal.agreement_id is None or principal.organization_id is None:
        raise Forbidden("only partners with an agreement may send updates")
    return ingest_service.Sender(
        principal.client_id,
        principal.agreement_id,
        principal.organization_id,
        principal.update_kinds,
    )


@router.post(
    "",
    status_code=202,
    response_model=BatchAccepted,
    openapi_extra=_BODY_DOC,
    responses={
        200: {"description": "the same key and body were already received", "model": BatchAccepted},
        **problems(
            400,
            409,
            413,
            429,
            _400="The Idempotency-Key header is missing or too long",
            _409="A batch with this Idempotency-Key is still being stored; retry shortly",
            _429="The agreement's records per hour (NSER_UPDATES_RECORDS_PER_HOUR) would be "
            "passed; Retry-After says when the batch fits",
        ),
    },
)
async def post_updates(
    request: Request,
    principal: UpdatesWriter,
    pool: PoolDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Response:
    """Receive a batch (committed before 202); at most NSER_UPDATES_MAX_BODY_BYTES bytes and
    NSER_UPDATES_MAX_RECORDS records (413 past either), and NSER_UPDATES_RECORDS_PER_HOUR
    records an hour per agreement, dry runs included (429 with Retry-After past it)."""
    key = ingest_service.check_key(idempotency_key)
    declared = request.headers.get("content-length")
    body = await ingest_service.read_capped(
        request.stream(),
        settings.updates_max_body_bytes,
        int(declared) if declared and declared.isdigit() else None,
    )
    got = await ingest_service.receive(
        pool,
        _sender(principal),
        key,
        body,
        settings.updates_max_records,
        settings.updates_records_per_hour,
    )
    payload = {"batch_id": str(got.batch_id), "status": "received", "records": got.records}
    return _json(payload, 202 if got.created else 200)


@router.get(
    "/{batch_id}",
    response_model=BatchStatus,
    responses=problems(404, _404="No batch of the caller's has this id"),
)
async def get_update_batch(
    batch_id: uuid.UUID,
    principal: UpdatesWriter,
    pool: PoolDep,
    results: Annotated[bool, Query(description="false: counts only")] = True,
) -> Response:
    """One of the caller's batches with every record's outcome (404 for others' batches)."""
    batch = await ingest_service.get_batch(pool, batch_id, principal, limit=None if results else 0)
    return _json(batch, 200)
