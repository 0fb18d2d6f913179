"""Staff passkeys: the staff console's sign-in (WebAuthn), sessions and enrolment links.

- ``api_clients.staff_disabled_at``: a disabled staff member (staff clients only). Unlike
  ``disabled_at`` (the client's credentials off, which stops only its API tokens), it stops
  the member's console sessions and API tokens alike, at their next request.
- ``staff_passkeys``: a member's WebAuthn credentials (several each): credential id
  (unique: sign-in finds the passkey by it), COSE public key, sign counter, transports,
  label, created and last used.
- ``staff_enrolment_links``: one-time links to register a passkey; only the SHA-256 of the
  link's random token is stored, with its expiry and the moment it was used.
- ``staff_sessions``: signed-in browsers, keyed by the SHA-256 of the cookie's random token
  (one primary-key read per request); created, last seen, last passkey verification (for
  step-up), ended and why.
- ``staff_challenges``: WebAuthn challenges between the options and the answer, deleted
  when answered (once only), bound to the enrolment link or session they serve.

The service's role gets DML on the new tables from ``nser db upgrade`` like every table.
Downgrading drops them and the column (members disabled then are enabled again).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-08 12:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_clients",
        sa.Column("staff_disabled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_check_constraint(
        op.f("ck_api_clients_staff_disabled"),
        "api_clients",
        "kind = 'staff' OR staff_disabled_at IS NULL",
    )
    op.create_table(
        "staff_passkeys",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("credential_id", sa.LargeBinary(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "transports",
            postgresql.ARRAY(sa.String(length=16)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "octet_length(credential_id) BETWEEN 16 AND 1023",
            name=op.f("ck_staff_passkeys_credential_id"),
        ),
        sa.CheckConstraint("sign_count >= 0", name=op.f("ck_staff_passkeys_sign_count")),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["api_clients.client_id"],
            name=op.f("fk_staff_passkeys_staff_id_api_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_passkeys")),
    )
    op.create_index("ix_staff_passkeys_staff_id", "staff_passkeys", ["staff_id"])
    op.create_index(
        "uq_staff_passkeys_credential_id", "staff_passkeys", ["credential_id"], unique=True
    )
    op.create_table(
        "staff_enrolment_links",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "octet_length(token_hash) = 32", name=op.f("ck_staff_enrolment_links_token_hash")
        ),
        sa.CheckConstraint("expires_at > created_at", name=op.f("ck_staff_enrolment_links_expiry")),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["api_clients.client_id"],
            name=op.f("fk_staff_enrolment_links_staff_id_api_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_staff_enrolment_links")),
    )
    op.create_index("ix_staff_enrolment_links_staff_id", "staff_enrolment_links", ["staff_id"])
    op.create_table(
        "staff_sessions",
        sa.Column("id_hash", sa.LargeBinary(), nullable=False),
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("passkey_id", sa.UUID(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column(
            "last_verified_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_reason", sa.String(length=16), nullable=True),
        sa.CheckConstraint("octet_length(id_hash) = 32", name=op.f("ck_staff_sessions_id_hash")),
        sa.CheckConstraint(
            "ended_reason IS NULL OR ended_reason IN "
            "('sign_out','idle','expired','disabled','passkey_removed')",
            name=op.f("ck_staff_sessions_ended_reason"),
        ),
        sa.CheckConstraint(
            "(ended_at IS NULL) = (ended_reason IS NULL)", name=op.f("ck_staff_sessions_ended")
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["api_clients.client_id"],
            name=op.f("fk_staff_sessions_staff_id_api_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["passkey_id"],
            ["staff_passkeys.id"],
            name=op.f("fk_staff_sessions_passkey_id_staff_passkeys"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_staff_sessions")),
    )
    op.create_index("ix_staff_sessions_staff_id", "staff_sessions", ["staff_id"])
    op.create_table(
        "staff_challenges",
        sa.Column("challenge", sa.LargeBinary(), nullable=False),
        sa.Column("purpose", sa.String(length=8), nullable=False),
        sa.Column("binding", sa.LargeBinary(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "purpose IN ('enrol','sign_in','step_up')", name=op.f("ck_staff_challenges_purpose")
        ),
        sa.PrimaryKeyConstraint("challenge", name=op.f("pk_staff_challenges")),
    )
    op.create_index("ix_staff_challenges_expires_at", "staff_challenges", ["expires_at"])


def downgrade() -> None:
    op.drop_table("staff_challenges")
    op.drop_table("staff_sessions")
    op.drop_table("staff_enrolment_links")
    op.drop_table("staff_passkeys")
    op.drop_constraint(op.f("ck_api_clients_staff_disabled"), "api_clients", type_="check")
    op.drop_column("api_clients", "staff_disabled_at")
