"""DCI jobs: the asynchronous DCI requests accepted and not yet answered.

``POST /dci/registry/search`` and ``POST /dci/registry/txn/status`` answer at once with an
acknowledgement; the work itself (a search, a status look-up) runs later on the workers,
which answer by callback (``dci_callbacks``). Each accepted request is one row here,
written before the acknowledgement is sent, so accepted work is never lost to a crash or a
restart: a worker claims a row for a lease, runs it, and in one transaction stores the
callback and marks the row done; a worker that dies leaves the row to be claimed again
once its lease has run out.

One row per client and ``message_id``: the same message sent again is answered with the
same correlation id and runs once. ``digest`` (SHA-256 of the action and the message
object, keys sorted) tells a repetition from another message under a used id. The request
itself (its JSON as bytes: a message may hold any character JSON allows, NUL included,
which ``jsonb`` cannot) may hold CNICs; it is kept only while the job waits, and cleared
when the job is done.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-13 09:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dci_jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("agreement_id", postgresql.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=99), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("transaction_id", sa.String(length=99), nullable=False),
        sa.Column("correlation_id", sa.String(length=99), nullable=False),
        sa.Column("callback_url", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("request", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=8), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("callback_id", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('search','txn-status')", name=op.f("ck_dci_jobs_kind")),
        sa.CheckConstraint("state IN ('pending','done','failed')", name=op.f("ck_dci_jobs_state")),
        sa.CheckConstraint("octet_length(digest) = 32", name=op.f("ck_dci_jobs_digest")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_dci_jobs_attempts")),
        sa.CheckConstraint("length(callback_url) <= 2000", name=op.f("ck_dci_jobs_callback_url")),
        sa.CheckConstraint("length(last_error) <= 300", name=op.f("ck_dci_jobs_last_error")),
        # The request is kept while the job waits, and only then; done_at says when it ended.
        sa.CheckConstraint(
            "(state = 'pending') = (request IS NOT NULL) "
            "AND (state = 'pending') = (done_at IS NULL)",
            name=op.f("ck_dci_jobs_pending"),
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["api_clients.client_id"],
            name="fk_dci_jobs_client_id_api_clients",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_dci_jobs"),
        sa.UniqueConstraint("client_id", "message_id", name="uq_dci_jobs_client_id"),
        sa.UniqueConstraint("correlation_id", name="uq_dci_jobs_correlation_id"),
    )
    op.create_index(
        "ix_dci_jobs_due",
        "dci_jobs",
        ["next_attempt_at", "id"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        "ix_dci_jobs_done",
        "dci_jobs",
        ["done_at"],
        postgresql_where=sa.text("state <> 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("dci_jobs")
