"""Update batches under their agreement: the truth behind a partner's outcome, why a batch
stopped, and the hourly record budget.

- ``update_results.unchanged``: the record found the registry already as it said. A partner
  is told ``applied`` where "unchanged" would confirm a value it may not read (a guessed
  phone, a locked PMT indicator); the registry's own reports count the truth from here.
- ``update_batches.stopped_reason``: a batch whose agreement was suspended, revoked or
  expired before it was applied ends ``done`` with this reason, its records rejected.
- ``ix_update_batches_agreement_received``: the records an agreement sent in the last hour
  (``NSER_UPDATES_RECORDS_PER_HOUR``) are summed on every batch received.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 09:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "update_results",
        sa.Column("unchanged", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.execute("UPDATE update_results SET unchanged = true WHERE outcome = 'unchanged'")
    op.add_column("update_batches", sa.Column("stopped_reason", sa.Text(), nullable=True))
    op.create_index(
        "ix_update_batches_agreement_received",
        "update_batches",
        ["agreement_id", "received_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_update_batches_agreement_received", table_name="update_batches")
    op.drop_column("update_batches", "stopped_reason")
    op.drop_column("update_results", "unchanged")
