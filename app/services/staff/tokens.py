"""Random tokens handed to a browser (session cookies, enrolment links), kept only hashed."""

from __future__ import annotations

import hashlib
import re
import secrets

# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    """What the database keeps of a token: its SHA-256 (a stolen table opens nothing)."""
    return hashlib.sha256(token.encode("ascii")).digest()


def well_formed(token: str | None) -> bool:
    return token is not None and SHAPE.fullmatch(token) is not None
