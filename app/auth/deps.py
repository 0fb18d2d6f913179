"""FastAPI dependencies: bearer token -> verified claims -> live principal -> scope check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from app.auth.keys import KeyStore
from app.auth.partner import Principal, load_principal
from app.auth.scopes import Scope
from app.auth.tokens import verify_access_token
from app.deps import PoolDep, SettingsDep
from app.errors import Forbidden, Unauthorized


def get_keystore(app: FastAPI) -> KeyStore:
    store: KeyStore | None = getattr(app.state, "keystore", None)
    if store is None:
        store = KeyStore(app.state.settings)
        app.state.keystore = store
    return store


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing bearer token")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized("malformed authorization header")
    return token


async def get_principal(request: Request, pool: PoolDep, settings: SettingsDep) -> Principal:
    claims = await verify_access_token(
        bearer_token(request), get_keystore(request.app), pool, settings
    )
    principal = await load_principal(pool, claims)
    request.state.principal = principal
    # Read by the rate limiter: the per-client key and the agreement's own limits.
    request.state.client_id = principal.client_id
    request.state.rate_limits = principal.rate_limit
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency answering 401/403, or the principal when ``scope`` is granted now."""

    async def dependency(principal: PrincipalDep) -> Principal:
        if scope not in principal.scopes:
            raise Forbidden(f"the token or its agreement does not grant {scope.value}")
        return principal

    dependency.__name__ = f"require_{scope.name.lower()}"
    return dependency


async def require_staff(principal: PrincipalDep) -> Principal:
    """A dependency answering 401/403, or the principal when it is a member of the registry
    staff (a staff client; a staff token always carries a role's scope)."""
    if principal.kind != "staff" or not principal.scopes:
        raise Forbidden("this is for the registry's staff (a staff token)")
    return principal
