"""The audit chain's keys: HMAC-SHA-256 keys that live outside the database.

``NSER_AUDIT_KEYS`` lists keys as ``ID=SECRET`` entries separated by commas. The first
entry signs new rows; every entry verifies the rows that name it. Besides them, one key is
always known: the one derived from ``NSER_KEY_ENCRYPTION_SECRET``, whose id is ``kes-``
and a fingerprint of that secret. It signs while ``NSER_AUDIT_KEYS`` is empty (so a
deployment has a keyed chain with no further setting) and keeps verifying its rows once
explicit keys take over.

Every secret is stretched the same way (HKDF-SHA-256, its own ``info``), so a derived key
can be named in ``NSER_AUDIT_KEYS`` too: after ``NSER_KEY_ENCRYPTION_SECRET`` changes, the
rows signed under the old one verify with ``kes-…=OLD_SECRET`` in the list. A ``kes-`` id
must be its secret's fingerprint, so a mislabelled entry is refused.

Rotation is a change of setting: put a new entry first (``nser audit new-key`` makes one),
keep the old ones for as long as the rows they signed are kept.

Each key also gives an Ed25519 key pair (``AuditKey.anchor_key``, derived from its HMAC key
with its own label), which signs the chain's external anchors (``anchor``): whoever holds
the audit keys can sign and check them, and the public half alone checks them too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# The key id of rows written before audit keys existed (a plain SHA-256 chain).
UNKEYED = "legacy"
DERIVED_PREFIX = "kes-"
MIN_SECRET_CHARS = 32
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_INFO = b"nser audit chain v1"
_ID_INFO = b"nser audit key id v1"
_ANCHOR_INFO = b"nser audit anchor key v1"


class InvalidAuditKeys(ValueError):
    """NSER_AUDIT_KEYS cannot be read; the message never contains a secret."""


@dataclass(frozen=True)
class AuditKey:
    id: str
    mac_key: bytes = field(repr=False)

    def mac(self, data: bytes) -> bytes:
        return hmac.new(self.mac_key, data, hashlib.sha256).digest()

    def anchor_key(self) -> Ed25519PrivateKey:
        """The Ed25519 key that signs external anchors under this key: its 32-byte seed is
        an HMAC of a fixed label under the HMAC key, so it lives wherever the key lives."""
        return Ed25519PrivateKey.from_private_bytes(self.mac(_ANCHOR_INFO))


def stretch(secret: str) -> bytes:
    """The HMAC key of a secret (any length, any characters but the list's comma)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())


def fingerprint_id(secret: str) -> str:
    """The id of the key derived from ``secret``: ``kes-`` and 12 hex digits of a MAC."""
    digest = hmac.new(stretch(secret), _ID_INFO, hashlib.sha256).hexdigest()
    return DERIVED_PREFIX + digest[:12]


@dataclass(frozen=True)
class Keyring:
    """The key that signs new rows, and every key that verifies (by id)."""

    current: AuditKey
    known: Mapping[str, AuditKey]

    def get(self, key_id: str) -> AuditKey | None:
        return self.known.get(key_id)


def parse(value: str) -> list[tuple[str, str]]:
    """``ID=SECRET[,ID=SECRET…]`` as (id, secret) pairs, in order; empty entries skipped."""
    entries: list[tuple[str, str]] = []
    for number, raw in enumerate(value.split(","), 1):
        entry = raw.strip()
        if not entry:
            continue
        key_id, eq, secret = entry.partition("=")
        key_id, secret = key_id.strip(), secret.strip()
        if not eq or not secret:
            raise InvalidAuditKeys(f"NSER_AUDIT_KEYS entry {number} is not ID=SECRET")
        if not _ID.fullmatch(key_id):
            raise InvalidAuditKeys(
                f"NSER_AUDIT_KEYS entry {number}: the id must be 1 to 32 letters, digits, "
                "'.', '_' or '-', starting with a letter or digit"
            )
        if key_id == UNKEYED:
            raise InvalidAuditKeys(
                f"NSER_AUDIT_KEYS entry {number}: {UNKEYED!r} marks the rows written before "
                "audit keys and cannot name a key"
            )
        if len(secret) < MIN_SECRET_CHARS:
            raise InvalidAuditKeys(
                f"NSER_AUDIT_KEYS entry {number} ({key_id}): the secret must be at least "
                f"{MIN_SECRET_CHARS} characters (`nser audit new-key` makes one)"
            )
        if key_id.startswith(DERIVED_PREFIX) and fingerprint_id(secret) != key_id:
            raise InvalidAuditKeys(
                f"NSER_AUDIT_KEYS entry {number} ({key_id}): a {DERIVED_PREFIX}… id names the "
                "key derived from a former NSER_KEY_ENCRYPTION_SECRET and must be that "
                "secret's fingerprint; this secret gives another"
            )
        if any(known == key_id for known, _ in entries):
            raise InvalidAuditKeys(f"NSER_AUDIT_KEYS names key {key_id!r} twice")
        entries.append((key_id, secret))
    return entries


def keyring(audit_keys: str, key_encryption_secret: str) -> Keyring:
    """The keyring of the settings' NSER_AUDIT_KEYS and NSER_KEY_ENCRYPTION_SECRET."""
    explicit = [AuditKey(key_id, stretch(secret)) for key_id, secret in parse(audit_keys)]
    derived = AuditKey(fingerprint_id(key_encryption_secret), stretch(key_encryption_secret))
    known = {key.id: key for key in explicit}
    known.setdefault(derived.id, derived)
    return Keyring(current=explicit[0] if explicit else derived, known=known)


def new_entry() -> str:
    """A fresh ``ID=SECRET`` entry: a dated id and 256 random bits, URL-safe base64."""
    return f"a{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}={secrets.token_urlsafe(32)}"
