"""Liveness and readiness."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.deps import PoolDep, ReadsDep, SettingsDep
from app.errors import ServiceUnavailable
from app.services.registry import health as health_service

router = APIRouter(tags=["operations"])


class ReplicaStatus(BaseModel):
    name: str = Field(description="host:port/database (never the credentials)")
    state: Literal["ok", "lagging", "down", "unfit", "starting"] = Field(
        description="ok: takes reads; lagging: behind by more than NSER_READ_MAX_LAG_SECONDS; "
        "down: does not answer; unfit: not a standby, or at other migrations; starting: "
        "not checked yet"
    )
    lag_seconds: float | None = Field(
        description="How far behind the primary at the last check (null: unknown)"
    )
    detail: str | None = None


class ReadStatus(BaseModel):
    on: Literal["replicas", "primary"] = Field(
        description="Where the reads meant for replicas go now: `primary` when no replica "
        "is usable (the service still answers them)"
    )
    replicas: list[ReplicaStatus]


class Readiness(BaseModel):
    status: Literal["ready"]
    reads: ReadStatus | None = Field(
        default=None, description="Only with read replicas (NSER_READ_DATABASE_URL)"
    )


@router.get("/healthz")
async def get_health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, response_model_exclude_unset=True)
async def get_readiness(pool: PoolDep, reads: ReadsDep, settings: SettingsDep) -> dict[str, Any]:
    """The database answers and its schema is at the latest migration. With read replicas,
    also where reads go and each replica's state: a replica that is down or lagging does
    not make the service unready (the primary answers its reads)."""
    problem = await health_service.readiness_problem(pool, settings)
    if problem:
        raise ServiceUnavailable(problem)
    answer: dict[str, Any] = {"status": "ready"}
    report = reads.report()
    if report is not None:
        answer["reads"] = report
    return answer
