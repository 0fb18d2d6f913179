"""An agreement's DCI registration, set by registry staff (HTTP) and by the operator (CLI),
and NSER's DCI signing key in the JWKS: a signature the service makes verifies with it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import fresh_database, make_settings, open_client, run_cli
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from partner_helpers import bearer, create_partner, create_staff, get_token

from app.services.dci import registration, signing
from app.settings import Settings

PATH = "/v1/staff/agreements/{}/dci"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database() as db:
        yield db


@pytest.fixture(scope="module")
def settings(url: str) -> Settings:
    return make_settings(url, in_process_workers=0)


@pytest.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def db(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
async def tokens(url: str, api: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    out = {}
    for role in ("officer", "admin", "me"):
        made = create_staff(url, f"DCI {role}", role)
        token = await get_token(api, made["client_id"], made["client_secret"])
        out[role] = bearer(token) | {"x-client": made["client_id"]}
    return out


@pytest.fixture(scope="module")
def blank(url: str) -> str:
    """An agreement the refused registrations are tried on: it stays unregistered."""
    return create_partner(url)["agreement_id"]


def headers(tokens: dict[str, dict[str, str]], role: str) -> dict[str, str]:
    return {"Authorization": tokens[role]["Authorization"]}


def jwk() -> dict[str, Any]:
    return signing.public_jwk(Ed25519PrivateKey.generate().public_key())


async def test_an_officer_registers_an_agreement(
    url: str, api: httpx.AsyncClient, db: asyncpg.Connection, tokens: dict[str, dict[str, str]]
) -> None:
    agreement = create_partner(url)["agreement_id"]
    officer = headers(tokens, "officer")
    assert (await api.get(PATH.format(agreement), headers=officer)).status_code == 404
    key = jwk() | {"kid": "partner-1", "use": "sig", "alg": "EdDSA"}
    body = {"callback_base_url": "https://SPMIS.example.org:443/dci", "public_key": key}
    answer = await api.put(PATH.format(agreement), json=body, headers=officer)
    assert answer.status_code == 200, answer.text
    made = answer.json()
    assert made["callback_base_url"] == "https://spmis.example.org/dci/"
    assert made["public_key"] == {"kty": "OKP", "crv": "Ed25519", "x": key["x"], "kid": "partner-1"}
    assert made["updated_by"] == tokens["officer"]["x-client"]
    assert (await api.get(PATH.format(agreement), headers=officer)).json() == made
    # Replaced as a whole: without a key, none is registered.
    body = {"callback_base_url": "https://spmis.example.org/dci2/"}
    answer = await api.put(PATH.format(agreement), json=body, headers=officer)
    assert answer.json()["public_key"] is None
    audited = await db.fetch(
        "SELECT client_id, filters FROM audit_log WHERE endpoint = $1 ORDER BY id",
        "PUT /v1/staff/agreements/{id}/dci",
    )
    assert [a["client_id"] for a in audited] == [tokens["officer"]["x-client"]] * 2
    assert json.loads(audited[0]["filters"])["agreement"] == agreement


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"callback_base_url": "http://spmis.example.org/"}, "callback_base_url"),
        ({"callback_base_url": "https://u:p@spmis.example.org/"}, "callback_base_url"),
        ({"callback_base_url": "https://spmis.example.org/#x"}, "callback_base_url"),
        ({"callback_base_url": "https://169.254.169.254/"}, "callback_base_url"),
        ({"callback_base_url": "gopher://spmis.example.org/"}, "callback_base_url"),
        ({"callback_base_url": ""}, "callback_base_url"),
        ({}, "callback_base_url"),
        (
            {"callback_base_url": "https://a.example/", "public_key": {"kty": "RSA"}},
            "public_key",
        ),
        (
            {
                "callback_base_url": "https://a.example/",
                "public_key": {"kty": "OKP", "crv": "Ed25519", "x": "A" * 43, "d": "A" * 43},
            },
            "public_key",
        ),
        ({"callback_base_url": "https://a.example/", "colour": "red"}, "colour"),
    ],
)
async def test_refused_registrations_change_nothing(
    blank: str,
    api: httpx.AsyncClient,
    tokens: dict[str, dict[str, str]],
    body: dict[str, Any],
    field: str,
) -> None:
    officer = headers(tokens, "officer")
    answer = await api.put(PATH.format(blank), json=body, headers=officer)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert field in answer.text
    assert (await api.get(PATH.format(blank), headers=officer)).status_code == 404


async def test_who_may_register(
    url: str, api: httpx.AsyncClient, tokens: dict[str, dict[str, str]]
) -> None:
    agreement = create_partner(url)["agreement_id"]
    body = {"callback_base_url": "https://spmis.example.org/"}
    for role in ("admin", "me"):
        answer = await api.put(PATH.format(agreement), json=body, headers=headers(tokens, role))
        assert answer.status_code == 403, role
    assert (await api.put(PATH.format(agreement), json=body)).status_code == 401
    missing = await api.put(
        PATH.format(uuid.uuid4()), json=body, headers=headers(tokens, "officer")
    )
    assert missing.status_code == 404
    run_cli(["partners", "revoke", agreement], url)
    revoked = await api.put(PATH.format(agreement), json=body, headers=headers(tokens, "officer"))
    assert revoked.status_code == 409


def test_the_operator_registers_by_the_cli(url: str, tmp_path: Path) -> None:
    agreement = create_partner(url)["agreement_id"]
    key_file = tmp_path / "partner.jwk"
    key = jwk()
    key_file.write_text(json.dumps(key))
    made = run_cli(
        [
            "partners",
            "dci",
            "set",
            agreement,
            "--callback-base-url",
            "https://spmis.example.org/cb",
            "--jwk-file",
            str(key_file),
        ],
        url,
    )
    registration = json.loads(made.stdout)
    assert registration["callback_base_url"] == "https://spmis.example.org/cb/"
    assert registration["public_key"]["x"] == key["x"]
    assert registration["updated_by"] == "operator"
    shown = json.loads(run_cli(["partners", "dci", "show", agreement], url).stdout)
    assert shown == registration
    for args, reason in [
        (["--callback-base-url", "http://spmis.example.org/"], "https"),
        (["--callback-base-url", "https://10.0.0.7/"], "private"),
    ]:
        refused = run_cli(["partners", "dci", "set", agreement, *args], url, check=False)
        assert refused.returncode != 0
        assert reason in refused.stdout + refused.stderr
    key_file.write_text(json.dumps(key | {"d": key["x"]}))
    refused = run_cli(
        [
            "partners",
            "dci",
            "set",
            agreement,
            "--callback-base-url",
            "https://a.example/",
            "--jwk-file",
            str(key_file),
        ],
        url,
        check=False,
    )
    assert refused.returncode != 0
    assert "private" in refused.stdout + refused.stderr
    unknown = run_cli(["partners", "dci", "show", str(uuid.uuid4())], url, check=False)
    assert unknown.returncode != 0
    assert json.loads(run_cli(["partners", "dci", "show", agreement], url).stdout) == registration


async def test_the_jwks_publishes_the_dci_key_and_a_service_signature_verifies(
    url: str, settings: Settings, api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    signer = signing.Signer(settings)
    key = await signer.current(db)
    envelope = {"header": {"action": "notify", "message_id": "1"}, "message": {"n": 1}}
    envelope["signature"] = signer.sign(key, envelope)
    published = (await api.get("/.well-known/jwks.json")).json()["keys"]
    (dci,) = [k for k in published if k["kid"] == key.kid]
    assert dci == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": dci["x"],
        "kid": key.kid,
        "alg": "EdDSA",
        "use": "sig",
    }
    assert any(k.get("kty") != "OKP" for k in published)  # the token keys stay
    parsed = signing.verify(envelope, signing.public_key_from_jwk(dci))
    assert parsed.key_id == f"nser|{key.kid}|ed25519"
    # Rotated: the new key signs, the old one is still published (a day).
    rotated = json.loads(run_cli(["keys", "rotate-dci"], url).stdout)
    assert rotated["previous_kid"] == key.kid
    newer = await signer.current(db)
    assert newer.kid == rotated["kid"]
    kids = {k["kid"] for k in (await api.get("/.well-known/jwks.json")).json()["keys"]}
    assert {key.kid, newer.kid} <= kids
    private = await db.fetchval(
        "SELECT private_key_encrypted FROM dci_signing_keys WHERE kid = $1", key.kid
    )
    assert b"PRIVATE KEY" not in private  # encrypted at rest


async def test_incoming_messages_verify_against_the_registered_key(
    url: str, api: httpx.AsyncClient, db: asyncpg.Connection, tokens: dict[str, dict[str, str]]
) -> None:
    agreement = create_partner(url)["agreement_id"]
    ident = uuid.UUID(agreement)
    partner_key = Ed25519PrivateKey.generate()
    envelope: dict[str, Any] = {
        "header": {"action": "search", "message_id": "p-1", "sender_id": "spmis"},
        "message": {"transaction_id": "t-1"},
    }
    # No registration, or no key: nothing is required.
    assert await registration.verify_message(db, ident, envelope) is None
    body = {"callback_base_url": "https://spmis.example.org/dci/"}
    officer = headers(tokens, "officer")
    assert (await api.put(PATH.format(agreement), json=body, headers=officer)).status_code == 200
    assert await registration.verify_message(db, ident, envelope) is None
    body["public_key"] = signing.public_jwk(partner_key.public_key())
    assert (await api.put(PATH.format(agreement), json=body, headers=officer)).status_code == 200
    with pytest.raises(signing.SignatureMissing):
        await registration.verify_message(db, ident, envelope)
    envelope["signature"] = signing.sign(envelope, partner_key, key_id="spmis|p1|ed25519")
    parsed = await registration.verify_message(db, ident, envelope)
    assert parsed is not None
    assert parsed.kid == "p1"
    envelope["message"]["transaction_id"] = "t-2"
    with pytest.raises(signing.SignatureInvalid):
        await registration.verify_message(db, ident, envelope)
