"""Grievances about a score (migration 0010): the case and its workflow events."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamps


class Grievance(Timestamps, Base):
    """One grievance: who filed it (by CNIC, token hashed), where the household stood then,
    the re-survey it led to and the resolution."""

    __tablename__ = "grievances"
    __table_args__ = (
        CheckConstraint(
            "reason IN ('wrong_members', 'wrong_assets', 'resurvey', 'deceased_listed', 'other')",
            name="reason",
        ),
        CheckConstraint(
            "status IN ('received', 'triaged', 'resurvey_ordered', 'resolved', 'rejected')",
            name="status",
        ),
        Index("ix_grievances_status", "status", "created_at"),
        Index("ix_grievances_created", "created_at"),
        Index("ix_grievances_household", "household_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID, primary_key=True, server_default=text("gen_random_uuid()")
    )
    reference: Mapped[str] = mapped_column(String(20), nullable=False, unique=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    cnic: Mapped[str] = mapped_column(String(13), nullable=False)
    reason: Mapped[str] = mapped_column(String(16), nullable=False)
    details: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    contact_phone: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="received")
    household_id: Mapped[int | None] = mapped_column(BigInteger)
    household_version: Mapped[int | None] = mapped_column(Integer)
    history_mark: Mapped[int | None] = mapped_column(BigInteger)
    pmt_score: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    poverty_band: Mapped[str | None] = mapped_column(String(16))
    pmt_version: Mapped[str | None] = mapped_column(String(40))
    resurvey_batch_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("update_batches.id"))
    resolution: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    triaged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class GrievanceEvent(Base):
    """One step of a grievance's workflow, with the staff roles that took it."""

    __tablename__ = "grievance_events"
    __table_args__ = (Index("ix_grievance_events_grievance", "grievance_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    grievance_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("grievances.id", ondelete="CASCADE"), nullable=False
    )
    action: Mapped[str] = mapped_column(String(20), nullable=False)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16), nullable=False)
    actor_client_id: Mapped[str | None] = mapped_column(String(64))
    actor_roles: Mapped[list[str]] = mapped_column(
        ARRAY(String(16)), nullable=False, server_default=text("'{}'")
    )
    payload: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'")
    )
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
