"""Issue and verify partner/staff access tokens (JWT, asymmetric, with ``kid``).

``verify_access_token`` is the only way a bearer token is checked: it pins the algorithm,
picks the one key its ``kid`` names, requires every registered claim it relies on, and
refuses oversized tokens and header-supplied keys (``jku``/``x5u``/``jwk``/``x5c``).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import asyncpg
from jose import jws, jwt
from jose.exceptions import JOSEError

from app.auth.keys import KeyStore, SigningKey
from app.errors import Unauthorized
from app.settings import Settings

MAX_TOKEN_BYTES = 4096
# Tokens whose signature and claims held, with the key that signed them: a partner sends
# the same token for its 15 minutes, and checking an ES256 signature (with the JWK parsed
# again) is a good part of a look-up's own work. Only the signature's result is kept: the
# key's retirement, the expiry and the not-before time are checked again at every use, and
# the client and agreement are read live after this (``load_principal``).
VERIFIED_CACHE_SIZE = 4096
_verified: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "crit"})
_REQUIRED = ("exp", "iat", "iss", "aud", "sub", "jti")


def issue_token(
    key: SigningKey,
    settings: Settings,
    *,
    client_id: str,
    kind: str,
    scopes: frozenset[str],
    agreement_id: uuid.UUID | None,
) -> tuple[str, dict[str, Any]]:
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": client_id,
        "iat": now,
        "nbf": now,
        "exp": now + settings.token_ttl_seconds,
        "jti": uuid.uuid4().hex,
        "scope": " ".join(sorted(scopes)),
        "kind": kind,
        "agreement_id": str(agreement_id) if agreement_id else None,
    }
    token = jwt.encode(
        claims, key.private_pem, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "JWT"}
    )
    return token, claims


async def verify_access_token(
    token: str, keys: KeyStore, pool: asyncpg.Pool, settings: Settings
) -> dict[str, Any]:
    """The token's claims, or ``Unauthorized`` for anything short of a well-formed token."""
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized("token too large")
    cached = _verified.get(token)
    if cached is not None:
        signed_by, held = cached
        key = await keys.verification_key(pool, signed_by)
        now = datetime.now(UTC)
        if (
            key is not None
            and key.algorithm == settings.jwt_algorithm
            and (key.verify_until is None or now < key.verify_until)
            and held.get("nbf", 0) <= now.timestamp() < held["exp"]
            and held["iss"] == settings.jwt_issuer
            and held["aud"] == settings.jwt_audience
        ):
            return held
        _verified.pop(token, None)  # checked afresh below, and refused with its reason
    try:
        header = jws.get_unverified_header(token)
    except JOSEError as exc:
        raise Unauthorized("malformed token") from exc
    if header.get("alg") != settings.jwt_algorithm:
        raise Unauthorized("token algorithm not accepted")
    if _FORBIDDEN_HEADERS & header.keys():
        raise Unauthorized("token header carries a key reference")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 64:
        raise Unauthorized("token has no key id")
    key = await keys.verification_key(pool, kid)
    if key is None or key.algorithm != settings.jwt_algorithm:
        raise Unauthorized("token signed by an unknown key")
    if key.verify_until is not None and key.verify_until <= datetime.now(UTC):
        raise Unauthorized("token signed by a retired key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.public_jwk,
            algorithms=[key.algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={
                "leeway": 0,
                "verify_at_hash": False,
                **{f"require_{claim}": True for claim in _REQUIRED},
            },
        )
    except JOSEError as exc:
        raise Unauthorized(f"invalid token: {exc}") from exc
    if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("scope", ""), str):
        raise Unauthorized("invalid token claims")
    if not isinstance(claims.get("exp"), int | float) or not isinstance(
        claims.get("nbf", 0), int | float
    ):
        raise Unauthorized("invalid token claims")
    _verified[token] = (kid, claims)
    if len(_verified) > VERIFIED_CACHE_SIZE:
        _verified.popitem(last=False)
    return claims
