"""The DCI adapter's tables: agreements' registrations, NSER's Ed25519 signing keys, and the
durable outbox of the callbacks NSER sends (migration 0023); the transactions a client's
searches made, for their status (migration 0024), and those of its subscribe and unsubscribe
messages (0028); subscriptions to registry events and the notifier's high-water mark in the
household history (migration 0027)."""

from __future__ import annotations

import uuid
from datetime import datetime
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
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

CALLBACK_STATES = ("pending", "delivered", "dead")


class DciRegistration(Base):
    """An agreement's DCI registration: where its callbacks go, the key its sender signs with."""

    __tablename__ = "dci_registrations"

    agreement_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("agreements.id"), primary_key=True
    )
    # Every callback URL of the agreement must lie under it (scheme, host, port, path).
    callback_base_url: Mapped[str] = mapped_column(Text, nullable=False)
    # The sender's Ed25519 public key as a JWK {"kty": "OKP", "crv": "Ed25519", "x": ...};
    # when set, every DCI message of the agreement must carry a signature it verifies.
    public_jwk: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The staff client id, or "operator" for the CLI.
    updated_by: Mapped[str] = mapped_column(String(64), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class DciSigningKey(Base):
    """NSER's Ed25519 keys for DCI signatures; the private half encrypted (AES-256-GCM)."""

    __tablename__ = "dci_signing_keys"
    __table_args__ = (
        Index(
            "uq_dci_signing_keys_current",
            "is_current",
            unique=True,
            postgresql_where=text("is_current"),
        ),
    )

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_jwk: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    is_current: Mapped[bool] = mapped_column(nullable=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Published in the JWKS until then (receivers verify late deliveries with it).
    verify_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DciCallback(Base):
    """One callback to send: inserted with its cause, claimed with a lease, then delivered,
    retried after a back-off, or dead."""

    __tablename__ = "dci_callbacks"
    __table_args__ = (
        CheckConstraint("state IN ('pending','delivered','dead')", name="state"),
        Index(
            "ix_dci_callbacks_due",
            "agreement_id",
            "next_attempt_at",
            "id",
            postgresql_where=text("state = 'pending'"),
        ),
        Index(
            "ix_dci_callbacks_order",
            "agreement_id",
            "ordering_key",
            "id",
            postgresql_where=text("state = 'pending' AND ordering_key IS NOT NULL"),
        ),
        Index(
            "ix_dci_callbacks_inflight",
            "agreement_id",
            postgresql_where=text("state = 'pending' AND claimed_until IS NOT NULL"),
        ),
        Index("ix_dci_callbacks_state", "state", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    agreement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agreements.id"), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    # Rows of one agreement and key are delivered one at a time, in id order.
    ordering_key: Mapped[str | None] = mapped_column(String(200))
    # The envelope without its signature: {"header": {...}, "message": {...}}.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    state: Mapped[str] = mapped_column(String(12), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dead_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)


class DciTransaction(Base):
    """What a client's DCI transaction (a search, subscribe or unsubscribe) asked and how it
    ended (statuses, reasons, counts and subscription codes; never records nor filters),
    for ``txn/status``. Keyed by the client, the kind and the client's transaction id."""

    __tablename__ = "dci_transactions"
    __table_args__ = (
        CheckConstraint("txn_type IN ('search', 'subscribe', 'unsubscribe')", name="txn_type"),
        CheckConstraint("status IN ('rcvd', 'pdng', 'succ', 'rjct')", name="status"),
        Index("ix_dci_transactions_reference_ids", "reference_ids", postgresql_using="gin"),
        UniqueConstraint("correlation_id", name="dci_transactions_correlation_id_key"),
    )

    client_id: Mapped[str] = mapped_column(
        Text, ForeignKey("api_clients.client_id", ondelete="CASCADE"), primary_key=True
    )
    txn_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(99), primary_key=True)
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    correlation_id: Mapped[str] = mapped_column(String(99), nullable=False)
    status: Mapped[str] = mapped_column(String(4), nullable=False)
    message_id: Mapped[str] = mapped_column(String(99), nullable=False)
    reference_ids: Mapped[list[str]] = mapped_column(ARRAY(String(99)), nullable=False)
    requests: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class DciSubscription(Base):
    """A client's subscription to one kind of registry event, with its filter."""

    __tablename__ = "dci_subscriptions"
    __table_args__ = (
        CheckConstraint(
            "event_type IN ('REGISTER', 'UPDATE', 'DEATH', 'BIRTH', 'MOVE', 'RESCORE')",
            name="event_type",
        ),
        CheckConstraint(
            "filter_type IN ('idtype-value', 'expression', 'predicate')", name="filter_type"
        ),
        UniqueConstraint("code", name="dci_subscriptions_code_key"),
        Index(
            "ix_dci_subscriptions_active",
            "event_type",
            "id",
            postgresql_where=text("unsubscribed_at IS NULL"),
        ),
        Index(
            "uq_dci_subscriptions_same",
            "client_id",
            "event_type",
            "filter_key",
            unique=True,
            postgresql_where=text("unsubscribed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    code: Mapped[str] = mapped_column(String(40), nullable=False)
    client_id: Mapped[str] = mapped_column(
        Text, ForeignKey("api_clients.client_id", ondelete="CASCADE"), nullable=False
    )
    agreement_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("agreements.id"), nullable=False
    )
    sender_id: Mapped[str] = mapped_column(String(99), nullable=False)
    transaction_id: Mapped[str] = mapped_column(String(99), nullable=False)
    reference_id: Mapped[str] = mapped_column(String(99), nullable=False)
    event_type: Mapped[str] = mapped_column(String(16), nullable=False)
    filter_type: Mapped[str] = mapped_column(String(16), nullable=False)
    filter: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    filter_key: Mapped[str] = mapped_column(Text, nullable=False)
    notify_record_type: Mapped[str] = mapped_column(String(16), nullable=False)
    locale: Mapped[str | None] = mapped_column(String(3))
    frequency: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    unsubscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DciNotifier(Base):
    """The notifier's high-water mark: the last household_history id it has matched."""

    __tablename__ = "dci_notifier"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    last_history_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
