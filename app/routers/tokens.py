"""``POST /v1/auth/token``: OAuth2 client credentials, strictly rate limited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import FormData
from starlette.responses import JSONResponse, Response

from app.auth import grant
from app.auth.deps import get_keystore
from app.deps import PoolDep, SettingsDep
from app.errors import ValidationFailed, problem
from app.rate_limit import client_ip, limit, token_limits
from app.schemas.tokens import OAuthErrorBody, TokenResponse
from app.strict import CONTROL, has_control

router = APIRouter(prefix="/v1/auth", tags=["auth"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_OAUTH_ERROR = {"model": OAuthErrorBody}


FORM_FIELDS = ("grant_type", "client_id", "client_secret", "scope")
_FORM_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "client_id": {"type": "string", "maxLength": 64},
                        "client_secret": {"type": "string", "maxLength": 256},
                        "scope": {"type": "string", "description": "space-separated scopes"},
                    },
                    "required": ["grant_type"],
                    "additionalProperties": False,
                }
            }
        },
    }
}


def checked_form(form: FormData) -> dict[str, str]:
    """The token form's fields; an unknown, repeated or non-text field is a 422.

    RFC 6749 would have unknown parameters ignored; this registry fails closed instead, so a
    misspelt ``scope`` is never taken for "every scope". The problem body carries the OAuth
    members ``error``/``error_description`` too, for OAuth client libraries.
    """
    errors = []
    for key in dict.fromkeys(form.keys()):
        shown = CONTROL.sub("?", key)[:64]
        values = form.getlist(key)
        if key not in FORM_FIELDS:
            errors.append(_form_error(shown, f"unknown form field {shown!r}", "extra_forbidden"))
        elif len(values) > 1:
            errors.append(_form_error(shown, "given more than once", "value_error"))
        elif not isinstance(values[0], str):
            errors.append(_form_error(shown, "must be text, not a file", "string_type"))
        elif has_control(values[0]):
            errors.append(
                _form_error(shown, "control characters are not allowed", "string_pattern_mismatch")
            )
    if errors:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise ValidationFailed(
            detail,
            errors=errors,
            extra={"error": "invalid_request", "error_description": detail},
        )
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _form_error(field: str, message: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", field], "field": field, "message": message, "type": kind}


async def token_request(request: Request) -> grant.TokenRequest:
    """The form, parsed before the per-address limit counts: a malformed form is a 422."""
    fields = checked_form(await request.form())
    try:
        return grant.parse_request(fields, request.headers.get("authorization"))
    except grant.OAuthError as exc:
        request.state.oauth_error = exc
        return grant.TokenRequest(None, None, None, None)


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={400: _OAUTH_ERROR, 401: _OAUTH_ERROR},
    openapi_extra=_FORM_DOC,
)
@limit(token_limits, key_func=client_ip)
async def issue_access_token(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    token_req: grant.TokenRequest = Depends(token_request),
) -> Response:
    """Exchange client credentials for a short-lived bearer token (RFC 6749 §4.4)."""
    state = request.app.state
    attempts = grant.Attempts(state.rate_limit_backend, state.token_limits, client_ip(request))
    try:
        if (early := getattr(request.state, "oauth_error", None)) is not None:
            raise early
        body = await grant.client_credentials(
            pool, get_keystore(request.app), settings, token_req, attempts
        )
    except grant.TooManyAttempts as exc:
        return problem(
            429,
            f"fair-usage limit reached ({settings.token_limits}); retry after {exc.retry_after} s",
            title="Too Many Requests",
            headers={"Retry-After": str(exc.retry_after), **_NO_STORE},
        )
    except grant.OAuthError as exc:
        headers = dict(_NO_STORE)
        if exc.status == 401 and token_req.basic_auth:
            headers["WWW-Authenticate"] = 'Basic realm="nser"'
        content = {"error": exc.error, "error_description": exc.description}
        return JSONResponse(content, status_code=exc.status, headers=headers)
    return JSONResponse(body, headers=_NO_STORE)
