"""What-if targeting simulations: requested by staff, run by the worker, results kept.

``simulations`` is a queue and a store in one: a row is ``pending`` when posted; a worker
claims it (``FOR UPDATE SKIP LOCKED``), marks it ``running`` and holds the row's lock
while it runs (a worker that dies releases the lock, so the row can be reclaimed), then
stores the result (``done``) or the reason (``failed``). The request and the result are
kept as written (JSON): a simulation is read again by its id, never recomputed.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 14:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "simulations",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("status", sa.String(length=8), server_default="pending", nullable=False),
        sa.Column("request", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claimed_by", sa.String(length=120), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", postgresql.JSON(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending','running','done','failed')", name=op.f("ck_simulations_status")
        ),
        sa.CheckConstraint(
            "(status = 'done') = (result IS NOT NULL)", name=op.f("ck_simulations_result_when_done")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_simulations")),
    )
    op.create_index(
        "ix_simulations_queue",
        "simulations",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending','running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_simulations_queue", table_name="simulations")
    op.drop_table("simulations")
