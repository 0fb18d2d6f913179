"""Programme status: when and why a programme was closed.

``programmes.status`` ('active'/'closed') came with 0009 but nothing set it. Staff now
close and reopen a programme (app.services.programmes.status); a closed programme keeps
the instant it closed (``closed_at``) and the staff's reason (``closed_reason``). Partners
are refused its eligibility and its plain list from ``closed_at`` on, while a list as of an
earlier instant, when it was active, still answers as it did. Reopening clears both.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 16:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("programmes", sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("programmes", sa.Column("closed_reason", sa.Text(), nullable=True))
    # Nothing set 'closed' before; should a row have been set by hand, its last change is
    # the best instant known.
    op.execute(
        "UPDATE programmes SET closed_at = updated_at, closed_reason = '' WHERE status = 'closed'"
    )
    op.create_check_constraint(
        op.f("ck_programmes_closed_when"),
        "programmes",
        "(status = 'closed') = (closed_at IS NOT NULL AND closed_reason IS NOT NULL)",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_programmes_closed_when"), "programmes", type_="check")
    op.drop_column("programmes", "closed_reason")
    op.drop_column("programmes", "closed_at")
