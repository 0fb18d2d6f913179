"""Grievances about a household's score, their timeline, and staff re-survey batches.

A grievance is filed by CNIC (``GRV-<year>-<number>``, the number from one sequence; the
status link's token is kept only as a SHA-256). It remembers the household the CNIC
matched (none: the filer is not told, see docs/api.md), the household's score and history
position at filing, so that the resolution can show the score before and after from the
household's history. ``grievance_events`` is its timeline.

A re-survey enters the registry as an update batch sent by registry staff:
``update_batches.source`` is ``partner`` (as before) or ``staff``; a staff batch has no
agreement or organization.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 14:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("now()")


def upgrade() -> None:
    op.add_column(
        "update_batches",
        sa.Column("source", sa.String(length=8), server_default="partner", nullable=False),
    )
    op.alter_column("update_batches", "agreement_id", nullable=True)
    op.alter_column("update_batches", "organization_id", nullable=True)
    op.create_check_constraint(
        op.f("ck_update_batches_source"),
        "update_batches",
        "source = 'staff' OR (source = 'partner' AND agreement_id IS NOT NULL"
        " AND organization_id IS NOT NULL)",
    )
    op.create_table(
        "grievances",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("reference", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("cnic", sa.String(length=13), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("details", sa.Text(), server_default="", nullable=False),
        sa.Column("contact_phone", sa.String(length=20), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="received", nullable=False),
        # The household the CNIC matched at filing (null: no member has it), and where its
        # score and history stood then.
        sa.Column("household_id", sa.BigInteger(), nullable=True),
        sa.Column("household_version", sa.Integer(), nullable=True),
        sa.Column("history_mark", sa.BigInteger(), nullable=True),
        sa.Column("pmt_score", sa.Numeric(precision=5, scale=2), nullable=True),
        sa.Column("poverty_band", sa.String(length=16), nullable=True),
        sa.Column("pmt_version", sa.String(length=40), nullable=True),
        sa.Column("resurvey_batch_id", sa.UUID(), nullable=True),
        sa.Column("resolution", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("triaged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.CheckConstraint(
            "reason IN ('wrong_members', 'wrong_assets', 'resurvey', 'deceased_listed', 'other')",
            name=op.f("ck_grievances_reason"),
        ),
        sa.CheckConstraint(
            "status IN ('received', 'triaged', 'resurvey_ordered', 'resolved', 'rejected')",
            name=op.f("ck_grievances_status"),
        ),
        sa.ForeignKeyConstraint(
            ["resurvey_batch_id"],
            ["update_batches.id"],
            name=op.f("fk_grievances_resurvey_batch_id_update_batches"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grievances")),
        sa.UniqueConstraint("reference", name=op.f("uq_grievances_reference")),
    )
    op.create_index("ix_grievances_status", "grievances", ["status", "created_at"], unique=False)
    op.create_index("ix_grievances_created", "grievances", ["created_at"], unique=False)
    op.create_index("ix_grievances_household", "grievances", ["household_id"], unique=False)
    op.create_table(
        "grievance_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("grievance_id", sa.UUID(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor_client_id", sa.String(length=64), nullable=True),
        sa.Column(
            "actor_roles",
            postgresql.ARRAY(sa.String(length=16)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["grievance_id"],
            ["grievances.id"],
            name=op.f("fk_grievance_events_grievance_id_grievances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grievance_events")),
    )
    op.create_index(
        "ix_grievance_events_grievance", "grievance_events", ["grievance_id", "id"], unique=False
    )
    op.execute("CREATE SEQUENCE grievance_number AS bigint")


def downgrade() -> None:
    op.execute("DROP SEQUENCE IF EXISTS grievance_number")
    op.drop_index("ix_grievance_events_grievance", table_name="grievance_events")
    op.drop_table("grievance_events")
    op.drop_index("ix_grievances_household", table_name="grievances")
    op.drop_index("ix_grievances_created", table_name="grievances")
    op.drop_index("ix_grievances_status", table_name="grievances")
    op.drop_table("grievances")
    # Staff batches have no agreement: they go before the columns are required again.
    op.execute("DELETE FROM update_batches WHERE source = 'staff'")
    op.drop_constraint(op.f("ck_update_batches_source"), "update_batches", type_="check")
    op.alter_column("update_batches", "organization_id", nullable=False)
    op.alter_column("update_batches", "agreement_id", nullable=False)
    op.drop_column("update_batches", "source")
