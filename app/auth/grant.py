"""The OAuth2 client-credentials grant (RFC 6749 §4.4) behind ``POST /v1/auth/token``.

``NSER_TOKEN_LIMITS`` is counted three ways. Every request counts per client address (the
route's decorator). Failed client authentications count per client id **and** address, and
are checked before the secret is: guessing from one address is cut off, while a stranger's
wrong secrets never spend the attempts of the partner itself, calling from elsewhere.
Grants count per client id, so that even a client holding its secret gets a bounded number
of tokens; only a caller who knows the secret can spend that count.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import asyncpg
from limits import RateLimitItem

from app import rate_limit
from app.auth.keys import KeyStore
from app.auth.partner import check_agreement
from app.auth.scopes import agreement_scopes, parse_scope, staff_scopes
from app.auth.secrets import verify_secret
from app.auth.tokens import issue_token
from app.errors import Forbidden
from app.settings import Settings

_CLIENT_SQL = """
SELECT c.client_id, c.kind, c.scopes AS client_scopes, c.roles, c.secret_hash, c.disabled_at,
       c.staff_disabled_at,
       a.id AS agreement_id, a.status, a.valid_from, a.valid_to, a.categories, a.update_kinds
  FROM api_clients c LEFT JOIN agreements a ON a.id = c.agreement_id
 WHERE c.client_id = $1
"""


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: rendered as ``{"error": ..., "error_description": ...}``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class TooManyAttempts(Exception):
    """``NSER_TOKEN_LIMITS`` spent: failures of this client from this address, or grants."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Attempts:
    """The per-client counts of ``NSER_TOKEN_LIMITS`` for a request from ``address`` (the
    client as the per-IP budgets count it)."""

    backend: Any
    limits: list[RateLimitItem]
    address: str

    def check_failures(self, client_id: str) -> None:
        wait = rate_limit.exhausted(
            self.backend, self.limits, "token_failures", client_id, self.address
        )
        if wait is not None:
            raise TooManyAttempts(wait)

    def failed(self, client_id: str) -> None:
        rate_limit.hit(self.backend, self.limits, "token_failures", client_id, self.address)

    def grant(self, client_id: str) -> None:
        wait = rate_limit.hit(self.backend, self.limits, "token_grants", client_id)
        if wait is not None:
            raise TooManyAttempts(wait)


@dataclass(frozen=True)
class TokenRequest:
    grant_type: str | None
    client_id: str | None
    client_secret: str | None
    scope: str | None
    basic_auth: bool = False


def parse_request(form: dict[str, str], authorization: str | None) -> TokenRequest:
    """Form fields plus HTTP Basic client authentication (client_secret_basic)."""
    client_id, secret, basic = form.get("client_id"), form.get("client_secret"), False
    if authorization and authorization.lower().startswith("basic "):
        try:
            raw = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise OAuthError("invalid_client", "malformed Basic credentials", 401) from exc
        user, sep, password = raw.partition(":")
        if not sep:
            raise OAuthError("invalid_client", "malformed Basic credentials", 401)
        client_id, secret, basic = unquote(user), unquote(password), True
    return TokenRequest(form.get("grant_type"), client_id, secret, form.get("scope"), basic)


async def client_credentials(
    pool: asyncpg.Pool, keys: KeyStore, settings: Settings, req: TokenRequest, attempts: Attempts
) -> dict[str, Any]:
    if not req.grant_type:
        raise OAuthError("invalid_request", "grant_type is required")
    if req.grant_type != "client_credentials":
        raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
    if not req.client_id or not req.client_secret:
        raise OAuthError("invalid_client", "client authentication is required", 401)
    if len(req.client_id) > 64 or len(req.client_secret) > 256:
        raise OAuthError("invalid_client", "client authentication failed", 401)
    attempts.check_failures(req.client_id)
    row = await pool.fetchrow(_CLIENT_SQL, req.client_id)
    # The hash is checked even for an unknown client so timing does not tell them apart.
    # argon2 takes ~0.1 s of CPU: off the event loop.
    matches = await asyncio.to_thread(
        verify_secret, row["secret_hash"] if row else None, req.client_secret
    )
    if not matches or row is None:
        attempts.failed(req.client_id)
        raise OAuthError("invalid_client", "client authentication failed", 401)
    if row["disabled_at"] is not None:
        raise OAuthError("invalid_client", "client credentials are disabled", 401)
    if row["staff_disabled_at"] is not None:
        raise OAuthError("invalid_client", "the staff member is disabled", 401)
    if row["kind"] == "staff":
        allowed = staff_scopes(row["roles"])
        if not allowed:
            raise OAuthError(
                "unauthorized_client", "a staff client with no role holds no scope: no token"
            )
    else:
        try:
            check_agreement(row)
        except Forbidden as exc:
            raise OAuthError("invalid_grant", exc.detail) from exc
        allowed = agreement_scopes(row["categories"], row["update_kinds"])
    requested = parse_scope(req.scope)
    if requested - allowed:
        beyond = " ".join(sorted(requested - allowed))
        raise OAuthError("invalid_scope", f"scope beyond what the client may receive: {beyond}")
    granted = requested or allowed
    attempts.grant(row["client_id"])
    token, claims = issue_token(
        await keys.signing_key(pool),
        settings,
        client_id=row["client_id"],
        kind=row["kind"],
        scopes=granted,
        agreement_id=row["agreement_id"],
    )
    return {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": settings.token_ttl_seconds,
        "scope": claims["scope"],
    }
