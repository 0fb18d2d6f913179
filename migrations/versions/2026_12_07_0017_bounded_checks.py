"""Bounded checks: the differencing control's signatures, the audit chain's checkpoints.

- ``differencing_key``: one random seed, made here, with which the differencing control
  hashes household ids (app.services.products.differencing). The service may only read it.
- ``aggregate_selections``: per agreement, one row per distinct (filters, population) it was
  answered for: the households, 8 coarse counts and a 2 KB sketch of them, indexed by
  (agreement, households) so that a new query reads only the populations of nearly its
  size. Filled
  here for every distinct filters of every agreement's logged queries (none forgotten,
  whatever their age), over the registry as it is now: the populations those queries had
  when answered are not known. This costs one pass over each such population's
  households (on 1M households, about a second per country-wide one).
- ``audit_checkpoints``: where ``nser audit verify`` last got to, sealed with an audit key
  (app.services.audit.trail). Append-only, like ``audit_log``; the service may only read
  and append (``nser db upgrade`` grants it so).

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-07 12:00:00.000000+00:00
"""

import secrets
from collections.abc import Sequence

import orjson
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.util import await_only

from app.services.products import differencing
from app.services.sharing.beneficiaries_sql import GEO_LEVELS, Filters, Query

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "differencing_key",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_differencing_key_single")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_differencing_key")),
    )
    seed = secrets.randbits(64) - (1 << 63)
    op.execute(
        sa.text("INSERT INTO differencing_key (id, seed) VALUES (1, :seed)").bindparams(seed=seed)
    )
    op.create_table(
        "aggregate_selections",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("agreement_id", sa.UUID(), nullable=False),
        sa.Column("query_id", sa.BigInteger(), nullable=False),
        sa.Column("filters_digest", sa.LargeBinary(), nullable=False),
        sa.Column("population_digest", sa.LargeBinary(), nullable=False),
        sa.Column("households", sa.BigInteger(), nullable=False),
        sa.Column("coarse", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("sketch", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agreement_id"],
            ["agreements.id"],
            name=op.f("fk_aggregate_selections_agreement_id_agreements"),
        ),
        sa.ForeignKeyConstraint(
            ["query_id"],
            ["aggregate_queries.id"],
            name=op.f("fk_aggregate_selections_query_id_aggregate_queries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aggregate_selections")),
        sa.UniqueConstraint(
            "agreement_id",
            "filters_digest",
            "population_digest",
            name="uq_aggregate_selections_population",
        ),
    )
    op.create_index(
        "ix_aggregate_selections_size", "aggregate_selections", ["agreement_id", "households"]
    )
    _backfill(seed)

    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.LargeBinary(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("rows_per_key", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("mac", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    op.execute("""
        CREATE FUNCTION audit_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_checkpoints is append-only (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
    """)
    op.execute("""
        CREATE TRIGGER audit_checkpoints_append_only
        BEFORE UPDATE OR DELETE ON audit_checkpoints
        FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only()
    """)
    op.execute("""
        CREATE TRIGGER audit_checkpoints_no_truncate
        BEFORE TRUNCATE ON audit_checkpoints
        FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_append_only()
    """)
    op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON audit_checkpoints FROM PUBLIC")


def _backfill(seed: int) -> None:
    """A signature for each distinct filters of each agreement's logged queries, over the
    registry as it is now, naming the latest query with those filters."""
    bind = op.get_bind()
    logged = bind.execute(
        sa.text(
            """SELECT q.agreement_id, q.filters::text AS filters, max(q.id) AS query_id,
                      a.geo_codes
                 FROM aggregate_queries q JOIN agreements a ON a.id = q.agreement_id
                GROUP BY q.agreement_id, q.filters, a.geo_codes
                ORDER BY 1, 3"""
        )
    ).all()
    if not logged:
        return
    raw = bind.connection.driver_connection  # asyncpg, inside the migration's greenlet
    assert raw is not None
    for agreement_id, filters, query_id, geo_codes in logged:
        f = _filters_of(filters)
        q = Query()
        rows = await_only(
            raw.fetch(differencing.selection_sql(q, seed, f, tuple(geo_codes)), *q.params)
        )
        sketch = differencing.Sketch.of_groups((r["g"], r["n"], int(r["s"])) for r in rows)
        canonical = differencing.canonical_filters(f)
        bind.execute(
            sa.text(
                """INSERT INTO aggregate_selections (agreement_id, query_id, filters_digest,
                                                     population_digest, households, coarse,
                                                     sketch)
                   VALUES (:agreement, :query, :filters, :population, :households, :coarse,
                           :sketch)
                   ON CONFLICT DO NOTHING"""
            ),
            {
                "agreement": agreement_id,
                "query": query_id,
                "filters": differencing.filters_digest(canonical),
                "population": sketch.digest(),
                "households": sketch.households,
                "coarse": sketch.coarse,
                "sketch": sketch.to_bytes(),
            },
        )


def _filters_of(stored: str) -> Filters:
    """The filters of a logged query (its normalized JSON)."""
    normalized = orjson.loads(stored)
    return Filters(
        **{level: list(normalized.get(level, [])) for level in GEO_LEVELS},
        score_min=normalized.get("score_min"),
        score_max=normalized.get("score_max"),
        poverty_band=list(normalized.get("poverty_band", [])),
        member_type=list(normalized.get("member_type", [])),
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_checkpoints_no_truncate ON audit_checkpoints")
    op.execute("DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints")
    op.execute("DROP FUNCTION IF EXISTS audit_checkpoints_append_only()")
    op.drop_table("audit_checkpoints")
    op.drop_index("ix_aggregate_selections_size", table_name="aggregate_selections")
    op.drop_table("aggregate_selections")
    op.drop_table("differencing_key")
