"""WebAuthn challenges between a ceremony's options and the browser's answer.

A challenge is 32 random bytes, stored with its purpose and what it is bound to (the
enrolment link's or the session's hash; nothing for a sign-in), and taken (deleted) by the
answer that carries it: it works once, within ``TTL``, for that purpose and binding only.
"""

from __future__ import annotations

import secrets

import asyncpg

# Longer than the ceremonies' own timeout (webauthn TIMEOUT_MS): a slow user still finishes.
TTL_SECONDS = 300


async def issue(conn: asyncpg.Connection, purpose: str, binding: bytes | None) -> bytes:
    challenge = secrets.token_bytes(32)
    # Expired challenges (ceremonies never finished) go as new ones come: the table stays
    # as small as the ceremonies under way.
    await conn.execute("DELETE FROM staff_challenges WHERE expires_at < now()")
    await conn.execute(
        """INSERT INTO staff_challenges (challenge, purpose, binding, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4))""",
        challenge,
        purpose,
        binding,
        TTL_SECONDS,
    )
    return challenge


async def take(
    conn: asyncpg.Connection, challenge: bytes, purpose: str, binding: bytes | None
) -> bool:
    """Whether ``challenge`` was issued for ``purpose`` and ``binding`` and is still live;
    used up either way."""
    row = await conn.fetchrow(
        """DELETE FROM staff_challenges WHERE challenge = $1
           RETURNING purpose, binding, expires_at > now() AS live""",
        challenge,
    )
    return (
        row is not None
        and row["live"]
        and row["purpose"] == purpose
        and (None if row["binding"] is None else bytes(row["binding"])) == binding
    )
