"""What-if targeting simulations (migration 0011): a queue the worker drains, and results;
how far a running one has got (migration 0025)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class Simulation(Base):
    """A simulation request, claimed by a worker, with its stored result."""

    __tablename__ = "simulations"
    __table_args__ = (
        CheckConstraint("status IN ('pending','running','done','failed')", name="status"),
        CheckConstraint("(status = 'done') = (result IS NOT NULL)", name="result_when_done"),
        Index(
            "ix_simulations_queue",
            "created_at",
            postgresql_where=text("status IN ('pending','running')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID, primary_key=True, server_default=text("gen_random_uuid()")
    )
    status: Mapped[str] = mapped_column(String(8), nullable=False, server_default="pending")
    request: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    requested_by: Mapped[str] = mapped_column(String(64), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)


class SimulationProgress(Base):
    """How far a running simulation has got, written by the worker outside the run's
    transaction (which holds the simulation's row locked)."""

    __tablename__ = "simulation_progress"
    __table_args__ = (
        CheckConstraint("ranges_done >= 0", name="ranges_done"),
        CheckConstraint("ranges > 0 AND ranges_done <= ranges", name="ranges"),
    )

    simulation_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("simulations.id", ondelete="CASCADE"), primary_key=True
    )
    ranges_done: Mapped[int] = mapped_column(Integer, nullable=False)
    ranges: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
