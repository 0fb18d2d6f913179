"""Update batches sent back by partners (§5.2) and each record's outcome."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class UpdateBatch(Base):
    """The raw batch, committed before 202; processing is a durable queue over this table."""

    __tablename__ = "update_batches"
    __table_args__ = (
        UniqueConstraint("client_id", "idempotency_key", name="uq_update_batches_client_key"),
        CheckConstraint("status IN ('received','processing','done')", name="status"),
        # A partner's batch names its agreement; a staff batch (a grievance's re-survey) none.
        CheckConstraint(
            "source = 'staff' OR (source = 'partner' AND agreement_id IS NOT NULL"
            " AND organization_id IS NOT NULL)",
            name="source",
        ),
        Index(
            "ix_update_batches_queue",
            "status",
            "received_at",
            postgresql_where=text("status <> 'done'"),
        ),
        # The hourly record budget per agreement (NSER_UPDATES_RECORDS_PER_HOUR).
        Index("ix_update_batches_agreement_received", "agreement_id", "received_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID, primary_key=True, server_default=text("gen_random_uuid()")
    )
    client_id: Mapped[str] = mapped_column(String(64), nullable=False)
    source: Mapped[str] = mapped_column(String(8), nullable=False, server_default="partner")
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agreements.id"))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False)
    body_sha256: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    dry_run: Mapped[bool] = mapped_column(Boolean, nullable=False)
    record_count: Mapped[int] = mapped_column(Integer, nullable=False)
    update_kinds: Mapped[list[str]] = mapped_column(ARRAY(String(32)), nullable=False)
    status: Mapped[str] = mapped_column(String(12), nullable=False, server_default="received")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when the batch's agreement stopped (suspended, revoked, expired) before it ran.
    stopped_reason: Mapped[str | None] = mapped_column(Text)


class UpdateRecordResult(Base):
    """Exactly one outcome per record of a batch (the unique key makes re-runs safe)."""

    __tablename__ = "update_results"
    __table_args__ = (
        UniqueConstraint("batch_id", "position", name="uq_update_results_batch_position"),
        CheckConstraint("outcome IN ('applied','rejected','conflict','unchanged')", name="outcome"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("update_batches.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    ref: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(12), nullable=False)
    reasons: Mapped[list[str]] = mapped_column(
        ARRAY(String), nullable=False, server_default=text("'{}'")
    )
    household_id: Mapped[int | None] = mapped_column(BigInteger)
    member_id: Mapped[int | None] = mapped_column(BigInteger)
    # The registry already held what the record said (the partner may have been told
    # "applied": see app.services.ingest.apply.partner_view).
    unchanged: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
