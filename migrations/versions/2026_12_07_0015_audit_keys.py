"""Audit keys: each audit row names the key of its HMAC; the unkeyed rows are sealed.

Until now each row's hash was ``sha256(prev_hash || canonical row)``, which anyone who can
write the table can recompute. From this revision on the service signs rows with an audit
key kept outside the database (``app.services.audit.keys``) and records its id in the new
``key_id`` column. The rows already there are marked ``'legacy'`` (the unkeyed scheme) and,
if there are any, sealed here by one keyed row (actor ``system``, endpoint
``trail.SEAL_ENDPOINT``, the number of unkeyed rows and the last one's hash): the verifier
accepts unkeyed rows only at the start of the log and only followed by that seal. This is
why ``nser db upgrade`` needs the same audit keys (NSER_AUDIT_KEYS, else
NSER_KEY_ENCRYPTION_SECRET) as the service.

``key_id`` has no default: a process of the previous release, which does not name a key,
can no longer append (its audited reads fail closed) — roll out right after migrating, as
for every release. Downgrading drops the column; the keyed rows stay, and the previous
release's ``nser audit verify`` reports the first of them as altered.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 09:00:00.000000+00:00
"""

from collections.abc import Sequence

import orjson
import sqlalchemy as sa
from alembic import context, op

from app.services.audit import trail
from app.settings import Settings, get_settings

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _settings() -> Settings:
    given = context.config.attributes.get("settings")
    return given if isinstance(given, Settings) else get_settings()


def upgrade() -> None:
    op.add_column(
        "audit_log",
        sa.Column("key_id", sa.String(length=32), server_default="legacy", nullable=False),
    )
    op.alter_column("audit_log", "key_id", server_default=None)
    bind = op.get_bind()
    bind.execute(sa.text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": trail.APPEND_LOCK})
    count, head = bind.execute(
        sa.text(
            "SELECT count(*), (SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1) FROM audit_log"
        )
    ).one()
    if not count:
        return
    key = trail.keyring_of(_settings()).current
    row_id = bind.execute(
        sa.text("SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))")
    ).scalar_one()
    at = bind.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    head = bytes(head)
    rec = {
        "actor_type": "system",
        "client_id": None,
        "agreement_id": None,
        "organization_id": None,
        "endpoint": trail.SEAL_ENDPOINT,
        "filters": trail.seal_filters(count, head),
        "dimensions": [],
        "households": 0,
        "members": 0,
        "request_id": None,
    }
    bind.execute(
        sa.text(
            """INSERT INTO audit_log (id, at, actor_type, endpoint, filters, dimensions,
                   households, members, key_id, prev_hash, hash)
               VALUES (:id, :at, 'system', :endpoint, CAST(:filters AS jsonb), '{}', 0, 0,
                       :key_id, :prev_hash, :hash)"""
        ),
        {
            "id": row_id,
            "at": at,
            "endpoint": rec["endpoint"],
            "filters": orjson.dumps(rec["filters"], option=orjson.OPT_SORT_KEYS).decode(),
            "key_id": key.id,
            "prev_hash": head,
            "hash": trail.row_hash(head, row_id, at, rec, key),
        },
    )


def downgrade() -> None:
    op.drop_column("audit_log", "key_id")
