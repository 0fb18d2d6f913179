"""Partner aggregates: the log of answered queries (differencing control) and stored analyses.

``aggregate_queries`` holds one row per partner summary or analysis answered: the
agreement, the normalized household filters and the grouping. Before answering, each
earlier query of the agreement is compared with the new one in SQL; a pair that differs by
a few households is refused (app.services.products.aggregate). ``analysis_results`` keeps
each custom cross-tab (category ii) as published, so ``GET /v1/partner/analysis/{id}``
returns it again without recomputing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 10:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "aggregate_queries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("agreement_id", sa.UUID(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("product", sa.String(length=16), nullable=False),
        sa.Column("filters", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("dims", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("households", sa.BigInteger(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "product IN ('summaries','analysis','maps')", name=op.f("ck_aggregate_queries_product")
        ),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name=op.f("fk_aggregate_queries_agreement_id_agreements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aggregate_queries")),
    )
    op.create_index(
        "ix_aggregate_queries_agreement", "aggregate_queries", ["agreement_id", "id"], unique=False
    )
    op.create_table(
        "analysis_results",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("agreement_id", sa.UUID(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("query_id", sa.BigInteger(), nullable=False),
        sa.Column("request", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("cells", postgresql.JSON(astext_type=sa.Text()), nullable=False),
        sa.Column("margins", postgresql.JSON(astext_type=sa.Text()), nullable=False),
        sa.Column("disclosure", postgresql.JSON(astext_type=sa.Text()), nullable=False),
        sa.Column("households", sa.BigInteger(), nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.Column("registry_version", sa.BigInteger(), nullable=False),
        sa.Column(
            "computed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name=op.f("fk_analysis_results_agreement_id_agreements"),
        ),
        sa.ForeignKeyConstraint(
            ["query_id"],
            ["aggregate_queries.id"],
            name=op.f("fk_analysis_results_query_id_aggregate_queries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_results")),
    )
    op.create_index(
        "ix_analysis_results_agreement",
        "analysis_results",
        ["agreement_id", "computed_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_analysis_results_agreement", table_name="analysis_results")
    op.drop_table("analysis_results")
    op.drop_index("ix_aggregate_queries_agreement", table_name="aggregate_queries")
    op.drop_table("aggregate_queries")
