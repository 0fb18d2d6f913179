"""DCI transactions: what each synchronous DCI search answered, for ``txn/status``.

A DCI client names its business transaction (``transaction_id``) and each request in it
(``reference_id``); ``POST /dci/registry/sync/txn/status`` answers what became of them. One
row per client and transaction: the status, the reference ids with each one's status,
reason and record count, the correlation id NSER gave it, and when. Never the records
themselves: a status query re-reads nothing, and the registry's data stays in the registry.

The key is the client (one agreement's credentials) and its transaction id, so one
partner's transaction ids never collide with, or reveal, another's. A search repeated under
the same transaction id (a client paging through a result) updates the row.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-11 09:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE dci_transactions (
            client_id text NOT NULL REFERENCES api_clients (client_id) ON DELETE CASCADE,
            transaction_id varchar(99) NOT NULL,
            agreement_id uuid,
            correlation_id varchar(99) NOT NULL UNIQUE,
            txn_type varchar(16) NOT NULL CHECK (txn_type IN ('search')),
            status varchar(4) NOT NULL CHECK (status IN ('rcvd', 'pdng', 'succ', 'rjct')),
            message_id varchar(99) NOT NULL,
            reference_ids varchar(99)[] NOT NULL,
            requests jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (client_id, transaction_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_dci_transactions_reference_ids ON dci_transactions "
        "USING gin (reference_ids)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS dci_transactions")
