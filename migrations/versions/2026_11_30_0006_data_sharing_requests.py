"""Data-sharing requests and their timeline, obligations, spot checks, staff roles.

The request workflow (protocol §5.1) as data: each request keeps its form, what staff
decided at each step and the quote frozen at approval; ``request_events`` is its timeline.
References are ``DSR-<year>-<number>``, the number from one sequence.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 07:54:40.332457+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_requests",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("reference", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="submitted", nullable=False),
        sa.Column("organization_key", sa.String(length=240), nullable=False),
        sa.Column("organization_type", sa.String(length=20), nullable=False),
        sa.Column("form", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "previous_requests",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'"),
            nullable=False,
        ),
        sa.Column("review", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("households", sa.BigInteger(), nullable=True),
        sa.Column("interview", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("recommendation", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("decision", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("quote", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("quoted_amount", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column("organization_id", sa.UUID(), nullable=True),
        sa.Column("agreement_id", sa.UUID(), nullable=True),
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
        sa.CheckConstraint(
            "status IN ('submitted', 'under_review', 'reviewed', 'interviewed', 'recommended', 'not_recommended', 'approved', 'rejected', 'active', 'expired', 'suspended', 'revoked', 'withdrawn')",
            name=op.f("ck_data_requests_status"),
        ),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name=op.f("fk_data_requests_agreement_id_agreements"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_data_requests_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_requests")),
        sa.UniqueConstraint("reference", name=op.f("uq_data_requests_reference")),
    )
    op.create_index("ix_data_requests_org_key", "data_requests", ["organization_key"], unique=False)
    op.create_index(
        "ix_data_requests_status", "data_requests", ["status", "created_at"], unique=False
    )
    op.create_table(
        "spot_checks",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("agreement_id", sa.UUID(), nullable=False),
        sa.Column("by_client_id", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "action IN ('none', 'suspend', 'revoke')", name=op.f("ck_spot_checks_action")
        ),
        sa.CheckConstraint("outcome IN ('passed', 'failed')", name=op.f("ck_spot_checks_outcome")),
        sa.ForeignKeyConstraint(
            ["agreement_id"], ["agreements.id"], name=op.f("fk_spot_checks_agreement_id_agreements")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spot_checks")),
    )
    op.create_index("ix_spot_checks_agreement", "spot_checks", ["agreement_id", "at"], unique=False)
    op.create_table(
        "obligations",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("request_id", sa.UUID(), nullable=False),
        sa.Column("agreement_id", sa.UUID(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=8), server_default="open", nullable=False),
        sa.Column("met_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deliverable", sa.Text(), nullable=True),
        sa.Column("met_by", sa.String(length=64), nullable=True),
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
        sa.CheckConstraint("kind IN ('findings', 'updates')", name=op.f("ck_obligations_kind")),
        sa.CheckConstraint("status IN ('open', 'met')", name=op.f("ck_obligations_status")),
        sa.ForeignKeyConstraint(
            ["agreement_id"], ["agreements.id"], name=op.f("fk_obligations_agreement_id_agreements")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["data_requests.id"],
            name=op.f("fk_obligations_request_id_data_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_obligations")),
    )
    op.create_index("ix_obligations_status_due", "obligations", ["status", "due_on"], unique=False)
    op.create_table(
        "request_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("request_id", sa.UUID(), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
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
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["data_requests.id"],
            name=op.f("fk_request_events_request_id_data_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_events")),
    )
    op.create_index(
        "ix_request_events_request", "request_events", ["request_id", "id"], unique=False
    )
    op.add_column(
        "api_clients",
        sa.Column(
            "roles",
            postgresql.ARRAY(sa.String(length=16)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )
    op.create_check_constraint(
        "roles",
        "api_clients",
        "roles <@ ARRAY['officer','committee','secretary','me','admin']::varchar[]"
        " AND (kind = 'staff' OR roles = '{}')",
    )
    op.execute("CREATE SEQUENCE data_request_number AS bigint")


def downgrade() -> None:
    op.execute("DROP SEQUENCE IF EXISTS data_request_number")
    op.drop_constraint(op.f("ck_api_clients_roles"), "api_clients", type_="check")
    op.drop_column("api_clients", "roles")
    op.drop_index("ix_request_events_request", table_name="request_events")
    op.drop_table("request_events")
    op.drop_index("ix_obligations_status_due", table_name="obligations")
    op.drop_table("obligations")
    op.drop_index("ix_spot_checks_agreement", table_name="spot_checks")
    op.drop_table("spot_checks")
    op.drop_index("ix_data_requests_status", table_name="data_requests")
    op.drop_index("ix_data_requests_org_key", table_name="data_requests")
    op.drop_table("data_requests")
