"""The two database roles: the owner, which migrates, and the service's, which serves.

The owner (NSER_OWNER_DATABASE_URL) owns every table, so it alone may alter, drop or
truncate them, or disable their triggers; it runs ``nser db upgrade``/``downgrade`` and
``nser seed``. The service's role (NSER_DATABASE_URL) reads and writes the registry's rows
and may only read and append to ``audit_log``: a leaked service password, or an injection
into the service, cannot rewrite the audit log (and a row made up without the audit key
does not verify).

``nser db upgrade`` grants the service's role its privileges after migrating, every time,
so tables added by any migration are covered: DML on every table and view, the sequences,
and only SELECT and INSERT on ``audit_log`` and ``audit_checkpoints`` (where ``nser audit
verify`` records how far it got), only SELECT on ``alembic_version`` and
``differencing_key`` (the seed the differencing control hashes households with). It refuses a
service role that could rewrite the log anyway (a superuser, a member of the owner, a role
holding UPDATE, DELETE, TRUNCATE or TRIGGER on ``audit_log`` through another grant).

With one URL for both (NSER_OWNER_DATABASE_URL empty, or the same user) nothing is granted:
the service then runs as the owner, and only the chain's key protects the log.
"""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from app.db import asyncpg_target


class UnsafeServiceRole(RuntimeError):
    """The service's role could rewrite the audit log; the message says why."""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# Tables the service may only read and append to, and those it may only read.
APPEND_ONLY = ("audit_log", "audit_checkpoints")
READ_ONLY = ("alembic_version", "differencing_key")


def grants(role: str, *, present: Collection[str] = APPEND_ONLY + READ_ONLY) -> list[str]:
    """The statements that give the service's role exactly what it needs (``present``: the
    tables of APPEND_ONLY and READ_ONLY the schema has; a schema migrated to an earlier
    revision lacks some)."""
    r = quote_ident(role)
    statements = [
        f"GRANT USAGE ON SCHEMA public TO {r}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {r}",
    ]
    for table in READ_ONLY:
        if table in present:
            statements += [f"REVOKE ALL ON {table} FROM {r}", f"GRANT SELECT ON {table} TO {r}"]
    for table in APPEND_ONLY:
        if table in present:
            statements += [
                f"REVOKE ALL ON {table} FROM {r}",
                f"GRANT SELECT, INSERT ON {table} TO {r}",
            ]
    return statements


async def _connect(url: str) -> asyncpg.Connection:
    target = asyncpg_target(url)
    return await asyncpg.connect(dsn=target.dsn, host=target.host)


async def _could_rewrite(conn: asyncpg.Connection, role: str) -> str | None:
    row = await conn.fetchrow(
        """SELECT r.rolsuper AS superuser,
                  pg_has_role(r.rolname, c.relowner, 'USAGE') AS acts_as_owner,
                  has_table_privilege(r.rolname, c.oid,
                                      'UPDATE, DELETE, TRUNCATE, TRIGGER') AS rewrites
             FROM pg_roles r, pg_class c
            WHERE r.rolname = $1 AND c.oid = 'public.audit_log'::regclass""",
        role,
    )
    assert row is not None
    if row["superuser"]:
        return "is a superuser"
    if row["acts_as_owner"]:
        return "has the privileges of audit_log's owner (it is the owner or a member of it)"
    if row["rewrites"]:
        return "holds UPDATE, DELETE, TRUNCATE or TRIGGER on audit_log through another grant"
    return None


async def grant_service_role(owner_url: str, service_url: str) -> str | None:
    """Grant the role of ``service_url`` the service's privileges, connected as the owner;
    returns the role (None when both URLs are the same role: nothing to grant)."""
    service = await _connect(service_url)
    try:
        role: str = await service.fetchval("SELECT current_user")
    finally:
        await service.close()
    owner = await _connect(owner_url)
    try:
        if role == await owner.fetchval("SELECT current_user"):
            return None
        present = {
            table
            for table in APPEND_ONLY + READ_ONLY
            if await owner.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{table}")
        }
        audit_log = "audit_log" in present
        reason = await _could_rewrite(owner, role) if audit_log else None
        if reason is None:
            async with owner.transaction():
                for statement in grants(role, present=present):
                    await owner.execute(statement)
            if audit_log:  # what other grants may still give it
                reason = await _could_rewrite(owner, role)
        if reason is not None:
            raise UnsafeServiceRole(
                f"the service's role {role!r} (NSER_DATABASE_URL) {reason}: it could "
                "rewrite audit_log. Give the service a role of its own "
                "(docs/operations.md, Database roles)"
            )
    finally:
        await owner.close()
    return role
