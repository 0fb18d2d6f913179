"""JWT signing keys: generated here, kept in ``signing_keys`` with the private half
encrypted (AES-256-GCM under a key derived from NSER_KEY_ENCRYPTION_SECRET), cached in
process, rotated by ``nser keys rotate``."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jose import jwk

from app.settings import Settings

# How long a rotated-out key keeps verifying beyond the longest token it may have signed.
ROTATION_GRACE = timedelta(seconds=60)
_ADVISORY_LOCK = 0x6E736572_6B6579  # "nserkey"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private_pem: str


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    algorithm: str
    public_jwk: dict[str, Any]
    verify_until: datetime | None


def _aead(settings: Settings) -> AESGCM:
    secret = settings.key_encryption_secret.get_secret_value().encode()
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"nser signing keys v1"
    ).derive(secret)
    return AESGCM(key)


def encrypt_private_key(settings: Settings, kid: str, pem: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + _aead(settings).encrypt(nonce, pem, kid.encode())


def decrypt_private_key(settings: Settings, kid: str, blob: bytes) -> str:
    return _aead(settings).decrypt(blob[:12], blob[12:], kid.encode()).decode()


def generate_key(algorithm: str) -> tuple[str, bytes, dict[str, Any]]:
    """A new key pair: (kid, private PEM, public JWK with kid/alg/use)."""
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(f"unsupported signing algorithm {algorithm!r}")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    kid = f"{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(6)}"
    public = jwk.construct(pem.decode(), algorithm).public_key().to_dict()
    public.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return kid, pem, public


async def _insert_current(conn: asyncpg.Connection, settings: Settings) -> str:
    kid, pem, public = generate_key(settings.jwt_algorithm)
    await conn.execute(
        """INSERT INTO signing_keys (kid, algorithm, public_jwk, private_key_encrypted,
                                      is_current)
           VALUES ($1, $2, $3::jsonb, $4, true)""",
        kid,
        settings.jwt_algorithm,
        orjson.dumps(public).decode(),
        encrypt_private_key(settings, kid, pem),
    )
    return kid


async def ensure_current(
    conn: asyncpg.Connection,
    table: Literal["signing_keys", "dci_signing_keys"],
    lock: int,
    make: Callable[[], Awaitable[str]],
) -> str:
    """The current key's kid in ``table`` (a key table with ``kid`` and ``is_current``),
    made by ``make`` when there is none: under the advisory ``lock``, so processes that
    start together make one key between them."""
    current = f"SELECT kid FROM {table} WHERE is_current"  # noqa: S608 (one of two names)
    kid: str | None = await conn.fetchval(current)
    if kid is not None:
        return kid
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
        kid = await conn.fetchval(current)
        if kid is None:
            kid = await make()
    return kid


async def ensure_current_key(conn: asyncpg.Connection, settings: Settings) -> str:
    """The current key's kid, creating the first key if there is none."""
    return await ensure_current(
        conn, "signing_keys", _ADVISORY_LOCK, lambda: _insert_current(conn, settings)
    )


async def rotate(conn: asyncpg.Connection, settings: Settings) -> tuple[str, str | None]:
    """Make a new current key; the previous one verifies until its last token expires."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _ADVISORY_LOCK)
        until = datetime.now(UTC) + timedelta(seconds=settings.token_ttl_seconds) + ROTATION_GRACE
        old: str | None = await conn.fetchval(
            """UPDATE signing_keys SET is_current = false, retired_at = now(), verify_until = $1
                WHERE is_current RETURNING kid""",
            until,
        )
        new = await _insert_current(conn, settings)
    return new, old


async def published_keys(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Public JWKs of the current key and of retired keys still verifying."""
    rows = await conn.fetch(
        """SELECT public_jwk FROM signing_keys
            WHERE is_current OR verify_until > now()
            ORDER BY is_current DESC, created_at DESC"""
    )
    return [orjson.loads(row["public_jwk"]) for row in rows]


class KeyStore:
    """Per-process cache of verification keys, refreshed every ``refresh_seconds``.

    A kid the cache has not seen is looked up by primary key at once: a key rotated in by
    another process (the CLI, another worker) verifies from its first token. The look-up is
    one indexed read, no more than the agreement check every request makes anyway.
    """

    refresh_seconds = 30.0

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._verify: dict[str, VerificationKey] = {}
        self._private: dict[str, SigningKey] = {}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    @staticmethod
    def _key(row: asyncpg.Record) -> VerificationKey:
        return VerificationKey(
            kid=row["kid"],
            algorithm=row["algorithm"],
            public_jwk=orjson.loads(row["public_jwk"]),
            verify_until=None if row["is_current"] else row["verify_until"],
        )

    async def _reload(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            "SELECT kid, algorithm, public_jwk, verify_until, is_current FROM signing_keys"
        )
        self._verify = {row["kid"]: self._key(row) for row in rows}
        self._loaded_at = time.monotonic()

    async def verification_key(self, pool: asyncpg.Pool, kid: str) -> VerificationKey | None:
        if time.monotonic() - self._loaded_at > self.refresh_seconds:
            async with self._lock:
                if time.monotonic() - self._loaded_at > self.refresh_seconds:
                    async with pool.acquire() as conn:
                        await self._reload(conn)
        key = self._verify.get(kid)
        if key is None:
            row = await pool.fetchrow(
                "SELECT kid, algorithm, public_jwk, verify_until, is_current"
                " FROM signing_keys WHERE kid = $1",
                kid,
            )
            if row is not None:
                key = self._verify[kid] = self._key(row)
        return key

    async def signing_key(self, pool: asyncpg.Pool) -> SigningKey:
        """The current key, read each time (a rotation by the CLI takes effect at once)."""
        async with pool.acquire() as conn:
            kid = await ensure_current_key(conn, self._settings)
            if kid not in self._private:
                row = await conn.fetchrow(
                    "SELECT algorithm, private_key_encrypted FROM signing_keys WHERE kid = $1",
                    kid,
                )
                assert row is not None
                pem = decrypt_private_key(self._settings, kid, row["private_key_encrypted"])
                self._private[kid] = SigningKey(
                    kid=kid, algorithm=row["algorithm"], private_pem=pem
                )
        return self._private[kid]
