"""One-time enrolment links: how a staff member registers a passkey.

A link is ``{NSER_STAFF_ORIGIN}/staff/enrol#{token}``: the token (32 random bytes) rides in
the address's fragment, which the browser never sends, so it reaches no access log, proxy
or Referer; the page's script posts it. The table keeps only the token's SHA-256, the
member, who issued it and when, its expiry (``NSER_STAFF_ENROL_LINK_HOURS``) and when it was
used. A link works once; issuing a new one ends the member's unused ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.errors import Forbidden, Gone, NotFound
from app.services.staff import tokens

PATH = "/staff/enrol"


@dataclass(frozen=True)
class Link:
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class LiveLink:
    token_hash: bytes
    staff_id: str
    name: str


def url(origin: str, token: str) -> str:
    return f"{origin}{PATH}#{token}"


async def issue(
    conn: asyncpg.Connection, origin: str, staff_id: str, *, hours: int, by: str | None
) -> Link:
    """A fresh link for ``staff_id`` (the member's unused links stop working)."""
    token = tokens.new_token()
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM staff_enrolment_links WHERE staff_id = $1 AND used_at IS NULL",
            staff_id,
        )
        expires_at: datetime = await conn.fetchval(
            """INSERT INTO staff_enrolment_links (token_hash, staff_id, created_by, expires_at)
               VALUES ($1, $2, $3, now() + make_interval(hours => $4)) RETURNING expires_at""",
            tokens.digest(token),
            staff_id,
            by,
            hours,
        )
    return Link(url(origin, token), expires_at)


async def live(conn: asyncpg.Connection, token: str | None, *, lock: bool = False) -> LiveLink:
    """The link behind ``token`` if it can still be used: 404 for an unknown token, 410 for
    a used or expired one, 403 when its member is disabled. ``lock`` holds the row until the
    transaction ends (the registration that uses it)."""
    if not tokens.well_formed(token):
        raise NotFound("this enrolment link is not valid", extra={"code": "link_unknown"})
    assert token is not None
    row = await conn.fetchrow(
        f"""SELECT l.token_hash, l.staff_id, l.used_at, l.expires_at <= now() AS expired,
                   coalesce(c.name, c.client_id) AS name, c.staff_disabled_at
              FROM staff_enrolment_links l JOIN api_clients c ON c.client_id = l.staff_id
             WHERE l.token_hash = $1 {"FOR UPDATE OF l" if lock else ""}""",
        tokens.digest(token),
    )
    if row is None:
        raise NotFound("this enrolment link is not valid", extra={"code": "link_unknown"})
    if row["used_at"] is not None:
        raise Gone("this enrolment link has been used already", extra={"code": "link_used"})
    if row["expired"]:
        raise Gone("this enrolment link has expired", extra={"code": "link_expired"})
    if row["staff_disabled_at"] is not None:
        raise Forbidden("this staff member is disabled", extra={"code": "disabled"})
    return LiveLink(bytes(row["token_hash"]), row["staff_id"], row["name"])


async def use(conn: asyncpg.Connection, link: LiveLink) -> None:
    await conn.execute(
        "UPDATE staff_enrolment_links SET used_at = now() WHERE token_hash = $1",
        link.token_hash,
    )
