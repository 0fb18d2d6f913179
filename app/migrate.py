"""Run Alembic from the service itself (CLI, embedded start-up, tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from app.settings import ROOT, Settings


def alembic_config(settings: Settings, url: str) -> Config:
    ini = ROOT / "alembic.ini"
    config = Config(str(ini)) if ini.exists() else Config()
    config.set_main_option("script_location", str(settings.migrations_dir))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    return config


def upgrade(settings: Settings, url: str, revision: str = "heads") -> None:
    command.upgrade(alembic_config(settings, url), revision)


def downgrade(settings: Settings, url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(settings, url), revision)
