"""Staff members and the switches an administrator holds: create (with an enrolment link),
disable or enable the member (console and API alike), turn the member's API credentials
off or on, change roles, issue a fresh enrolment link, remove a passkey.

Each change is audited in its own transaction, naming who made it (``actor``: an admin's
session, or the operator's CLI) and where (``endpoint``). A member's own account is
guarded against the changes that would lock its administrator out by mistake: disabling
oneself, or giving up one's own admin role.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.errors import Conflict, NotFound, ValidationFailed
from app.models.requests import STAFF_ROLES
from app.services.audit import trail as audit
from app.services.audit.trail import Caller
from app.services.sharing import partners
from app.services.sharing.rules import RuleViolation
from app.services.staff import enrolment, sessions


@dataclass(frozen=True)
class Passkey:
    id: uuid.UUID
    label: str
    transports: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class Member:
    staff_id: str
    name: str
    roles: tuple[str, ...]
    created_at: datetime
    disabled_at: datetime | None  # the member: console and API
    credentials_off_at: datetime | None  # the API client's credentials only
    passkeys: int
    last_sign_in: datetime | None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    @property
    def credentials_on(self) -> bool:
        return self.credentials_off_at is None


@dataclass(frozen=True)
class NewMember:
    staff_id: str
    client_secret: str
    link: enrolment.Link


_MEMBERS = """
SELECT c.client_id, coalesce(c.name, c.client_id) AS name, c.roles, c.created_at,
       c.staff_disabled_at, c.disabled_at,
       (SELECT count(*) FROM staff_passkeys p WHERE p.staff_id = c.client_id) AS passkeys,
       (SELECT max(s.created_at) FROM staff_sessions s WHERE s.staff_id = c.client_id)
           AS last_sign_in
  FROM api_clients c
 WHERE c.kind = 'staff' {where}
 ORDER BY lower(c.name), c.client_id
