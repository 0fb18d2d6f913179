"""Token endpoint and JWKS response bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
    scope: str


class OAuthErrorBody(BaseModel):
    error: str
    error_description: str | None = None


class Jwks(BaseModel):
    keys: list[dict[str, Any]]
