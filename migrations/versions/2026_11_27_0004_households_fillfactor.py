"""Leave room on households' and members' pages for HOT updates.

Most partner updates (phones, surveys, births, deaths) rewrite a household row without
touching its geography or ids; with free space on the page PostgreSQL can update it in
place (HOT) instead of inserting a new tuple into every index. Applies to pages written
from now on (a seed, a bulk load); an existing table gets it at its next rewrite
(``VACUUM FULL`` / pg_repack), which is an operator's decision, not a migration's.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 21:55:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE households SET (fillfactor = 80)")
    op.execute("ALTER TABLE members SET (fillfactor = 90)")


def downgrade() -> None:
    op.execute("ALTER TABLE members RESET (fillfactor)")
    op.execute("ALTER TABLE households RESET (fillfactor)")
