"""``POST /v1/auth/token``: OAuth2 client credentials, strictly rate limited."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from app.auth import grant
from app.auth.deps import get_keystore
from app.deps import PoolDep, SettingsDep
from app.rate_limit import client_ip, limit, partner_client_key, token_limits
from app.schemas.tokens import OAuthErrorBody, TokenResponse

router = APIRouter(prefix="/v1/auth", tags=["auth"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_OAUTH_ERROR = {"model": OAuthErrorBody}


async def token_request(request: Request) -> grant.TokenRequest:
    """Parse the form first, so the per-client limit can key on the claimed client id."""
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    try:
        parsed = grant.parse_request(fields, request.headers.get("authorization"))
    except grant.OAuthError as exc:
        request.state.oauth_error = exc
        return grant.TokenRequest(None, None, None, None)
    if parsed.client_id:
        request.state.client_id = parsed.client_id[:64]
    return parsed


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={400: _OAUTH_ERROR, 401: _OAUTH_ERROR, 429: {}},
)
@limit(token_limits, key_func=client_ip)
@limit(token_limits, key_func=partner_client_key)
async def issue_access_token(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    token_req: grant.TokenRequest = Depends(token_request),
) -> Response:
    """Exchange client credentials for a short-lived bearer token (RFC 6749 §4.4)."""
    try:
        if (early := getattr(request.state, "oauth_error", None)) is not None:
            raise early
        body = await grant.client_credentials(pool, get_keystore(request.app), settings, token_req)
    except grant.OAuthError as exc:
        headers = dict(_NO_STORE)
        if exc.status == 401 and token_req.basic_auth:
            headers["WWW-Authenticate"] = 'Basic realm="nser"'
        content = {"error": exc.error, "error_description": exc.description}
        return JSONResponse(content, status_code=exc.status, headers=headers)
    return JSONResponse(body, headers=_NO_STORE)
