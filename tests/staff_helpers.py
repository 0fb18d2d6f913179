"""Helpers of the staff console's tests: a software passkey authenticator, and the console's
ceremonies driven over HTTP the way its script drives them, and the fixtures of its test
modules (``browser``: fresh cookie jars on one app with the console at ``ORIGIN``;
``staff_db``: a connection to check and move timestamps).

``Authenticator`` is a WebAuthn authenticator in a few lines of ``cryptography`` and CBOR:
ES256 keys, "none" attestation, discoverable credentials whose user handle is the staff
id, a sign counter per credential. It answers the options the service hands out exactly as
a browser would pass them on (base64url JSON), so the service's verification is the real
one (py_webauthn), not a stand-in.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import cbor2
import httpx
import pytest
from conftest import make_settings, run_cli
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from app.main import create_app

UP, UV, AT = 0x01, 0x04, 0x40
CSRF = re.compile(r'data-csrf="([0-9a-f]{64})"|name="csrf_token" value="([0-9a-f]{64})"')


def b64(data: bytes) -> str:
    return urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Credential:
    id: bytes
    key: ec.EllipticCurvePrivateKey
    user_handle: bytes
    sign_count: int = 0


@dataclass
class Authenticator:
    origin: str
    rp_id: str
    user_verified: bool = True
    counts_signatures: bool = True
    credentials: dict[bytes, Credential] = field(default_factory=dict)

    def create(self, options: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        """navigator.credentials.create(): a new credential, its attestation as JSON."""
        assert options["rp"]["id"] == self.rp_id
        assert options["authenticatorSelection"]["userVerification"] == "required"
        assert options["authenticatorSelection"]["residentKey"] == "required"
        key = ec.generate_private_key(ec.SECP256R1())
        numbers = key.public_key().public_numbers()
        cose = cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        cred_id = secrets.token_bytes(32)
        handle = unb64(options["user"]["id"])
        self.credentials[cred_id] = Credential(cred_id, key, handle)
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        auth_data = (
            self._rp_hash()
            + bytes([UP | AT | (UV if self.user_verified else 0)])
            + (0).to_bytes(4, "big")
            + bytes(16)
            + len(cred_id).to_bytes(2, "big")
            + cred_id
            + cose
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64(cred_id),
            "rawId": b64(cred_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data),
                "attestationObject": b64(attestation),
                "transports": ["internal"],
            },
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        credential: bytes | None = None,
        origin: str | None = None,
    ) -> dict[str, Any]:
        """navigator.credentials.get(): an assertion by ``credential`` (else the one the
        options allow, else this authenticator's first)."""
        assert options["userVerification"] == "required"
        allowed = [unb64(item["id"]) for item in options.get("allowCredentials", [])]
        if credential is None:
            usable = [c for c in self.credentials if not allowed or c in allowed]
            assert usable, "no credential of this authenticator is allowed"
            credential = usable[0]
        held = self.credentials[credential]
        if self.counts_signatures:
            held.sign_count += 1
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        auth_data = (
            self._rp_hash()
            + bytes([UP | (UV if self.user_verified else 0)])
            + held.sign_count.to_bytes(4, "big")
        )
        signature = held.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64(credential),
            "rawId": b64(credential),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data),
                "authenticatorData": b64(auth_data),
                "signature": b64(signature),
                "userHandle": b64(held.user_handle),
            },
        }

    def _rp_hash(self) -> bytes:
        return hashlib.sha256(self.rp_id.encode()).digest()

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": origin or self.origin}
        ).encode()


def token_of(link: str) -> str:
    """An enrolment link's one-time token (the fragment of ``…/staff/enrol#TOKEN``)."""
    parts = urlsplit(link)
    assert parts.path == "/staff/enrol", link
    return parts.fragment


async def csrf(client: httpx.AsyncClient, path: str = "/staff/sign-in") -> str:
    """The CSRF token of a console page (its cookie kept by ``client``)."""
    page = await client.get(path)
    found = CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1) or found.group(2)


async def post_json(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], token: str
) -> httpx.Response:
    return await client.post(path, json=body, headers={"X-CSRF-Token": token})


