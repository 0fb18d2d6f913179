"""How far a running simulation has got: ranges read of ranges to read.

A simulation runs on the worker inside one transaction that holds its ``simulations`` row
locked (``app.services.targeting.simulation.process_one``), so its progress cannot be
written to that row where others would see it. The worker writes it here instead, from a
spare connection outside the run's transaction, at most about once a second; the API's
``GET /v1/staff/simulations/{id}`` and the console's simulation and rule-preview pages read
it. One row per simulation, replaced in place: it costs the same whatever the registry's
size.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-12 09:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE simulation_progress (
            simulation_id uuid PRIMARY KEY REFERENCES simulations (id) ON DELETE CASCADE,
            ranges_done integer NOT NULL CHECK (ranges_done >= 0),
            ranges integer NOT NULL CHECK (ranges > 0 AND ranges_done <= ranges),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE simulation_progress")