"""


def _member(row: asyncpg.Record) -> Member:
    return Member(
        staff_id=row["client_id"],
        name=row["name"],
        roles=tuple(role for role in STAFF_ROLES if role in row["roles"]),
        created_at=row["created_at"],
        disabled_at=row["staff_disabled_at"],
        credentials_off_at=row["disabled_at"],
        passkeys=row["passkeys"],
        last_sign_in=row["last_sign_in"],
    )


def check_roles(roles: list[str]) -> list[str]:
    roles = list(dict.fromkeys(roles))
    unknown = [role for role in roles if role not in STAFF_ROLES]
    if unknown:
        raise ValidationFailed(
            f"unknown role {unknown[0]!r} (one of {', '.join(STAFF_ROLES)})",
            extra={"code": "role_unknown"},
        )
    if not roles:
        raise ValidationFailed(
            f"a staff member needs a role ({', '.join(STAFF_ROLES)}): its scopes are its roles'",
            extra={"code": "role_missing"},
        )
    return roles


async def list_members(conn: asyncpg.Connection) -> list[Member]:
    return [_member(row) for row in await conn.fetch(_MEMBERS.format(where=""))]


async def get(conn: asyncpg.Connection, staff_id: str) -> Member:
    row = await conn.fetchrow(_MEMBERS.format(where="AND c.client_id = $1"), staff_id)
    if row is None:
        raise NotFound(f"no staff member {staff_id}")
    return _member(row)


async def passkeys_of(conn: asyncpg.Connection, staff_id: str) -> list[Passkey]:
    rows = await conn.fetch(
        """SELECT id, label, transports, created_at, last_used_at FROM staff_passkeys
            WHERE staff_id = $1 ORDER BY created_at, id""",
        staff_id,
    )
    return [
        Passkey(r["id"], r["label"], tuple(r["transports"]), r["created_at"], r["last_used_at"])
        for r in rows
    ]


async def create(
    conn: asyncpg.Connection,
    name: str,
    roles: list[str],
    *,
    actor: Caller,
    endpoint: str,
    origin: str,
    link_hours: int,
) -> NewMember:
    """A new member with ``roles``: API credentials (the secret shown once) and a one-time
    enrolment link for a passkey."""
    roles = check_roles(roles)
    async with conn.transaction():
        try:
            made = await partners.create_staff_client(conn, name, roles)
        except RuleViolation as exc:
            raise ValidationFailed(str(exc), extra={"code": "name_missing"}) from exc
        link = await enrolment.issue(
            conn, origin, made.client_id, hours=link_hours, by=actor.client_id
        )
        await audit.append_action(
            conn, actor, endpoint, {"action": "create", "staff": made.client_id, "roles": roles}
        )
    return NewMember(made.client_id, made.client_secret, link)


async def issue_link(
    conn: asyncpg.Connection,
    staff_id: str,
    *,
    actor: Caller,
    endpoint: str,
    origin: str,
    hours: int,
) -> enrolment.Link:
    """A fresh one-time enrolment link for ``staff_id`` (earlier unused links end)."""
    async with conn.transaction():
        member = await get(conn, staff_id)
        if member.disabled:
            raise Conflict(
                f"staff member {staff_id} is disabled: enable the member first",
                extra={"code": "disabled"},
            )
        link = await enrolment.issue(conn, origin, staff_id, hours=hours, by=actor.client_id)
        await audit.append_action(
            conn,
            actor,
            endpoint,
            {"action": "enrolment_link", "staff": staff_id, "expires": link.expires_at},
        )
    return link


async def set_disabled(
    conn: asyncpg.Connection, staff_id: str, disabled: bool, *, actor: Caller, endpoint: str
) -> Member:
    """Disable (its sessions end now, its API tokens are refused) or enable a member."""
    if disabled and actor.client_id == staff_id:
        raise Conflict("you cannot disable yourself", extra={"code": "self_disable"})
    async with conn.transaction():
        before = await get(conn, staff_id)
        if before.disabled != disabled:
            await conn.execute(
                """UPDATE api_clients
                      SET staff_disabled_at = CASE WHEN $2 THEN now() END
                    WHERE client_id = $1""",
                staff_id,
                disabled,
            )
            ended = await sessions.end_all(conn, staff_id, "disabled") if disabled else 0
            await audit.append_action(
                conn,
                actor,
                endpoint,
                {
                    "action": "disable" if disabled else "enable",
                    "staff": staff_id,
                    "sessions_ended": ended,
                },
            )
        return await get(conn, staff_id)


async def set_credentials(
    conn: asyncpg.Connection, staff_id: str, on: bool, *, actor: Caller, endpoint: str
) -> Member:
    """Turn the member's API client credentials on or off (off: no token is granted and its
    tokens are refused; the console is not affected)."""
    async with conn.transaction():
        before = await get(conn, staff_id)
        if before.credentials_on != on:
            await conn.execute(
                "UPDATE api_clients SET disabled_at = CASE WHEN $2 THEN NULL ELSE now() END "
                "WHERE client_id = $1",
                staff_id,
                on,
            )
            await audit.append_action(
                conn,
                actor,
                endpoint,
                {"action": "credentials_on" if on else "credentials_off", "staff": staff_id},
            )
        return await get(conn, staff_id)


async def set_roles(
    conn: asyncpg.Connection, staff_id: str, roles: list[str], *, actor: Caller, endpoint: str
) -> Member:
    """Replace the member's roles (its scopes follow at its next request)."""
    roles = check_roles(roles)
    if actor.client_id == staff_id and "admin" not in roles:
        raise Conflict("you cannot give up your own admin role", extra={"code": "self_demote"})
    async with conn.transaction():
        before = await get(conn, staff_id)
        if set(before.roles) != set(roles):
            await conn.execute(
                "UPDATE api_clients SET roles = $2 WHERE client_id = $1", staff_id, roles
            )
            await audit.append_action(
                conn,
                actor,
                endpoint,
                {"action": "roles", "staff": staff_id, "from": before.roles, "to": roles},
            )
        return await get(conn, staff_id)


async def remove_passkey(
    conn: asyncpg.Connection,
    staff_id: str,
    passkey_id: uuid.UUID,
    *,
    actor: Caller,
    endpoint: str,
) -> None:
    """Remove one of the member's passkeys; the sessions it opened end now."""
    async with conn.transaction():
        ended = await sessions.end_all(conn, staff_id, "passkey_removed", passkey_id=passkey_id)
        label = await conn.fetchval(
            "DELETE FROM staff_passkeys WHERE id = $1 AND staff_id = $2 RETURNING label",
            passkey_id,
            staff_id,
        )
        if label is None:
            raise NotFound(f"no passkey {passkey_id} of staff member {staff_id}")
        await audit.append_action(
            conn,
            actor,
            endpoint,
            {
                "action": "remove_passkey",
                "staff": staff_id,
                "passkey": passkey_id,
                "label": label,
                "sessions_ended": ended,
            },
        )
