"""Registry staff and DCI: an agreement's DCI registration (where its callbacks go, the key
its messages are signed with) and the callbacks that failed for good (dead letters).

Registration needs ``dci:register`` (officers); the deliveries ``dci:deliveries`` (officers
and staff administrators). Every call is audited as a staff action.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from app.auth.deps import require_scope
from app.auth.partner import Principal
from app.auth.scopes import Scope
from app.deps import PoolDep, SettingsDep
from app.errors import NotFound
from app.openapi import json_request_body, problems
from app.schemas.dci_staff import DciRegistrationIn
from app.services.dci import callbacks, registration
from app.strict import json_body

router = APIRouter(prefix="/v1/staff", tags=["staff", "dci"])

Registrar = Annotated[Principal, Depends(require_scope(Scope.DCI_REGISTER))]
Operator = Annotated[Principal, Depends(require_scope(Scope.DCI_DELIVERIES))]
BODY_CAP = 16 * 1024
CallbackId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The callback's id")]


@router.put(
    "/agreements/{agreement_id}/dci",
    openapi_extra=json_request_body(DciRegistrationIn),
    responses=problems(404, 409, 413),
)
async def put_registration(
    agreement_id: uuid.UUID,
    staff: Registrar,
    pool: PoolDep,
    settings: SettingsDep,
    body: Annotated[DciRegistrationIn, Depends(json_body(DciRegistrationIn, BODY_CAP))],
) -> dict[str, Any]:
    """Set (replace) the agreement's DCI registration: the callback base URL and, optionally,
    the sender's Ed25519 public key (JWK). 422 for a refused URL or key, 409 for an
    agreement revoked or expired. Audited."""
    key = body.public_key.model_dump(exclude_none=True) if body.public_key else None
    async with pool.acquire() as conn:
        made = await registration.register(
            conn,
            settings,
            agreement_id,
            callback_base_url=body.callback_base_url,
            public_key=key,
            actor=staff,
        )
    return made.as_json()


@router.get("/agreements/{agreement_id}/dci", responses=problems(404))
async def get_registration(
    agreement_id: uuid.UUID, _staff: Registrar, pool: PoolDep
) -> dict[str, Any]:
    """The agreement's DCI registration; 404 when it has none (or there is no agreement)."""
    async with pool.acquire() as conn:
        found = await registration.get(conn, agreement_id)
    if found is None:
        raise NotFound("the agreement has no DCI registration")
    return found.as_json()


@router.get("/dci/deliveries")
async def list_deliveries(
    staff: Operator,
    pool: PoolDep,
    state: Annotated[Literal["pending", "delivered", "dead"], Query()] = "dead",
    agreement_id: Annotated[uuid.UUID | None, Query()] = None,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="ids below (paging)")] = (
        None
    ),
    limit: Annotated[int, Query(ge=1, le=callbacks.MAX_PAGE)] = callbacks.PAGE,
) -> dict[str, Any]:
    """DCI callbacks in a state (``dead`` by default), newest first; ``next_before`` pages
    on. Each with its URL, attempts, last status and error; never its payload. Audited."""
    async with pool.acquire() as conn:
        return await callbacks.list_deliveries(
            conn, staff, state=state, agreement_id=agreement_id, before=before, limit=limit
        )


@router.post("/dci/deliveries/{callback_id}/retry", responses=problems(404, 409))
async def retry_delivery(callback_id: CallbackId, staff: Operator, pool: PoolDep) -> dict[str, Any]:
    """Make a dead callback due again, with a fresh count of attempts. 409 unless it is
    dead. Audited."""
    async with pool.acquire() as conn:
        return await callbacks.retry(conn, staff, callback_id)
