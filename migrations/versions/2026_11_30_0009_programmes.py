"""Programmes and their eligibility rules; which agreements name which programmes.

A programme (a cash transfer, a conditional-education stipend...) belongs to an owner
organization and selects households of the registry by a rule. Rules are data, versioned
like the PMT model: ``programme_rules`` keeps every version (immutable once written) and the
highest version is the one in force. The rule document is validated by the application
(app.services.programmes.rules) before it is stored, and evaluated in SQL.

``agreement_programmes`` names the programmes an agreement lets its partner read: their
rules, eligibility by CNIC and the eligible list.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 12:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "programmes",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.String(length=12), server_default="active", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("code ~ '^[a-z0-9][a-z0-9_-]{1,39}$'", name=op.f("ck_programmes_code")),
        sa.CheckConstraint("status IN ('active','closed')", name=op.f("ck_programmes_status")),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_programmes_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_programmes")),
        sa.UniqueConstraint("code", name=op.f("uq_programmes_code")),
    )
    op.create_index("ix_programmes_organization", "programmes", ["organization_id"], unique=False)
    op.create_table(
        "programme_rules",
        sa.Column("programme_id", sa.UUID(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rule", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_programme_rules_version_positive")),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["programmes.id"],
            name=op.f("fk_programme_rules_programme_id_programmes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("programme_id", "version", name=op.f("pk_programme_rules")),
    )
    op.create_table(
        "agreement_programmes",
        sa.Column("agreement_id", sa.UUID(), nullable=False),
        sa.Column("programme_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name=op.f("fk_agreement_programmes_agreement_id_agreements"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["programmes.id"],
            name=op.f("fk_agreement_programmes_programme_id_programmes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "agreement_id", "programme_id", name=op.f("pk_agreement_programmes")
        ),
    )
    op.create_index(
        "ix_agreement_programmes_programme",
        "agreement_programmes",
        ["programme_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_agreement_programmes_programme", table_name="agreement_programmes")
    op.drop_table("agreement_programmes")
    op.drop_table("programme_rules")
    op.drop_index("ix_programmes_organization", table_name="programmes")
    op.drop_table("programmes")
