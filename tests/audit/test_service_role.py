"""The service runs as a database role that cannot rewrite the audit log.

Migrations run as the owner (NSER_OWNER_DATABASE_URL); the service (NSER_DATABASE_URL) may
only read and append to ``audit_log``: no UPDATE, DELETE or TRUNCATE, and, not owning the
table, no ALTER (so no disabling its triggers) and no DROP. The suite's databases are set
up that way by ``tests/conftest.py``, so the app's tests run as the restricted role.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from conftest import (
    ADMIN_URL,
    _admin,
    fresh_database,
    make_settings,
    open_client,
    run_cli,
    with_user,
)
from partner_helpers import bearer, create_partner, get_token


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


class _RolledBack(Exception):
    """Raised inside a transaction so that whatever the statement did is undone."""


async def _refused(conn: asyncpg.Connection, sql: str) -> str | None:
    """The SQLSTATE with which the database refuses ``sql`` (None: it was allowed).

    Run inside a transaction that is always rolled back, so a statement that is wrongly
    allowed (a DROP, a TRUNCATE) does not spoil the module's database.
    """
    try:
        async with conn.transaction():
            await conn.execute(sql)
            raise _RolledBack
    except _RolledBack:
        return None
    except asyncpg.PostgresError as exc:
        return str(exc.sqlstate)


REWRITES = [
    "UPDATE audit_log SET households = 0",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
    "ALTER TABLE audit_log DISABLE TRIGGER USER",
    "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
    "ALTER TABLE audit_log DISABLE TRIGGER ALL",
    "DROP TRIGGER audit_log_append_only ON audit_log",
    "ALTER TABLE audit_log ADD COLUMN note text",
    "ALTER TABLE audit_log RENAME TO audit_log_old",
    "DROP TABLE audit_log",
    "CREATE RULE no_audit AS ON INSERT TO audit_log DO INSTEAD NOTHING",
    "SET session_replication_role = replica",
    "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger"
    " LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
    # Where `nser audit verify` got to: read and appended, never rewritten.
    "UPDATE audit_checkpoints SET rows = 0",
    "DELETE FROM audit_checkpoints",
    "TRUNCATE audit_checkpoints",
    "ALTER TABLE audit_checkpoints DISABLE TRIGGER USER",
    # The differencing control's hash seed: a new one would make every earlier query's
    # population look far from every new one.
    "UPDATE differencing_key SET seed = seed + 1",
    "DELETE FROM differencing_key",
    "INSERT INTO differencing_key VALUES (2, 0)",
]


@pytest.mark.parametrize("sql", REWRITES)
async def test_the_service_role_cannot_rewrite_the_audit_log(url: str, sql: str) -> None:
    service = make_settings(url).database_url  # the role the service connects as
    conn = await asyncpg.connect(service)
    try:
        assert await _refused(conn, sql) == "42501", f"the service's role may run: {sql}"
    finally:
        await conn.close()


async def test_the_service_role_cannot_grant_itself_more(url: str) -> None:
    # Not the owner, it holds no grant option: PostgreSQL warns and grants nothing.
    conn = await asyncpg.connect(make_settings(url).database_url)
    try:
        await conn.execute("GRANT UPDATE, DELETE, TRUNCATE ON audit_log TO CURRENT_USER")
        held = await conn.fetchval(
            "SELECT has_table_privilege('audit_log', 'UPDATE, DELETE, TRUNCATE, TRIGGER')"
        )
        assert held is False
    finally:
        await conn.close()


async def test_the_service_role_owns_nothing_and_is_no_superuser(url: str) -> None:
    service = make_settings(url).database_url
    conn = await asyncpg.connect(service)
    try:
        role = await conn.fetchval("SELECT current_user")
    finally:
        await conn.close()
    admin = await asyncpg.connect(url)
    try:
        flags = await admin.fetchrow(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles"
            " WHERE rolname = $1",
            role,
        )
        assert flags is not None
        assert not any(flags.values()), dict(flags)
        owned = await admin.fetchval(
            """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND pg_has_role($1, c.relowner, 'USAGE')""",
            role,
        )
        assert owned == 0
    finally:
        await admin.close()


async def test_the_service_still_appends_and_verifies(url: str) -> None:
    partner = create_partner(url, categories="iii")
    admin = await asyncpg.connect(url)
    try:
        before = await admin.fetchval("SELECT count(*) FROM audit_log")
        async for client in open_client(make_settings(url)):
            token = await get_token(client, partner["client_id"], partner["client_secret"])
            response = await client.get("/v1/partner/scores/3520212345673", headers=bearer(token))
            assert response.status_code == 404
        after = await admin.fetchval("SELECT count(*) FROM audit_log")
        assert after == before + 1
    finally:
        await admin.close()
    verified = run_cli(["audit", "verify"], url)
    assert f"audit log intact: {after} rows" in verified.stdout


async def test_a_row_injected_without_the_key_breaks_the_chain(url: str) -> None:
    """The service's role may INSERT; a row it makes up (the right predecessor in its
    chain, a plain SHA-256) is still caught, because only the audit key makes a valid row."""
    service = make_settings(url).database_url
    conn = await asyncpg.connect(service)
    try:
        last = await conn.fetchrow(
            "SELECT id, hash, key_id, chain FROM audit_log ORDER BY id DESC LIMIT 1"
        )
        assert last is not None
        forged = last["id"] + 1
        await conn.execute(
            """INSERT INTO audit_log (id, actor_type, endpoint, filters, dimensions, households,
                                      members, key_id, chain, prev_hash, hash)
               VALUES ($1, 'staff', 'GET /v1/partner/beneficiaries', '{}', '{}', 0, 0, $2, $3,
                       $4, sha256($4))""",
            forged,
            last["key_id"],
            last["chain"],
            last["hash"],
        )
    finally:
        await conn.close()
    broken = run_cli(["audit", "verify"], url, check=False)
    assert broken.returncode == 1
    assert f"row {forged}" in broken.stderr


def test_upgrade_refuses_a_service_role_that_could_rewrite_the_log() -> None:
    """Two roles, but the service's may act as the owner: `nser db upgrade` says so and
    stops, rather than leave the operator believing the log is protected."""
    member = f"nser_test_owner_member_{uuid.uuid4().hex[:8]}"
    owner = ADMIN_URL.split("//", 1)[1].split("@", 1)[0]
    asyncio.run(_admin(f'CREATE ROLE "{member}" LOGIN; GRANT "{owner}" TO "{member}"'))
    try:
        with fresh_database() as url:
            refused = run_cli(
                ["db", "upgrade"],
                url,
                check=False,
                NSER_DATABASE_URL=with_user(url, member),
                NSER_OWNER_DATABASE_URL=url,
            )
    finally:
        asyncio.run(_admin(f'DROP ROLE "{member}"'))
    assert refused.returncode == 1
    assert member in refused.stderr
    assert "audit_log" in refused.stderr
