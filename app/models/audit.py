"""The audit trail: append-only, hash-chained (each row carries the hash of its chain's
previous row; the log is several independent chains), keyed (each row names the audit key
of its HMAC); and the checkpoints of its verification."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_client_at", "client_id", "at"),
        Index("ix_audit_log_chain", "chain", "id"),
        # The audit search (app.services.audit.search): one key, newest first.
        Index(
            "ix_audit_log_organization_at",
            "organization_id",
            "at",
            "id",
            postgresql_where=text("organization_id IS NOT NULL"),
        ),
        Index(
            "ix_audit_log_agreement_at",
            "agreement_id",
            "at",
            "id",
            postgresql_where=text("agreement_id IS NOT NULL"),
        ),
        Index(
            "ix_audit_log_household_at",
            text("(filters ->> 'household_id')"),
            "at",
            "id",
            postgresql_where=text("(filters ->> 'household_id') IS NOT NULL"),
        ),
        CheckConstraint("chain BETWEEN 0 AND 255", name="chain"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    actor_type: Mapped[str] = mapped_column(String(16), nullable=False)  # partner, staff, ...
    client_id: Mapped[str | None] = mapped_column(String(64))
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    organization_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    endpoint: Mapped[str] = mapped_column(String(200), nullable=False)
    filters: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    dimensions: Mapped[list[str]] = mapped_column(ARRAY(String(32)), nullable=False)
    households: Mapped[int] = mapped_column(Integer, nullable=False)
    members: Mapped[int] = mapped_column(Integer, nullable=False)
    request_id: Mapped[str | None] = mapped_column(String(64))
    # The audit key that signed the row ('legacy': written before audit keys, plain SHA-256).
    key_id: Mapped[str] = mapped_column(String(32), nullable=False)
    # The chain the row belongs to (0 for every row written before there were several).
    chain: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class AuditCheckpoint(Base):
    """Where a successful ``nser audit verify`` got to: the last row it verified, that row's
    hash, the rows verified from the start (in all, per key), each chain's last row
    (``heads``; NULL in checkpoints made when there was one chain), when, whether it walked
    from the start; sealed with an audit key (``mac``, the key named). Append-only."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    rows: Mapped[int] = mapped_column(BigInteger, nullable=False)
    rows_per_key: Mapped[dict[str, int]] = mapped_column(JSONB, nullable=False)
    full: Mapped[bool] = mapped_column(Boolean, nullable=False)
    key_id: Mapped[str] = mapped_column(String(32), nullable=False)
    # {"chain": [last id, last hash (hex), rows of the chain]}.
    heads: Mapped[dict[str, list[object]] | None] = mapped_column(JSONB)
    mac: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
