"""Run Alembic from the service itself (CLI, embedded start-up, tests).

Everything Alembic needs is set here, so an installed wheel migrates from any working
directory: the scripts come from ``settings.migrations_dir`` (shipped inside the package,
see ``app.settings.bundled_migrations_dir``) and no alembic.ini is read. The top-level
alembic.ini is for running the ``alembic`` command itself from a checkout.

Migrations run as the schema's owner. After an upgrade, the service's own database role (if
it is not the owner) is granted what it needs and no more (``app.roles``).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from alembic import command
from alembic.config import Config

from app import roles
from app.settings import Settings


def alembic_config(settings: Settings, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(settings.migrations_dir))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    # A migration may need the settings (0015 seals the audit log with the audit key).
    config.attributes["settings"] = settings
    return config


def upgrade(
    settings: Settings, url: str, revision: str = "heads", *, service_url: str | None = None
) -> None:
    """Migrate as the owner (``url``), then grant the service's role (``service_url``)."""
    command.upgrade(alembic_config(settings, url), revision)
    if service_url and service_url != url:
        # Its own thread and loop: callers may be inside an event loop or not.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, roles.grant_service_role(url, service_url)).result()


def downgrade(settings: Settings, url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(settings, url), revision)
