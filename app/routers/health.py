"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import PoolDep, SettingsDep
from app.errors import ServiceUnavailable
from app.services.registry import health as health_service

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def get_health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def get_readiness(pool: PoolDep, settings: SettingsDep) -> dict[str, str]:
    """The database answers and its schema is at the latest migration."""
    problem = await health_service.readiness_problem(pool, settings)
    if problem:
        raise ServiceUnavailable(problem)
    return {"status": "ready"}
