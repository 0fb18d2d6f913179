"""POST /v1/auth/token, JWKS, and every forged token answered 401."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from conftest import make_settings, open_client, run_cli
from fastapi import FastAPI
from jose import jwt
from partner_helpers import bearer, create_partner, get_token

from app.auth.keys import decrypt_private_key
from app.main import create_app

SCORE_URL = "/v1/partner/scores/3520212345673"


@pytest.fixture(scope="module")
async def pclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(seeded_url, token_limits="10000/minute")
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
def partner(seeded_url: str) -> dict[str, str]:
    return create_partner(seeded_url, categories="iii,iv")


def _form(client_id: str, secret: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
        **extra,
    }


async def test_good_credentials(pclient: httpx.AsyncClient, partner: dict[str, str]) -> None:
    r = await pclient.post(
        "/v1/auth/token", data=_form(partner["client_id"], partner["client_secret"])
    )
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert set(body["scope"].split()) == {"scores:read", "beneficiaries:read"}
    header = jwt.get_unverified_header(body["access_token"])
    claims = jwt.get_unverified_claims(body["access_token"])
    assert header["alg"] == "ES256"
    assert header["kid"]
    assert {"iss", "aud", "sub", "exp", "iat", "jti", "scope", "agreement_id"} <= claims.keys()
    assert claims["agreement_id"] == partner["agreement_id"]
    jwks = (await pclient.get("/.well-known/jwks.json")).json()
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert all("d" not in k for k in jwks["keys"])


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "nsp_unknown"}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": ""}, 400, "invalid_request"),
        ({"scope": "extracts:read"}, 400, "invalid_scope"),
        ({"scope": "staff:read"}, 400, "invalid_scope"),
    ],
)
async def test_token_errors(
    pclient: httpx.AsyncClient,
    partner: dict[str, str],
    form: dict[str, str],
    status: int,
    error: str,
) -> None:
    data = {**_form(partner["client_id"], partner["client_secret"]), **form}
    r = await pclient.post("/v1/auth/token", data=data)
    assert r.status_code == status
    assert r.json()["error"] == error
    assert r.headers["cache-control"] == "no-store"


async def test_token_endpoint_is_rate_limited(seeded_url: str, partner: dict[str, str]) -> None:
    async for c in open_client(make_settings(seeded_url, token_limits="3/minute")):
        codes = [
            (await c.post("/v1/auth/token", data=_form(partner["client_id"], "guess"))).status_code
            for _ in range(5)
        ]
        assert codes[:3] == [401, 401, 401]
        r = await c.post("/v1/auth/token", data=_form(partner["client_id"], "guess"))
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1


async def _token_status(app: FastAPI, peer: str, client_id: str, secret: str) -> int:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://nser.test") as c:
        return (await c.post("/v1/auth/token", data=_form(client_id, secret))).status_code


async def test_a_strangers_wrong_secrets_do_not_lock_the_partner_out(
    seeded_url: str, partner: dict[str, str]
) -> None:
    app = create_app(make_settings(seeded_url, token_limits="3/minute"))
    async with app.router.lifespan_context(app):
        client_id = partner["client_id"]
        stranger = [
            await _token_status(app, "198.51.100.66", client_id, f"guess-{n}") for n in range(6)
        ]
        assert stranger == [401, 401, 401, 429, 429, 429]
        # The partner, from its own address, is not affected by the stranger's failures.
        assert await _token_status(app, "203.0.113.20", client_id, partner["client_secret"]) == 200


async def test_grants_per_client_stay_bounded(seeded_url: str, partner: dict[str, str]) -> None:
    app = create_app(make_settings(seeded_url, token_limits="3/minute"))
    async with app.router.lifespan_context(app):
        # From a new address each time: only the client's own count can say no.
        statuses = [
            await _token_status(
                app, f"203.0.113.{30 + n}", partner["client_id"], partner["client_secret"]
            )
            for n in range(4)
        ]
        assert statuses == [200, 200, 200, 429]


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def _forgeries(
    pclient: httpx.AsyncClient, partner: dict[str, str], seeded_url: str
) -> dict[str, str]:
    good = await get_token(pclient, partner["client_id"], partner["client_secret"])
    header = jwt.get_unverified_header(good)
    claims = jwt.get_unverified_claims(good)
    conn = await asyncpg.connect(seeded_url)
    try:
        row = await conn.fetchrow(
            "SELECT public_jwk, private_key_encrypted FROM signing_keys WHERE kid = $1",
            header["kid"],
        )
    finally:
        await conn.close()
    assert row is not None
    settings = make_settings(seeded_url)
    pem = decrypt_private_key(settings, header["kid"], row["private_key_encrypted"])
    public = json.loads(row["public_jwk"])
    h, p, s = good.split(".")
    now = int(time.time())

    def sign(payload: dict[str, object], **hdr: object) -> str:
        return jwt.encode(payload, pem, algorithm="ES256", headers={"kid": header["kid"], **hdr})

    return {
        "alg_none": f"{_b64({'alg': 'none', 'kid': header['kid']})}.{p}.",
        "hs256_public_key": jwt.encode(
            claims, json.dumps(public), algorithm="HS256", headers={"kid": header["kid"]}
        ),
        "expired": sign({**claims, "exp": now - 10, "iat": now - 1000}),
        "wrong_aud": sign({**claims, "aud": "someone-else"}),
        "wrong_iss": sign({**claims, "iss": "evil"}),
        "missing_aud": sign({k: v for k, v in claims.items() if k != "aud"}),
        "missing_exp": sign({k: v for k, v in claims.items() if k != "exp"}),
        "unknown_kid": jwt.encode(claims, pem, algorithm="ES256", headers={"kid": "nope"}),
        "jku_header": sign(claims, jku="https://evil.example/jwks.json"),
        "tampered": f"{h}.{_b64({**claims, 'scope': 'extracts:read', 'sub': 'x'})}.{s}",
        "garbage": "not-a-token",
        "oversized": sign({**claims, "pad": "x" * 5000}),
    }


async def test_forged_tokens_are_401(
    pclient: httpx.AsyncClient, partner: dict[str, str], seeded_url: str
) -> None:
    for name, token in (await _forgeries(pclient, partner, seeded_url)).items():
        r = await pclient.get(SCORE_URL, headers=bearer(token))
        assert r.status_code == 401, name
        assert r.headers["www-authenticate"].startswith("Bearer"), name
    r = await pclient.get(SCORE_URL)
    assert r.status_code == 401
    assert "Bearer" in r.headers["www-authenticate"]


async def test_rotation_keeps_old_tokens_until_expiry(
    pclient: httpx.AsyncClient, partner: dict[str, str], seeded_url: str
) -> None:
    old = await get_token(pclient, partner["client_id"], partner["client_secret"])
    old_kid = jwt.get_unverified_header(old)["kid"]
    run_cli(["keys", "rotate"], seeded_url)
    new = await get_token(pclient, partner["client_id"], partner["client_secret"])
    assert jwt.get_unverified_header(new)["kid"] != old_kid
    kids = {k["kid"] for k in (await pclient.get("/.well-known/jwks.json")).json()["keys"]}
    assert old_kid in kids
    for token in (old, new):
        assert (await pclient.get(SCORE_URL, headers=bearer(token))).status_code in (200, 404)
    # Time passes: the retired key's verification window closes.
    conn = await asyncpg.connect(seeded_url)
    try:
        await conn.execute(
            "UPDATE signing_keys SET verify_until = now() - interval '1 second' WHERE kid = $1",
            old_kid,
        )
    finally:
        await conn.close()
    async for fresh in open_client(make_settings(seeded_url, token_limits="10000/minute")):
        assert (await fresh.get(SCORE_URL, headers=bearer(old))).status_code == 401
        assert (await fresh.get(SCORE_URL, headers=bearer(new))).status_code in (200, 404)
        kids = {k["kid"] for k in (await fresh.get("/.well-known/jwks.json")).json()["keys"]}
        assert old_kid not in kids
