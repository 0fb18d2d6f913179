"""``GET /.well-known/jwks.json``: the public keys that verify partner tokens, and the
Ed25519 keys that verify NSER's DCI signatures (``kty`` OKP, ``kid`` starting ``dci-``)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.auth import keys
from app.deps import PoolDep, SettingsDep
from app.schemas.tokens import Jwks
from app.services.dci import signing as dci_signing

router = APIRouter(tags=["auth"])


@router.get("/.well-known/jwks.json", response_model=Jwks)
async def get_jwks(pool: PoolDep, settings: SettingsDep) -> Response:
    """Current and still-verifying previous signing keys (public halves only): the JWT
    keys, then the DCI signature keys."""
    async with pool.acquire() as conn:
        await keys.ensure_current_key(conn, settings)
        await dci_signing.ensure_current_key(conn, settings)
        published = await keys.published_keys(conn) + await dci_signing.published_keys(conn)
    body = Jwks(keys=published).model_dump_json()
    return Response(body, media_type="application/json", headers={"Cache-Control": "max-age=60"})
