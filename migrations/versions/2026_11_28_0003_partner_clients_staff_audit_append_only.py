"""Staff API clients (kind, scopes), and an append-only audit log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 09:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_clients",
        sa.Column("kind", sa.String(length=8), server_default="partner", nullable=False),
    )
    op.add_column(
        "api_clients",
        sa.Column(
            "scopes",
            postgresql.ARRAY(sa.String(length=32)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )
    op.add_column("api_clients", sa.Column("name", sa.String(length=200), nullable=True))
    op.alter_column("api_clients", "agreement_id", existing_type=sa.UUID(), nullable=True)
    op.create_check_constraint("kind", "api_clients", "kind IN ('partner','staff')")
    op.create_check_constraint(
        "agreement_for_partners",
        "api_clients",
        "(kind = 'partner') = (agreement_id IS NOT NULL)",
    )
    # The audit trail is append-only: no role may rewrite or remove a row. Superusers can
    # still disable the trigger; the hash chain (``nser audit verify``) catches that.
    op.execute("""
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
    """)
    op.execute("""
        CREATE TRIGGER audit_log_append_only
        BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
    """)
    op.execute("""
        CREATE TRIGGER audit_log_no_truncate
        BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()
    """)
    op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC")
    op.create_index("ix_audit_log_client_at", "audit_log", ["client_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_client_at", table_name="audit_log")
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
    op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
    op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.drop_constraint(op.f("ck_api_clients_agreement_for_partners"), "api_clients", type_="check")
    op.drop_constraint(op.f("ck_api_clients_kind"), "api_clients", type_="check")
    op.execute("DELETE FROM api_clients WHERE kind = 'staff'")
    op.alter_column("api_clients", "agreement_id", existing_type=sa.UUID(), nullable=False)
    op.drop_column("api_clients", "name")
    op.drop_column("api_clients", "scopes")
    op.drop_column("api_clients", "kind")
