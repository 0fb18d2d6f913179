"""An agreement's DCI registration, and the rules every callback URL obeys.

A registration is the base URL under which the agreement's DCI callbacks are sent and,
optionally, the Ed25519 public key (a JWK, RFC 8037) its sender signs every message with
(:func:`verify_message` checks an incoming envelope against it). Registry staff set it
(``PUT /v1/staff/agreements/{id}/dci``) or the operator (``nser partners dci set``); either
way the change is audited.

URLs (the base and each callback's): ``https`` (``http`` only with
NSER_DCI_ALLOW_HTTP_CALLBACKS), a host, no user name or password, no fragment, no ``.`` or
``..`` path segment, no whitespace or control character, at most 2,000 characters; a base
has no query either. An IP-literal host in a private, loopback, link-local, multicast,
reserved or unspecified range is refused unless NSER_DCI_ALLOW_PRIVATE_CALLBACKS (host
names are checked when they are resolved, at each delivery: app.services.dci.callbacks).
A callback URL lies under its base when scheme, host and port are the same and its path is
the base's path or continues it after a ``/``.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

import asyncpg
import orjson

from app.errors import Conflict, NotFound, ValidationFailed
from app.services.audit import trail as audit
from app.services.dci import signing
from app.settings import Settings

MAX_URL = 2000
DEFAULT_PORTS = {"http": 80, "https": 443}
OPERATOR = "operator"


class UrlRefused(ValueError):
    """A URL the callback rules refuse; the message says which rule."""


@dataclass(frozen=True)
class Registration:
    agreement_id: uuid.UUID
    callback_base_url: str
    public_jwk: dict[str, Any] | None
    updated_by: str
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "agreement_id": str(self.agreement_id),
            "callback_base_url": self.callback_base_url,
            "public_key": self.public_jwk,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at.isoformat(),
        }


def address_refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a callback may not connect to ``address`` (None: it may). An IPv4 address mapped
    into IPv6 (or 6to4, Teredo) is judged as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and address.teredo is not None:
            inner = address.teredo[1]
        if inner is not None:
            return address_refused(inner)
    for test, name in (
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_unspecified, "unspecified"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (not address.is_global, "not public"),
    ):
        if test:
            return f"a {name} address ({address})"
    return None


def _split(url: Any, settings: Settings, *, base: bool) -> SplitResult:
    if not isinstance(url, str) or not url:
        raise UrlRefused("a URL is required")
    if len(url) > MAX_URL:
        raise UrlRefused(f"the URL is over {MAX_URL} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UrlRefused("the URL holds whitespace or a control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"not a URL: {exc}") from exc
    schemes = ("https", "http") if settings.dci_allow_http_callbacks else ("https",)
    if parts.scheme.lower() not in schemes:
        raise UrlRefused(
            "the URL must be https" if len(schemes) == 1 else "the URL must be https or http"
        )
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise UrlRefused("the URL may not carry a user name or password")
    if "#" in url:
        raise UrlRefused("the URL may not carry a fragment")
    if base and (parts.query or "?" in url):
        raise UrlRefused("the base URL may not carry a query")
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    if port == 0:
        raise UrlRefused("the URL's port is 0")
    segments = parts.path.split("/")
    if any(segment in (".", "..") for segment in segments):
        raise UrlRefused('the URL\'s path may not hold "." or ".." segments')
    if not settings.dci_allow_private_callbacks:
        try:
            literal = ipaddress.ip_address(parts.hostname)
        except ValueError:
            literal = None
        if literal is not None and (reason := address_refused(literal)):
            raise UrlRefused(f"the URL's host is {reason}")
    return parts


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS[scheme]


def check_base_url(url: Any, settings: Settings) -> str:
    """The base URL in its normal form (scheme and host in lower case, the default port
    left out, the path ending in ``/``); UrlRefused otherwise."""
    parts = _split(url, settings, base=True)
    scheme, host, port = _origin(parts)
    netloc = f"[{host}]" if ":" in host else host
    if port != DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{scheme}://{netloc}{path}"


def check_callback_url(url: Any, base: str, settings: Settings) -> SplitResult:
    """``url`` checked and found under ``base`` (a normal-form base URL); UrlRefused else."""
    parts = _split(url, settings, base=False)
    base_parts = urlsplit(base)
    if _origin(parts) != _origin(base_parts):
        raise UrlRefused("the URL is not under the agreement's registered callback base URL")
    path = parts.path or "/"
    if not (path == base_parts.path.rstrip("/") or path.startswith(base_parts.path)):
        raise UrlRefused("the URL is not under the agreement's registered callback base URL")
    return parts


def _row(row: asyncpg.Record) -> Registration:
    jwk = row["public_jwk"]
    return Registration(
        row["agreement_id"],
        row["callback_base_url"],
        orjson.loads(jwk) if isinstance(jwk, str | bytes) else jwk,
        row["updated_by"],
        row["updated_at"],
    )


async def get(conn: asyncpg.Connection, agreement_id: uuid.UUID) -> Registration | None:
    row = await conn.fetchrow(
        """SELECT agreement_id, callback_base_url, public_jwk, updated_by, updated_at
             FROM dci_registrations WHERE agreement_id = $1""",
        agreement_id,
    )
    return _row(row) if row is not None else None


async def verify_message(
    conn: asyncpg.Connection,
    agreement_id: uuid.UUID,
    envelope: dict[str, Any],
    *,
    now: float | None = None,
) -> signing.Signature | None:
    """Check an incoming DCI envelope against the agreement's registered key.

    With a key registered, the envelope must carry a signature that verifies with it:
    signing.SignatureMissing (``err.signature.missing``) or signing.SignatureInvalid
    (``err.signature.invalid``) otherwise, and the parsed signature when it holds. Without a
    key (or without a registration), None: signatures are not required, and one that is
    present is not checked.
    """
    found = await get(conn, agreement_id)
    if found is None or found.public_jwk is None:
        return None
    key = signing.public_key_from_jwk(found.public_jwk)
    return signing.verify(envelope, key, now=now)


def _normal_jwk(jwk: Any) -> dict[str, str]:
    key = signing.public_key_from_jwk(jwk)
    normal = signing.public_jwk(key)
    if isinstance(jwk.get("kid"), str) and jwk["kid"]:
        normal["kid"] = jwk["kid"][:200]
    return normal


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field}: {message}", errors=[{"loc": ["body", field], "field": field, "message": message}]
    )


async def register(
    conn: asyncpg.Connection,
    settings: Settings,
    agreement_id: uuid.UUID,
    *,
    callback_base_url: Any,
    public_key: Any,
    actor: audit.Caller | None,
) -> Registration:
    """Set (replace) the agreement's registration, audited in the same transaction.

    ``actor`` is the staff member, or None for the operator's CLI. 422 (ValidationFailed)
    for a refused URL or key, 404 for no such agreement, 409 for an agreement revoked or
    expired.
    """
    try:
        base = check_base_url(callback_base_url, settings)
    except UrlRefused as exc:
        raise _invalid("callback_base_url", str(exc)) from exc
    jwk: dict[str, str] | None = None
    if public_key is not None:
        try:
            jwk = _normal_jwk(public_key)
        except ValueError as exc:
            raise _invalid("public_key", str(exc)) from exc
    async with conn.transaction():
        agreement = await conn.fetchrow(
            "SELECT status, organization_id FROM agreements WHERE id = $1 FOR UPDATE",
            agreement_id,
        )
        if agreement is None:
            raise NotFound("no such agreement")
        if agreement["status"] in ("revoked", "expired"):
            raise Conflict(f"the agreement is {agreement['status']}")
        by = actor.client_id if actor is not None and actor.client_id else OPERATOR
        row = await conn.fetchrow(
            """INSERT INTO dci_registrations
                   (agreement_id, callback_base_url, public_jwk, updated_by)
               VALUES ($1, $2, $3::jsonb, $4)
               ON CONFLICT (agreement_id) DO UPDATE
                  SET callback_base_url = EXCLUDED.callback_base_url,
                      public_jwk = EXCLUDED.public_jwk,
                      updated_by = EXCLUDED.updated_by, updated_at = now()
               RETURNING agreement_id, callback_base_url, public_jwk, updated_by, updated_at""",
            agreement_id,
            base,
            orjson.dumps(jwk).decode() if jwk is not None else None,
            by,
        )
        filters = {
            "agreement": agreement_id,
            "callback_base_url": base,
            "public_key": jwk["x"] if jwk else "none",
        }
        if actor is not None:
            await audit.append_action(conn, actor, "PUT /v1/staff/agreements/{id}/dci", filters)
        else:
            await audit.append(
                conn,
                audit.AuditRecord(
                    actor_type="operator",
                    client_id=None,
                    agreement_id=agreement_id,
                    organization_id=agreement["organization_id"],
                    endpoint="nser partners dci set",
                    filters=filters,
                    dimensions=[],
                    households=0,
                    members=0,
                ),
            )
    return _row(row)
