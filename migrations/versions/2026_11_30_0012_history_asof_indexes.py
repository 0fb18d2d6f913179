"""Indexes for as-of lists: history rows by instant, and by member.

An as-of list rebuilds the registry at an instant from ``household_history``
(app.services.registry.asof): it reads the rows changed after the instant (by
``changed_at``; also the last row at or before it, the registry's version then) and, for a
member changed since, every row of that member (a moved member's rows lie under several
households). Without these, each would be a scan of the whole history.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 15:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_household_history_changed", "household_history", ["changed_at", "id"], unique=False
    )
    op.create_index(
        "ix_household_history_member",
        "household_history",
        ["member_id", "id"],
        unique=False,
        postgresql_where=sa.text("member_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_household_history_member", table_name="household_history")
    op.drop_index("ix_household_history_changed", table_name="household_history")
