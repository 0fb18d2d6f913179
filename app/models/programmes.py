"""Programmes, their versioned eligibility rules, and the agreements that name them."""

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
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamps

PROGRAMME_STATUSES = ("active", "closed")


class Programme(Timestamps, Base):
    """A programme run by an owner organization; its rule is the latest ProgrammeRule.
    Closed (``status``), partners are refused its eligibility and its list from
    ``closed_at`` on."""

    __tablename__ = "programmes"
    __table_args__ = (
        CheckConstraint("code ~ '^[a-z0-9][a-z0-9_-]{1,39}$'", name="code"),
        CheckConstraint("status IN ('active','closed')", name="status"),
        CheckConstraint(
            "(status = 'closed') = (closed_at IS NOT NULL AND closed_reason IS NOT NULL)",
            name="closed_when",
        ),
        Index("ix_programmes_organization", "organization_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID, primary_key=True, server_default=text("gen_random_uuid()")
    )
    code: Mapped[str] = mapped_column(String(40), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id"), nullable=False
    )
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    status: Mapped[str] = mapped_column(String(12), nullable=False, server_default="active")
    # Set by closing (the instant and the staff's reason), cleared by reopening.
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    closed_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class ProgrammeRule(Base):
    """One version of a programme's rule (a validated document, never edited in place)."""

    __tablename__ = "programme_rules"
    __table_args__ = (CheckConstraint("version >= 1", name="version_positive"),)

    programme_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("programmes.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    created_by: Mapped[str] = mapped_column(String(120), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class AgreementProgramme(Base):
    """An agreement names a programme: its partner may read it and its eligibility."""

    __tablename__ = "agreement_programmes"
    __table_args__ = (Index("ix_agreement_programmes_programme", "programme_id"),)

    agreement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agreements.id", ondelete="CASCADE"), primary_key=True
    )
    programme_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("programmes.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
