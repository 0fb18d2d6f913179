"""Indexes to search the audit log by partner, agreement and household, newest first.

The staff console's audit page searches the log for one partner's, one agreement's, one
household's or one staff member's rows in a bounded time range, a page at a time with a
keyset cursor on ``(at, id)`` (``app.services.audit.search``). The staff member's search had
its index (``ix_audit_log_client_at``); these give the other three one each, so a page is a
range scan of one index, whatever the size of the log:

- ``ix_audit_log_organization_at``: (organization_id, at, id), the partner's rows;
- ``ix_audit_log_agreement_at``: (agreement_id, at, id);
- ``ix_audit_log_household_at``: (filters ->> 'household_id', at, id), the staff reads of
  a household (its history, its score explanation).

Each is partial (only the rows that carry the key): rows without one cost nothing more to
append. They are built ``CONCURRENTLY`` (outside the migration's transaction), so appends,
which every audited read makes, are not blocked while a large log is indexed.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-10 09:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_audit_log_organization_at": (
        "organization_id, at, id",
        "organization_id IS NOT NULL",
    ),
    "ix_audit_log_agreement_at": ("agreement_id, at, id", "agreement_id IS NOT NULL"),
    "ix_audit_log_household_at": (
        "(filters ->> 'household_id'), at, id",
        "(filters ->> 'household_id') IS NOT NULL",
    ),
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, (columns, where) in INDEXES.items():
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON audit_log ({columns}) "
                f"WHERE {where}"
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
