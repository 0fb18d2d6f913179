"""The staff console's sign-in: passkeys, one-time enrolment links, console sessions and the
WebAuthn challenges between a ceremony's two steps. A staff member is their API client
(``api_clients`` of kind ``staff``); each of these rows belongs to one by ``staff_id``."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

SESSION_END_REASONS = ("sign_out", "idle", "expired", "disabled", "passkey_removed")
CHALLENGE_PURPOSES = ("enrol", "sign_in", "step_up")


class StaffPasskey(Base):
    """A WebAuthn credential of a staff member (several per member)."""

    __tablename__ = "staff_passkeys"
    __table_args__ = (
        Index("ix_staff_passkeys_staff_id", "staff_id"),
        # Sign-in finds the passkey by the credential id the browser returns.
        Index("uq_staff_passkeys_credential_id", "credential_id", unique=True),
        CheckConstraint("octet_length(credential_id) BETWEEN 16 AND 1023", name="credential_id"),
        CheckConstraint("sign_count >= 0", name="sign_count"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID, primary_key=True, server_default=text("gen_random_uuid()")
    )
    staff_id: Mapped[str] = mapped_column(
        ForeignKey("api_clients.client_id", ondelete="CASCADE"), nullable=False
    )
    credential_id: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # The credential's COSE public key, as the authenticator gave it at registration.
    public_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    sign_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    # What the browser said it can reach the authenticator by (internal, usb, hybrid, ...).
    transports: Mapped[list[str]] = mapped_column(
        ARRAY(String(16)), nullable=False, server_default=text("'{}'")
    )
    label: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StaffEnrolmentLink(Base):
    """A one-time link to register a passkey: only the SHA-256 of its token is kept."""

    __tablename__ = "staff_enrolment_links"
    __table_args__ = (
        Index("ix_staff_enrolment_links_staff_id", "staff_id"),
        CheckConstraint("octet_length(token_hash) = 32", name="token_hash"),
        CheckConstraint("expires_at > created_at", name="expiry"),
    )

    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    staff_id: Mapped[str] = mapped_column(
        ForeignKey("api_clients.client_id", ondelete="CASCADE"), nullable=False
    )
    # The admin who issued it (NULL: the operator's CLI).
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StaffSession(Base):
    """A signed-in browser: the cookie holds a random token, the table only its SHA-256."""

    __tablename__ = "staff_sessions"
    __table_args__ = (
        Index("ix_staff_sessions_staff_id", "staff_id"),
        CheckConstraint("octet_length(id_hash) = 32", name="id_hash"),
        CheckConstraint(
            "ended_reason IS NULL OR ended_reason IN "
            "('sign_out','idle','expired','disabled','passkey_removed')",
            name="ended_reason",
        ),
        CheckConstraint("(ended_at IS NULL) = (ended_reason IS NULL)", name="ended"),
    )

    id_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    staff_id: Mapped[str] = mapped_column(
        ForeignKey("api_clients.client_id", ondelete="CASCADE"), nullable=False
    )
    # The passkey it was opened with: removing that passkey ends the session.
    passkey_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("staff_passkeys.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    # The last passkey assertion (sign-in or step-up): sensitive actions need it recent.
    last_verified_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_reason: Mapped[str | None] = mapped_column(String(16))


class StaffChallenge(Base):
    """A WebAuthn challenge between the options a browser was given and its answer: used
    once (deleted when answered), short-lived, bound to the link or session it serves."""

    __tablename__ = "staff_challenges"
    __table_args__ = (
        Index("ix_staff_challenges_expires_at", "expires_at"),
        CheckConstraint("purpose IN ('enrol','sign_in','step_up')", name="purpose"),
    )

    challenge: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(8), nullable=False)
    # Enrolment: the link's token hash; step-up: the session's id hash; sign-in: NULL.
    binding: Mapped[bytes | None] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
