"""A registry data version: one sequence bumped by every statement that changes households
or members.

Published aggregates (summaries, maps) are cached and tagged by it, so an ETag changes when
the registry's data changes. A sequence, not a counter row: concurrent writers (the ingest
pipeline commits two chunks at once) never wait on it, and a bump costs one ``nextval`` per
statement, not per row. A rolled-back statement bumps it too; that only costs a cache miss.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 09:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE registry_version AS bigint")
    op.execute("""
        CREATE FUNCTION registry_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM nextval('registry_version');
            RETURN NULL;
        END
        $$
    """)
    for table in ("households", "members"):
        op.execute(f"""
            CREATE TRIGGER {table}_registry_version
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION registry_version_bump()
        """)


def downgrade() -> None:
    for table in ("households", "members"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_registry_version ON {table}")
    op.execute("DROP FUNCTION IF EXISTS registry_version_bump()")
    op.execute("DROP SEQUENCE IF EXISTS registry_version")
