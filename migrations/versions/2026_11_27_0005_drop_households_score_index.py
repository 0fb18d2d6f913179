"""Drop the index on households.pmt_score.

Every re-score (surveys, births, deaths, moves, model changes) changes pmt_score, and with
that index no such update could stay HOT: each wrote a new entry into all of households'
indexes. The index served only nationwide score-range scans; partner lists page by
household id within a geography (indexed) and filter the score on the rows they read, and
a whole-country export reads most of the table anyway. bench/ingest on the 1M registry:
3,739 -> 4,122 and 4,385 records/s (two runs).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 22:30:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_households_score")


def downgrade() -> None:
    op.create_index("ix_households_score", "households", ["pmt_score"], unique=False)
