"""DCI transactions of every kind: search, subscribe and unsubscribe.

``dci_transactions`` (0024) kept what each search transaction did, for ``txn/status``. A
subscribe or unsubscribe message also names a ``transaction_id``, and a client may ask its
status as well: the table now holds the three kinds (``txn_type``), each recorded in the
same database transaction as the change it reports (app.services.dci.subscriptions).

A client may use one transaction id for a search and for a subscribe: the key becomes the
client, the kind and the transaction id, so the two never overwrite each other and a status
asked for one kind never answers with the other.

The downgrade deletes the subscribe and unsubscribe rows (they have no place in the old
table) before it restores the old check and key.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-14 09:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE dci_transactions DROP CONSTRAINT dci_transactions_txn_type_check")
    op.execute(
        "ALTER TABLE dci_transactions ADD CONSTRAINT dci_transactions_txn_type_check "
        "CHECK (txn_type IN ('search', 'subscribe', 'unsubscribe'))"
    )
    op.execute("ALTER TABLE dci_transactions DROP CONSTRAINT dci_transactions_pkey")
    op.execute(
        "ALTER TABLE dci_transactions ADD CONSTRAINT dci_transactions_pkey "
        "PRIMARY KEY (client_id, txn_type, transaction_id)"
    )


def downgrade() -> None:
    op.execute("DELETE FROM dci_transactions WHERE txn_type <> 'search'")
    op.execute("ALTER TABLE dci_transactions DROP CONSTRAINT dci_transactions_pkey")
    op.execute(
        "ALTER TABLE dci_transactions ADD CONSTRAINT dci_transactions_pkey "
        "PRIMARY KEY (client_id, transaction_id)"
    )
    op.execute("ALTER TABLE dci_transactions DROP CONSTRAINT dci_transactions_txn_type_check")
    op.execute(
        "ALTER TABLE dci_transactions ADD CONSTRAINT dci_transactions_txn_type_check "
        "CHECK (txn_type IN ('search'))"
    )
