"""Index households by village, so that an agreement's geography is read through indexes.

An agreement's geography is a list of codes at any level, down to villages; a partner's
query within it tests each of the household's six geography codes against the list (one
``OR``). The other five levels were indexed; without the village, that ``OR`` could not be
answered from indexes and every partner query whose only restriction was its agreement's
geography (a district's agreement asking for its whole district, a summary, an analysis, a
map, the differencing check's count) read every household of the registry. With it,
PostgreSQL combines the six index scans (a bitmap ``OR``) and reads only the households in
scope.

The index costs one more entry per household written: a new household, or a move to
another village (which already changes the other geography indexes). Re-scoring does not
touch it (updates of the score stay HOT). Seeding drops and rebuilds it with the others.

Revision ID: 0018
Revises: 0015
Create Date: 2026-12-07 12:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_households_village", "households", ["village_code"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_households_village", table_name="households")
