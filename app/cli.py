"""The ``nser`` operator CLI: serve, db, seed, partners, keys, pmt, audit, worker."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Annotated

import typer

from app.db import resolve_database_url
from app.settings import get_settings

cli = typer.Typer(
    help="National Socio-Economic Registry operator commands.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


def fail(reason: str) -> None:
    """Exit non-zero with a one-line reason on stderr."""
    typer.echo(f"error: {reason}", err=True)
    raise typer.Exit(code=1)


@db_cli.command("upgrade")
def db_upgrade(revision: str = "heads") -> None:
    """Migrate the database at NSER_DATABASE_URL (or the embedded one)."""
    from app import migrate

    settings = get_settings()
    migrate.upgrade(settings, resolve_database_url(settings), revision)
    typer.echo(f"database at {revision}")


@db_cli.command("downgrade")
def db_downgrade(revision: str = "base") -> None:
    """Downgrade the schema (operators only; ``base`` drops everything)."""
    from app import migrate

    settings = get_settings()
    migrate.downgrade(settings, resolve_database_url(settings), revision)
    typer.echo(f"database at {revision}")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    migrate_db: Annotated[
        bool | None,
        typer.Option(
            "--migrate/--no-migrate",
            help="Migrate first (default: only the embedded database).",
        ),
    ] = None,
) -> None:
    """Serve the API (uvloop + httptools); starts the embedded PostgreSQL if no URL is set."""
    import uvicorn

    from app import migrate

    settings = get_settings()
    embedded = not settings.database_url
    url = resolve_database_url(settings)
    if migrate_db or (migrate_db is None and embedded):
        migrate.upgrade(settings, url)
    # Metrics from every worker are summed through files in one shared folder.
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="nser-metrics-")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        # X-Forwarded-For is honoured by the app only from NSER_TRUSTED_PROXIES.
        proxy_headers=False,
        access_log=False,
        timeout_graceful_shutdown=20,
        log_config=None,
    )


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
