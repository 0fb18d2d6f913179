"""Data-sharing requests, their timeline, the obligations of agreements, and spot checks."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
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

REQUEST_STATES = (
    "submitted",
    "under_review",
    "reviewed",
    "interviewed",
    "recommended",
    "not_recommended",
    "approved",
    "rejected",
    "active",
    "expired",
    "suspended",
    "revoked",
    "withdrawn",
)
STAFF_ROLES = ("officer", "committee", "secretary", "me", "admin")
OBLIGATION_KINDS = ("findings", "updates")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class DataRequest(Timestamps, Base):
    """One application for data (Annex I): the form as sent, and what staff decided on it."""

    __tablename__ = "data_requests"
    __table_args__ = (
        CheckConstraint(_in("status", REQUEST_STATES), name="status"),
        Index("ix_data_requests_status", "status", "created_at"),
        # The staff's queues: per state, the requests that have waited longest first.
        Index("ix_data_requests_waiting", "status", "updated_at", "id"),
        Index("ix_data_requests_org_key", "organization_key"),
    )
    # ``updated_at`` is when the request entered its current status: only a status change
    # sets it (with the timeline's event, in the same transaction), so a request's waiting
    # time in the staff's queues is read from it.

    id: Mapped[uuid.UUID] = mapped_column(
        UUID, primary_key=True, server_default=text("gen_random_uuid()")
    )
    reference: Mapped[str] = mapped_column(String(20), nullable=False, unique=True)
    # SHA-256 of the status-link token; the token itself is shown once, in the 201.
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="submitted")
    # The organization as the form names it (lower-cased name and type): how the registry
    # recognizes an organization it already knows, to fill in its previous requests.
    organization_key: Mapped[str] = mapped_column(String(240), nullable=False)
    organization_type: Mapped[str] = mapped_column(String(20), nullable=False)
    form: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    previous_requests: Mapped[list[dict[str, object]]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'")
    )
    # Filled as the request moves: the officer's review (category, dimensions, geography,
    # clearance, conditions, validity), B at review, the interview, the committee's
    # recommendation, the Secretary's decision, and the quote frozen at approval.
    review: Mapped[dict[str, object] | None] = mapped_column(JSONB)
    households: Mapped[int | None] = mapped_column(BigInteger)
    interview: Mapped[dict[str, object] | None] = mapped_column(JSONB)
    recommendation: Mapped[dict[str, object] | None] = mapped_column(JSONB)
    decision: Mapped[dict[str, object] | None] = mapped_column(JSONB)
    quote: Mapped[dict[str, object] | None] = mapped_column(JSONB)
    quoted_amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 2))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organizations.id"))
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agreements.id"))


class RequestEvent(Base):
    """One transition of a request: who (client and roles), when, from and to, and with what."""

    __tablename__ = "request_events"
    __table_args__ = (Index("ix_request_events_request", "request_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("data_requests.id"), nullable=False)
    action: Mapped[str] = mapped_column(String(24), nullable=False)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16), nullable=False)
    # NULL for the requester (the status-link token) and for the system (expiry).
    actor_client_id: Mapped[str | None] = mapped_column(String(64))
    actor_roles: Mapped[list[str]] = mapped_column(
        ARRAY(String(16)), nullable=False, server_default=text("'{}'")
    )
    payload: Mapped[dict[str, object]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'")
    )
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class Obligation(Timestamps, Base):
    """What a partner owes back: findings of gratis research, or updates at a frequency."""

    __tablename__ = "obligations"
    __table_args__ = (
        CheckConstraint(_in("kind", OBLIGATION_KINDS), name="kind"),
        CheckConstraint("status IN ('open', 'met')", name="status"),
        Index("ix_obligations_status_due", "status", "due_on"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID, primary_key=True, server_default=text("gen_random_uuid()")
    )
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("data_requests.id"), nullable=False)
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agreements.id"))
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    due_on: Mapped[date] = mapped_column(Date, nullable=False)
    status: Mapped[str] = mapped_column(String(8), nullable=False, server_default="open")
    met_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deliverable: Mapped[str | None] = mapped_column(Text)
    met_by: Mapped[str | None] = mapped_column(String(64))


class SpotCheck(Base):
    """A monitoring visit or review of a partner (§4.1.7, §6.4) and what it led to."""

    __tablename__ = "spot_checks"
    __table_args__ = (
        CheckConstraint("outcome IN ('passed', 'failed')", name="outcome"),
        CheckConstraint("action IN ('none', 'suspend', 'revoke')", name="action"),
        Index("ix_spot_checks_agreement", "agreement_id", "at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID, primary_key=True, server_default=text("gen_random_uuid()")
    )
    agreement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agreements.id"), nullable=False)
    by_client_id: Mapped[str] = mapped_column(String(64), nullable=False)
    outcome: Mapped[str] = mapped_column(String(8), nullable=False)
    findings: Mapped[str] = mapped_column(Text, nullable=False)
    action: Mapped[str] = mapped_column(String(8), nullable=False)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
