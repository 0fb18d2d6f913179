"""Public products precomputed: the public cube, its refreshes, the districts to redo, the
stored answers.

The public summaries and maps are no longer counted on a visitor's request: the worker
refreshes a small cube (``public_cube`` for the summaries, ``public_map_cube`` and
``public_districts`` for the maps) and records each refresh in ``public_refreshes``;
answers built from it are kept in ``public_answers`` by refresh and query
(app.services.products.cube, app.services.products.public).

Which districts to redo: statement-level triggers on ``households`` and ``members`` with
transition tables append one row to ``public_products_dirty`` per statement that changed
something the cube counts (a household's geography, band, score or location; a member's
household, gender, birth date or death), naming the districts it touched; a phone number or
a name changes nothing there and writes nothing. A statement of more than
20,000 rows, or a TRUNCATE, writes ``{*}`` (everything): those are bulk loads
and re-scorings, after which a full rebuild costs no more than finding the districts.
Appending (never updating a shared row) keeps concurrent writers from waiting on each other.

An empty registry gets its first (empty) refresh here, so a fresh install answers at once;
a registry with households gets ``{*}``, and the worker (or ``nser products refresh``)
builds the cube.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 12:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HOUSEHOLDS = """
CREATE FUNCTION public_products_households_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    touched text[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        touched := '{*}';
    ELSIF TG_OP = 'INSERT' THEN
        IF (SELECT count(*) FROM new_rows) > 20000 THEN
            touched := '{*}';
        ELSE
            SELECT array_agg(DISTINCT district_code) INTO touched FROM new_rows;
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF (SELECT count(*) FROM old_rows) > 20000 THEN
            touched := '{*}';
        ELSE
            SELECT array_agg(DISTINCT district_code) INTO touched FROM old_rows;
        END IF;
    ELSIF (SELECT count(*) FROM new_rows) > 20000 THEN
        touched := '{*}';
    ELSE
        SELECT array_agg(DISTINCT x.code) INTO touched
          FROM old_rows o JOIN new_rows n ON n.id = o.id
         CROSS JOIN LATERAL (VALUES (o.district_code), (n.district_code)) x(code)
         WHERE (o.province_code, o.division_code, o.district_code, o.poverty_band,
                o.pmt_score, o.lat, o.lon)
               IS DISTINCT FROM
               (n.province_code, n.division_code, n.district_code, n.poverty_band,
                n.pmt_score, n.lat, n.lon);
    END IF;
    IF touched IS NOT NULL THEN
        INSERT INTO public_products_dirty (districts) VALUES (touched);
    END IF;
    RETURN NULL;
END
$$
"""

_MEMBERS = """
CREATE FUNCTION public_products_members_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    touched text[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        touched := '{*}';
    ELSIF TG_OP = 'INSERT' THEN
        IF (SELECT count(*) FROM new_rows) > 20000 THEN
            touched := '{*}';
        ELSE
            SELECT array_agg(DISTINCT h.district_code) INTO touched
              FROM households h WHERE h.id IN (SELECT household_id FROM new_rows);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF (SELECT count(*) FROM old_rows) > 20000 THEN
            touched := '{*}';
        ELSE
            SELECT array_agg(DISTINCT h.district_code) INTO touched
              FROM households h WHERE h.id IN (SELECT household_id FROM old_rows);
        END IF;
    ELSIF (SELECT count(*) FROM new_rows) > 20000 THEN
        touched := '{*}';
    ELSE
        SELECT array_agg(DISTINCT h.district_code) INTO touched
          FROM households h
         WHERE h.id IN (SELECT x.household_id
                          FROM old_rows o JOIN new_rows n ON n.id = o.id
                         CROSS JOIN LATERAL (VALUES (o.household_id), (n.household_id))
                               x(household_id)
                         WHERE (o.household_id, o.gender, o.date_of_birth, o.deceased_on)
                               IS DISTINCT FROM
                               (n.household_id, n.gender, n.date_of_birth, n.deceased_on));
    END IF;
    IF touched IS NOT NULL THEN
        INSERT INTO public_products_dirty (districts) VALUES (touched);
    END IF;
    RETURN NULL;
END
$$
"""


def _triggers(table: str, function: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_public_products_insert AFTER INSERT ON {table} "
        f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {table}_public_products_update AFTER UPDATE ON {table} "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {table}_public_products_delete AFTER DELETE ON {table} "
        f"REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {table}_public_products_truncate AFTER TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    ]


def _geo_columns() -> list[sa.Column[str]]:
    return [
        sa.Column("province_code", sa.String(length=16), nullable=False),
        sa.Column("division_code", sa.String(length=16), nullable=False),
        sa.Column("district_code", sa.String(length=16), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "public_refreshes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("registry_version", sa.BigInteger(), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("districts", sa.Integer(), nullable=False),
        sa.Column("answers", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column(
            "finished_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_public_refreshes")),
    )
    op.create_table(
        "public_products_dirty",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("districts", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_public_products_dirty")),
    )
    op.create_table(
        "public_cube",
        *_geo_columns(),
        sa.Column("poverty_band", sa.String(length=16), nullable=False),
        sa.Column("gender", sa.String(length=8), nullable=False),
        sa.Column("age_bracket", sa.String(length=8), nullable=False),
        sa.Column("households", sa.BigInteger(), nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "province_code",
            "division_code",
            "district_code",
            "poverty_band",
            "gender",
            "age_bracket",
            name=op.f("pk_public_cube"),
        ),
    )
    op.create_table(
        "public_map_cube",
        *_geo_columns(),
        sa.Column("resolution", sa.SmallInteger(), nullable=False),
        sa.Column("h3", sa.BigInteger(), nullable=False),
        sa.Column("households", sa.BigInteger(), nullable=False),
        sa.Column("unscored", sa.BigInteger(), nullable=False),
        sa.Column("score_cents", sa.BigInteger(), nullable=False),
        sa.Column("bins", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(
            "province_code",
            "division_code",
            "district_code",
            "resolution",
            "h3",
            name=op.f("pk_public_map_cube"),
        ),
    )
    op.create_table(
        "public_districts",
        *_geo_columns(),
        sa.Column("households", sa.BigInteger(), nullable=False),
        sa.Column("unlocated", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "province_code", "division_code", "district_code", name=op.f("pk_public_districts")
        ),
    )
    op.create_table(
        "public_answers",
        sa.Column("refresh_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("refresh_id", "key", name=op.f("pk_public_answers")),
    )
    op.execute(_HOUSEHOLDS)
    op.execute(_MEMBERS)
    for statement in _triggers("households", "public_products_households_dirty"):
        op.execute(statement)
    for statement in _triggers("members", "public_products_members_dirty"):
        op.execute(statement)
    # A fresh install: the empty registry's refresh, so nothing waits for the worker. A
    # registry with households: everything is to be counted by the first refresh.
    op.execute("""
        INSERT INTO public_refreshes (registry_version, as_of, as_of_date, "full", districts,
                                      answers, seconds)
        SELECT CASE WHEN v.is_called THEN v.last_value ELSE 0 END, now(), current_date,
               true, 0, 0, 0
          FROM registry_version v
         WHERE NOT EXISTS (SELECT 1 FROM households)
    """)
    op.execute("""
        INSERT INTO public_products_dirty (districts)
        SELECT '{*}' WHERE EXISTS (SELECT 1 FROM households)
    """)


def downgrade() -> None:
    for table in ("households", "members"):
        for event in ("insert", "update", "delete", "truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_public_products_{event} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS public_products_households_dirty()")
    op.execute("DROP FUNCTION IF EXISTS public_products_members_dirty()")
    for table in (
        "public_answers",
        "public_districts",
        "public_map_cube",
        "public_cube",
        "public_products_dirty",
        "public_refreshes",
    ):
        op.drop_table(table)