async def enrol(
    client: httpx.AsyncClient, link: str, device: Authenticator, label: str = "Test key"
) -> httpx.Response:
    """The enrolment page's ceremony: options, create, verify."""
    token = await csrf(client, "/staff/enrol")
    secret = token_of(link)
    options = await post_json(client, "/staff/enrol/options", {"token": secret}, token)
    assert options.status_code == 200, options.text
    credential = device.create(options.json())
    return await post_json(
        client,
        "/staff/enrol/verify",
        {"token": secret, "credential": credential, "label": label},
        token,
    )


async def sign_in(
    client: httpx.AsyncClient, device: Authenticator, next_: str | None = None
) -> httpx.Response:
    """The sign-in page's ceremony: options, get, verify (the session cookie is kept)."""
    token = await csrf(client, "/staff/sign-in")
    options = await post_json(client, "/staff/sign-in/options", {}, token)
    assert options.status_code == 200, options.text
    answer = device.get(options.json())
    return await post_json(
        client, "/staff/sign-in/verify", {"credential": answer, "next": next_}, token
    )


async def step_up(client: httpx.AsyncClient, device: Authenticator, next_: str) -> httpx.Response:
    token = await csrf(client, f"/staff/step-up?next={next_}")
    options = await post_json(client, "/staff/step-up/options", {}, token)
    assert options.status_code == 200, options.text
    answer = device.get(options.json())
    return await post_json(
        client, "/staff/step-up/verify", {"credential": answer, "next": next_}, token
    )


ORIGIN = "http://nser.test"


@dataclass
class Member:
    """A staff member made by ``nser staff create``, with a device holding their passkey."""

    staff_id: str
    client_secret: str
    link: str
    device: Authenticator


def new_device() -> Authenticator:
    return Authenticator(origin=ORIGIN, rp_id="nser.test")


Browser = Callable[..., httpx.AsyncClient]


@pytest.fixture(scope="module")
async def browser(database_url: str) -> AsyncIterator[Browser]:
    """Opens a fresh browser (its own cookies) on the app with the console at ORIGIN."""
    async with browsers(database_url) as open_browser:
        yield open_browser


@asynccontextmanager
async def browsers(database_url: str, **settings: Any) -> AsyncIterator[Browser]:
    """The app with the console at ORIGIN (and ``settings``), and a way to open browsers on
    it, each with its own cookies."""
    app = create_app(
        make_settings(
            database_url,
            **{"staff_origin": ORIGIN, "staff_sign_in_limits": "10000/minute", **settings},
        )
    )
    opened: list[httpx.AsyncClient] = []
    async with app.router.lifespan_context(app):

        def open_browser(ip: str = "203.0.113.30") -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(ip, 40000))
            client = httpx.AsyncClient(transport=transport, base_url=ORIGIN)
            opened.append(client)
            return client

        yield open_browser
        for client in opened:
            await client.aclose()


@pytest.fixture(scope="module")
async def staff_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


def create_member(url: str, *roles: str, name: str = "Staff test") -> Member:
    args = ["staff", "create", "--name", name, *[f"--role={r}" for r in roles], "--json"]
    made = json.loads(run_cli(args, url).stdout)
    return Member(made["staff_id"], made["client_secret"], made["enrolment_link"], new_device())


async def enrolled(url: str, browser: Browser, *roles: str) -> Member:
    member = create_member(url, *roles)
    done = await enrol(browser(), member.link, member.device)
    assert done.status_code == 200, done.text
    return member


async def signed_in_member(
    url: str, browser: Browser, *roles: str
) -> tuple[Member, httpx.AsyncClient]:
    """A new member with ``roles``, enrolled, and a browser signed in as them."""
    member = await enrolled(url, browser, *roles)
    client = browser()
    assert (await sign_in(client, member.device)).status_code == 200
    return member, client


async def post_form(
    client: httpx.AsyncClient,
    path: str,
    fields: Mapping[str, str | list[str]] | None = None,
    **more: str | list[str],
) -> httpx.Response:
    """A console form posted with a fresh CSRF token: ``fields`` and ``more``."""
    token = await csrf(client, "/staff/")
    return await client.post(path, data={"csrf_token": token, **(fields or {}), **more})


async def session_hash(client: httpx.AsyncClient) -> bytes:
    return hashlib.sha256(client.cookies["nser_staff"].encode()).digest()
