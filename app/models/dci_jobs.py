"""The asynchronous DCI requests accepted and not yet answered (migration 0026,
app.services.dci.jobs)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

JOB_KINDS = ("search", "txn-status")
JOB_STATES = ("pending", "done", "failed")


class DciJob(Base):
    """One asynchronous DCI request: accepted (acknowledged), claimed by a worker with a
    lease, run, and answered by a callback stored in the same transaction as ``done``."""

    __tablename__ = "dci_jobs"
    __table_args__ = (
        CheckConstraint("kind IN ('search','txn-status')", name="kind"),
        CheckConstraint("state IN ('pending','done','failed')", name="state"),
        CheckConstraint("octet_length(digest) = 32", name="digest"),
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint("length(callback_url) <= 2000", name="callback_url"),
        CheckConstraint("length(last_error) <= 300", name="last_error"),
        CheckConstraint(
            "(state = 'pending') = (request IS NOT NULL) "
            "AND (state = 'pending') = (done_at IS NULL)",
            name="pending",
        ),
        UniqueConstraint("client_id", "message_id", name="uq_dci_jobs_client_id"),
        UniqueConstraint("correlation_id", name="uq_dci_jobs_correlation_id"),
        Index(
            "ix_dci_jobs_due", "next_attempt_at", "id", postgresql_where=text("state = 'pending'")
        ),
        Index("ix_dci_jobs_done", "done_at", postgresql_where=text("state <> 'pending'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("api_clients.client_id", ondelete="CASCADE"), nullable=False
    )
    agreement_id: Mapped[uuid.UUID] = mapped_column(UUID, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    # The sender's header.message_id: one job per client and message.
    message_id: Mapped[str] = mapped_column(String(99), nullable=False)
    # SHA-256 of the message's canonical JSON: a repetition, or another message?
    digest: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    transaction_id: Mapped[str] = mapped_column(String(99), nullable=False)
    correlation_id: Mapped[str] = mapped_column(String(99), nullable=False)
    callback_url: Mapped[str] = mapped_column(Text, nullable=False)
    # The token's scopes when the request was accepted (the agreement's are re-read at run).
    scopes: Mapped[str] = mapped_column(Text, nullable=False)
    # The JSON of {"header": ..., "message": ...} while pending (bytes: NUL may be in it);
    # cleared once done (it may hold CNICs).
    request: Mapped[bytes | None] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(8), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The callback (dci_callbacks.id) that carries the answer.
    callback_id: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
