"""DCI message signatures: Ed25519 over the envelope's ``header`` and ``message``.

The spec (``MsgSignature``) signs "{header}+{message}" and gives the signature the form of
an HTTP signature (``namespace``, ``kidId``, ``algorithm="ed25519"``, ``created``,
``expires``, ``headers="(created) (expires) digest"``, ``signature``). NSER fixes what the
spec leaves open as follows (docs/api.md, "DCI signatures", says the same for partners):

1. The signed content is ``JCS(header) || JCS(message)``: each object canonicalised by RFC
   8785 (JSON Canonicalization Scheme: keys sorted by UTF-16 code units, no whitespace,
   ECMAScript number forms, minimal string escapes), UTF-8, the two byte strings
   concatenated with nothing between them.
2. ``digest = "BLAKE-512=" + base64(BLAKE2b-512(content))`` (standard base64, padded).
3. The signing string is three lines joined by ``\\n`` (no final newline)::

       (created): <created>
       (expires): <expires>
       digest: <digest>

   with ``created`` and ``expires`` in whole seconds since the Unix epoch.
4. ``signature = base64(Ed25519(private key, signing string))`` (64 bytes, standard base64).
5. The envelope's ``signature`` is the string::

       Signature: namespace="dci", kidId="<sender_id>|<kid>|ed25519", algorithm="ed25519",
       created="<created>", expires="<expires>", headers="(created) (expires) digest",
       signature="<signature>"

   (on one line; parameters separated by ``", "``). ``keyId`` is accepted for ``kidId``.

:func:`verify` checks an envelope against one public key (the agreement's); it raises
:class:`SignatureMissing` (``err.signature.missing``) or :class:`SignatureInvalid`
(``err.signature.invalid``). :func:`sign` makes the signature; NSER's own keys live in
``dci_signing_keys`` (the private half encrypted like the JWT signing keys', under
NSER_KEY_ENCRYPTION_SECRET) and are published in the JWKS with ``use: "sig"``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.auth import keys
from app.auth.keys import decrypt_private_key, encrypt_private_key
from app.settings import Settings

ALGORITHM = "ed25519"
NAMESPACE = "dci"
HEADERS = "(created) (expires) digest"
DIGEST_PREFIX = "BLAKE-512="
# A signature made up to this long in the future (clock skew), or expired this long ago,
# still verifies.
CLOCK_SKEW_SECONDS = 60
# A key rotated out stays in the JWKS this long: longer than any signature it made lives.
ROTATION_GRACE = timedelta(days=1)
_ADVISORY_LOCK = 0x6E736572_646369  # "nserdci"
_PARAM = re.compile(r'\s*([A-Za-z]+)="([^"]*)"\s*')
_KNOWN = {"namespace", "kidId", "keyId", "algorithm", "created", "expires", "headers", "signature"}


class SignatureError(Exception):
    """A DCI signature that does not hold; ``code`` is the spec's error code."""

    code = "err.signature.invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SignatureMissing(SignatureError):
    """The envelope carries no signature, but the sender registered a key."""

    code = "err.signature.missing"


class SignatureInvalid(SignatureError):
    """The signature is malformed, expired, for other content, or not by the key."""

    code = "err.signature.invalid"


@dataclass(frozen=True)
class Signature:
    """A parsed signature string."""

    key_id: str
    created: int
    expires: int
    value: bytes
    namespace: str | None = None

    @property
    def kid(self) -> str:
        """The key's own id: the middle part of ``sender_id|kid|algorithm``."""
        parts = self.key_id.split("|")
        return parts[1] if len(parts) == 3 else self.key_id


def canonical(header: Any, message: Any) -> bytes:
    """``JCS(header) || JCS(message)``: the bytes the signature covers.

    Raises ``ValueError`` for what JSON cannot carry exactly (integers beyond ±(2**53-1),
    non-finite numbers, non-string keys).
    """
    try:
        return rfc8785.dumps(header) + rfc8785.dumps(message)
    except (rfc8785.CanonicalizationError, TypeError) as exc:
        raise ValueError(f"not canonicalisable JSON: {exc}") from exc


def digest(content: bytes) -> str:
    hashed = hashlib.blake2b(content, digest_size=64).digest()
    return DIGEST_PREFIX + base64.b64encode(hashed).decode()


def signing_string(created: int, expires: int, content_digest: str) -> bytes:
    return f"(created): {created}\n(expires): {expires}\ndigest: {content_digest}".encode()


