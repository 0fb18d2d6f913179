"""Audit chains: the audit log becomes N independent hash chains, each under its own lock.

Until now every audit row was chained to the row before it in the whole log, so every
append took one global advisory lock and held it until its transaction committed: audited
reads were serialized on it (``bench/audit_append.py`` measures what that costs). From this
revision on a row belongs to one of ``NSER_AUDIT_CHAINS`` chains (the new ``chain``
column, 0–255): its ``prev_hash`` is the hash of the previous row *of its chain*, and each
chain has its own transaction-level advisory lock (``trail.APPEND_LOCK`` + chain), so up to
N appends commit at once. A row of a chain other than 0 names its chain in what its HMAC
covers (``trail.canonical``), so moving a row to another chain breaks it like any edit.

- ``chain``: the rows already there are chain 0 (the one chain there was; their hashes do
  not change: chain 0's rows are hashed as before). No default: a process of the previous
  release, which does not name a chain, can no longer append (its audited reads fail
  closed) — roll out right after migrating, as for every release.
- ``ix_audit_log_chain``: (chain, id), the head of a chain for each append, and the
  rows of each chain after a checkpoint for the incremental ``nser audit verify``.
- ``audit_chain_claim(lock_base, chains, start)``: one round trip for an append: takes the
  lock of the first free chain from ``start`` on (``pg_try_advisory_xact_lock``, else
  waits for ``start``'s), *then* reads that chain's head, the next id and the time (each
  statement of a PL/pgSQL function takes a new snapshot under READ COMMITTED, so the head
  read after the lock sees the previous holder's committed row). It refuses a REPEATABLE
  READ or SERIALIZABLE transaction, whose snapshot was taken before the lock and could
  miss that row (a fork of the chain).
- ``audit_checkpoints.heads``: a checkpoint records every chain's last verified row (id,
  hash, rows); NULL in the checkpoints made before (one chain: ``last_id``).

Downgrading drops them; the rows of chains other than 0 stay, and the previous release's
``nser audit verify`` reports the first of them as out of its chain.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-08 09:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIM = """
CREATE FUNCTION audit_chain_claim(lock_base bigint, chains integer, start integer,
                                  OUT claimed integer, OUT head bytea, OUT next_id bigint,
                                  OUT next_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    c integer;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'audit rows are appended in READ COMMITTED transactions, not %',
            current_setting('transaction_isolation')
            USING HINT = 'read in a REPEATABLE READ transaction, then append in another';
    END IF;
    IF chains < 1 OR start < 0 OR start >= chains THEN
        RAISE EXCEPTION 'no audit chain % of %', start, chains;
    END IF;
    FOR i IN 0 .. chains - 1 LOOP
        c := (start + i) % chains;
        IF pg_try_advisory_xact_lock(lock_base + c) THEN
            claimed := c;
            EXIT;
        END IF;
    END LOOP;
    IF claimed IS NULL THEN
        claimed := start;
        PERFORM pg_advisory_xact_lock(lock_base + start);
    END IF;
    -- A statement after the lock: a snapshot that sees the previous holder's row.
    SELECT a.hash INTO head FROM audit_log a WHERE a.chain = claimed ORDER BY a.id DESC LIMIT 1;
    next_id := nextval(pg_get_serial_sequence('audit_log', 'id'));
    next_at := clock_timestamp();
END
$$
"""


def upgrade() -> None:
    op.add_column(
        "audit_log",
        sa.Column("chain", sa.SmallInteger(), server_default="0", nullable=False),
    )
    op.alter_column("audit_log", "chain", server_default=None)
    op.create_check_constraint(op.f("ck_audit_log_chain"), "audit_log", "chain BETWEEN 0 AND 255")
    op.create_index("ix_audit_log_chain", "audit_log", ["chain", "id"], unique=False)
    op.add_column(
        "audit_checkpoints",
        sa.Column("heads", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.execute(CLAIM)


def downgrade() -> None:
    op.execute("DROP FUNCTION audit_chain_claim(bigint, integer, integer)")
    op.drop_column("audit_checkpoints", "heads")
    op.drop_index("ix_audit_log_chain", table_name="audit_log")
    op.drop_constraint(op.f("ck_audit_log_chain"), "audit_log", type_="check")
    op.drop_column("audit_log", "chain")
