"""DCI: each agreement's registration, NSER's Ed25519 signing keys, the callback outbox.

- ``dci_registrations``: per agreement, the base URL its DCI callbacks go under (https, or
  http where the operator allows it) and, optionally, the public key (a JWK, OKP/Ed25519)
  every message of its sender must then be signed with. Set by registry staff or by the
  operator's ``nser partners dci``.
- ``dci_signing_keys``: the Ed25519 keys NSER signs its callbacks and notifications with,
  the private half encrypted like the JWT signing keys' (``signing_keys``); the current one
  and those rotated out but still verifying are published in the JWKS.
- ``dci_callbacks``: the durable outbox. A row is inserted in the transaction of its cause
  (so it exists if and only if its cause committed), claimed by a worker with a lease,
  posted, and then ``delivered``, retried later with back-off, or ``dead``.
  ``ix_dci_callbacks_due`` finds each agreement's due rows, ``ix_dci_callbacks_order`` the earlier
  pending rows of an ordering key, ``ix_dci_callbacks_inflight`` the rows being sent per
  agreement (the per-receiver bound), ``ix_dci_callbacks_state`` pages staff's lists.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-11 09:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dci_registrations",
        sa.Column("agreement_id", postgresql.UUID(), nullable=False),
        sa.Column("callback_base_url", sa.Text(), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name="fk_dci_registrations_agreement_id_agreements",
        ),
        sa.PrimaryKeyConstraint("agreement_id", name="pk_dci_registrations"),
    )
    op.create_table(
        "dci_signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("private_key_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("is_current", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verify_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_dci_signing_keys"),
    )
    op.create_index(
        "uq_dci_signing_keys_current",
        "dci_signing_keys",
        ["is_current"],
        unique=True,
        postgresql_where=sa.text("is_current"),
    )
    op.create_table(
        "dci_callbacks",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("agreement_id", postgresql.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("ordering_key", sa.String(length=200), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.String(length=12), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending','delivered','dead')", name=op.f("ck_dci_callbacks_state")
        ),
        sa.ForeignKeyConstraint(
            ["agreement_id"], ["agreements.id"], name="fk_dci_callbacks_agreement_id_agreements"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_dci_callbacks"),
    )
    op.create_index(
        "ix_dci_callbacks_due",
        "dci_callbacks",
        ["agreement_id", "next_attempt_at", "id"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        "ix_dci_callbacks_order",
        "dci_callbacks",
        ["agreement_id", "ordering_key", "id"],
        postgresql_where=sa.text("state = 'pending' AND ordering_key IS NOT NULL"),
    )
    op.create_index(
        "ix_dci_callbacks_inflight",
        "dci_callbacks",
        ["agreement_id"],
        postgresql_where=sa.text("state = 'pending' AND claimed_until IS NOT NULL"),
    )
    op.create_index("ix_dci_callbacks_state", "dci_callbacks", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_dci_callbacks_state", table_name="dci_callbacks")
    op.drop_index("ix_dci_callbacks_inflight", table_name="dci_callbacks")
    op.drop_index("ix_dci_callbacks_order", table_name="dci_callbacks")
    op.drop_index("ix_dci_callbacks_due", table_name="dci_callbacks")
    op.drop_table("dci_callbacks")
    op.drop_index("uq_dci_signing_keys_current", table_name="dci_signing_keys")
    op.drop_table("dci_signing_keys")
    op.drop_table("dci_registrations")
