"""Staff work queues and the M&E team's analyses.

- ``ix_data_requests_waiting``: (status, updated_at, id). A staff member's queue of
  requests is, per state waiting on their roles, the requests that entered it longest ago
  (``updated_at`` is set by status changes only): read from the index, the first page costs
  the page, whatever the number of requests open or closed.
- ``ix_agreements_status``: the active agreements, among which those due for a spot check
  are found, without reading the expired and revoked ones.
- ``aggregate_queries``, ``aggregate_selections``, ``analysis_results``: ``agreement_id``
  may be NULL, for the analyses of the registry's own staff (role ``me``), who have no
  agreement. They are one recipient for the differencing control, so the unique signature
  of a population treats NULL agreements as equal (``NULLS NOT DISTINCT``, PostgreSQL 15).

Downgrading removes the staff's aggregate queries, their populations and their stored
analyses (rows without an agreement), which the previous release cannot hold.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-09 09:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAFF_TABLES = ("analysis_results", "aggregate_selections", "aggregate_queries")


def upgrade() -> None:
    op.create_index(
        "ix_data_requests_waiting", "data_requests", ["status", "updated_at", "id"], unique=False
    )
    op.create_index("ix_agreements_status", "agreements", ["status"], unique=False)
    for table in STAFF_TABLES:
        op.alter_column(table, "agreement_id", nullable=True)
    op.execute(
        """ALTER TABLE aggregate_selections
               DROP CONSTRAINT uq_aggregate_selections_population,
               ADD CONSTRAINT uq_aggregate_selections_population
                   UNIQUE NULLS NOT DISTINCT (agreement_id, filters_digest, population_digest)"""
    )


def downgrade() -> None:
    # The dependants first.
    op.execute("DELETE FROM analysis_results WHERE agreement_id IS NULL")
    op.execute("DELETE FROM aggregate_selections WHERE agreement_id IS NULL")
    op.execute("DELETE FROM aggregate_queries WHERE agreement_id IS NULL")
    op.execute(
        """ALTER TABLE aggregate_selections
               DROP CONSTRAINT uq_aggregate_selections_population,
               ADD CONSTRAINT uq_aggregate_selections_population
                   UNIQUE (agreement_id, filters_digest, population_digest)"""
    )
    for table in STAFF_TABLES:
        op.alter_column(table, "agreement_id", nullable=False)
    op.drop_index("ix_agreements_status", table_name="agreements")
    op.drop_index("ix_data_requests_waiting", table_name="data_requests")
