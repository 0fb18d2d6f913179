"""Request-scoped dependencies, exposed as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import session_scope
from app.replicas import Reads
from app.settings import Settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(request.app.state.sessionmaker):
        yield session


# Async on purpose: FastAPI runs plain ``def`` dependencies in its thread pool, a thread hop
# on every request for what is an attribute read.
async def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


async def get_reads(request: Request) -> Reads:
    """The read paths' database (app/replicas.py): replicas if configured, else the pool."""
    reads: Reads = request.app.state.reads
    return reads


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SessionDep = Annotated[AsyncSession, Depends(get_session)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
ReadsDep = Annotated[Reads, Depends(get_reads)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