def _parts(envelope: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    header, message = envelope.get("header"), envelope.get("message")
    if not isinstance(header, dict) or not isinstance(message, dict):
        raise SignatureInvalid("a signed envelope has a header and a message, both objects")
    return header, message


def sign(
    envelope: dict[str, Any],
    private_key: Ed25519PrivateKey,
    *,
    key_id: str,
    ttl_seconds: int = 300,
    now: float | None = None,
) -> str:
    """The ``signature`` string of ``envelope`` (its header and message) by ``private_key``;
    ``key_id`` is the spec's ``kidId`` (``sender_id|kid|ed25519``)."""
    header, message = _parts(envelope)
    created = int(time.time() if now is None else now)
    expires = created + ttl_seconds
    content_digest = digest(canonical(header, message))
    value = private_key.sign(signing_string(created, expires, content_digest))
    return (
        f'Signature: namespace="{NAMESPACE}", kidId="{key_id}", algorithm="{ALGORITHM}", '
        f'created="{created}", expires="{expires}", headers="{HEADERS}", '
        f'signature="{base64.b64encode(value).decode()}"'
    )


def parse(text: str) -> Signature:
    """The parameters of a signature string; SignatureInvalid when it is not one."""
    body = text.strip()
    if body[:10].lower() == "signature:":
        body = body[10:]
    params: dict[str, str] = {}
    for item in body.split(","):
        match = _PARAM.fullmatch(item)
        if match is None or match.group(1) not in _KNOWN or match.group(1) in params:
            raise SignatureInvalid(
                'the signature is not a list of key="value" parameters (namespace, kidId, '
                "algorithm, created, expires, headers, signature), each once"
            )
        params[match.group(1)] = match.group(2)
    if "kidId" in params and "keyId" in params:
        raise SignatureInvalid("the signature names its key twice (kidId and keyId)")
    key_id = params.get("kidId", params.get("keyId"))
    missing = [
        name
        for name, value in (
            ("kidId", key_id),
            ("algorithm", params.get("algorithm")),
            ("created", params.get("created")),
            ("expires", params.get("expires")),
            ("headers", params.get("headers")),
            ("signature", params.get("signature")),
        )
        if not value
    ]
    if missing:
        raise SignatureInvalid(f"the signature lacks {', '.join(missing)}")
    assert key_id is not None
    if params["algorithm"].lower() != ALGORITHM:
        raise SignatureInvalid(f'the signature\'s algorithm must be "{ALGORITHM}"')
    if " ".join(params["headers"].split()) != HEADERS:
        raise SignatureInvalid(f'the signature\'s headers must be "{HEADERS}"')
    try:
        created, expires = int(params["created"]), int(params["expires"])
    except ValueError as exc:
        raise SignatureInvalid("created and expires are whole seconds since 1970") from exc
    try:
        value = base64.b64decode(params["signature"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid("the signature value is not base64") from exc
    if len(value) != 64:
        raise SignatureInvalid("an Ed25519 signature is 64 bytes")
    return Signature(key_id, created, expires, value, params.get("namespace"))


def verify(
    envelope: dict[str, Any], public_key: Ed25519PublicKey, *, now: float | None = None
) -> Signature:
    """Check the envelope's ``signature`` over its header and message with ``public_key``.

    Raises SignatureMissing when there is none, SignatureInvalid when it is malformed, not
    yet valid or expired (beyond CLOCK_SKEW_SECONDS), or does not verify. Returns the
    parsed signature.
    """
    text = envelope.get("signature")
    if text is None or text == "":
        raise SignatureMissing("the message must be signed: the sender registered a key")
    if not isinstance(text, str):
        raise SignatureInvalid("the signature is a string")
    sig = parse(text)
    header, message = _parts(envelope)
    moment = time.time() if now is None else now
    if sig.expires <= sig.created:
        raise SignatureInvalid("the signature expires before it was created")
    if sig.created > moment + CLOCK_SKEW_SECONDS:
        raise SignatureInvalid("the signature was created in the future")
    if sig.expires < moment - CLOCK_SKEW_SECONDS:
        raise SignatureInvalid("the signature has expired")
    try:
        content = canonical(header, message)
    except ValueError as exc:
        raise SignatureInvalid(str(exc)) from exc
    try:
        public_key.verify(sig.value, signing_string(sig.created, sig.expires, digest(content)))
    except InvalidSignature as exc:
        raise SignatureInvalid("the signature does not verify with the sender's key") from exc
    return sig


# --- keys as JWKs --------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("x must be base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("x must be base64url without padding") from exc


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}


def public_key_from_jwk(jwk: Any) -> Ed25519PublicKey:
    """The Ed25519 public key of a JWK (RFC 8037: kty OKP, crv Ed25519, x); ValueError with
    the reason otherwise. A private JWK (with ``d``) is refused: send only the public half."""
    if not isinstance(jwk, dict):
        raise ValueError("the key is a JWK object")
    extra = set(jwk) - {"kty", "crv", "x", "kid", "use", "alg", "key_ops"}
    if "d" in jwk:
        raise ValueError("the key holds a private part (d): register only the public key")
    if extra:
        raise ValueError(f"the JWK has unknown members: {', '.join(sorted(extra))}")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError('the key must be a JWK with "kty": "OKP" and "crv": "Ed25519"')
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", "EdDSA") not in ("EdDSA", "Ed25519"):
        raise ValueError('the key is for signatures ("use": "sig", "alg": "EdDSA")')
    x = jwk.get("x")
    if not isinstance(x, str):
        raise ValueError("the JWK's x is a base64url string")
    raw = _unb64url(x)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key (x) is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


# --- NSER's own keys ---------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey


def generate_key() -> tuple[str, bytes, dict[str, str]]:
    """A new key: (kid, private PEM, public JWK with kid, alg and use)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    kid = f"dci-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(6)}"
    jwk = public_jwk(private.public_key()) | {"kid": kid, "alg": "EdDSA", "use": "sig"}
    return kid, pem, jwk


async def _insert_current(conn: asyncpg.Connection, settings: Settings) -> str:
    kid, pem, jwk = generate_key()
    await conn.execute(
        """INSERT INTO dci_signing_keys (kid, public_jwk, private_key_encrypted, is_current)
           VALUES ($1, $2::jsonb, $3, true)""",
        kid,
        orjson.dumps(jwk).decode(),
        encrypt_private_key(settings, kid, pem),
    )
    return kid


async def ensure_current_key(conn: asyncpg.Connection, settings: Settings) -> str:
    """The current DCI key's kid, making the first key when there is none."""
    return await keys.ensure_current(
        conn, "dci_signing_keys", _ADVISORY_LOCK, lambda: _insert_current(conn, settings)
    )


async def rotate(conn: asyncpg.Connection, settings: Settings) -> tuple[str, str | None]:
    """A new current DCI key; the previous one stays published for ROTATION_GRACE."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _ADVISORY_LOCK)
        old: str | None = await conn.fetchval(
            """UPDATE dci_signing_keys
                  SET is_current = false, retired_at = now(), verify_until = now() + $1
                WHERE is_current RETURNING kid""",
            ROTATION_GRACE,
        )
        new = await _insert_current(conn, settings)
    return new, old


async def published_keys(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Public JWKs of the current DCI key and of those rotated out but still verifying."""
    rows = await conn.fetch(
        """SELECT public_jwk FROM dci_signing_keys
            WHERE is_current OR verify_until > now()
            ORDER BY is_current DESC, created_at DESC"""
    )
    return [orjson.loads(row["public_jwk"]) for row in rows]


class Signer:
    """Signs with the current DCI key (read on each call, so a rotation by the CLI takes
    effect at once); decrypted private keys are kept per process."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._keys: dict[str, SigningKey] = {}

    async def current(self, conn: asyncpg.Connection) -> SigningKey:
        kid = await ensure_current_key(conn, self._settings)
        key = self._keys.get(kid)
        if key is None:
            blob = await conn.fetchval(
                "SELECT private_key_encrypted FROM dci_signing_keys WHERE kid = $1", kid
            )
            pem = decrypt_private_key(self._settings, kid, blob)
            private = serialization.load_pem_private_key(pem.encode(), password=None)
            assert isinstance(private, Ed25519PrivateKey)
            key = self._keys[kid] = SigningKey(kid, private)
        return key

    def sign(self, key: SigningKey, envelope: dict[str, Any], *, now: float | None = None) -> str:
        return sign(
            envelope,
            key.private_key,
            key_id=f"{self._settings.dci_sender_id}|{key.kid}|{ALGORITHM}",
            ttl_seconds=self._settings.dci_signature_ttl_seconds,
            now=now,
        )
