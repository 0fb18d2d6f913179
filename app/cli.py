"""The ``nser`` operator CLI: serve, db, seed, products, partners, keys, pmt, audit, worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import asyncpg
import typer

from app.db import resolve_database_url, resolve_owner_url
from app.settings import DEV_SECRET, Settings, get_settings

if TYPE_CHECKING:
    from rich.progress import TaskID

    from app.services.disclosure.policy import Policy

T = TypeVar("T")

cli = typer.Typer(
    help="National Socio-Economic Registry operator commands.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


def fail(reason: str) -> NoReturn:
    """Exit non-zero with a one-line reason on stderr."""
    typer.echo(f"error: {reason}", err=True)
    raise typer.Exit(code=1)


def _migrate(settings: Settings, revision: str = "heads") -> None:
    """Migrate as the owner, then grant the service's role; a refusal ends the command."""
    from app import migrate
    from app.roles import UnsafeServiceRole
    from app.services.audit.keys import InvalidAuditKeys

    try:
        owner = resolve_owner_url(settings)
        migrate.upgrade(settings, owner, revision, service_url=settings.session_database_url())
    except (UnsafeServiceRole, InvalidAuditKeys, OSError, asyncpg.PostgresError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


@db_cli.command("upgrade")
def db_upgrade(revision: str = "heads") -> None:
    """Migrate as the schema owner (NSER_OWNER_DATABASE_URL, else NSER_DATABASE_URL, else
    the embedded database), then grant the service's role what it needs."""
    _migrate(get_settings(), revision)
    typer.echo(f"database at {revision}")


@db_cli.command("downgrade")
def db_downgrade(revision: str = "base") -> None:
    """Downgrade the schema as its owner (operators only; ``base`` drops everything)."""
    from app import migrate

    settings = get_settings()
    migrate.downgrade(settings, resolve_owner_url(settings), revision)
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
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="A demo on one machine: allow the public development encryption secret "
            "and per-process rate limits with several workers.",
        ),
    ] = False,
) -> None:
    """Serve the API (uvloop + httptools); starts the embedded PostgreSQL if no URL is set."""
    import uvicorn

    settings = get_settings()
    # Demo mode: `nser demo`, `nser serve --demo`, or the test suite's environment.
    if not demo and settings.environment != "test" and (refused := _demo_only(settings, workers)):
        fail("; ".join(refused) + " (for a demo on one machine: nser serve --demo)")
    embedded = not settings.database_url
    resolve_database_url(settings)
    if migrate_db or (migrate_db is None and embedded):
        _migrate(settings)
    # Metrics from every worker are summed through files in one shared folder.
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="nser-metrics-")
    if embedded:
        # After its graceful shutdown uvicorn re-raises SIGTERM into the handler it found.
        # Exiting there (not dying of the signal) runs the exit hooks, and with them the
        # embedded PostgreSQL's stop: a `docker stop` or systemd leaves no server behind.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    from app.http_guard import GuardedHttpTools

    # Every limit explicit (docs/operations.md, "Limits and timeouts"): httptools with a
    # cap on the head and deadlines for head and body (app/http_guard.py); no WebSocket.
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=GuardedHttpTools,
        ws="none",
        # X-Forwarded-For is honoured by the app only from NSER_TRUSTED_PROXIES.
        proxy_headers=False,
        access_log=False,
        timeout_keep_alive=settings.http_keep_alive_seconds,
        limit_concurrency=settings.http_max_connections,
        backlog=settings.http_backlog,
        # Unused with httptools; set in case the h11 protocol is ever chosen.
        h11_max_incomplete_event_size=settings.http_max_head_bytes,
        timeout_graceful_shutdown=20,
        log_config=None,
    )


def _demo_only(settings: Settings, workers: int) -> list[str]:
    """What only a demo may serve with, each said with what to set instead."""
    reasons = []
    if settings.key_encryption_secret.get_secret_value() == DEV_SECRET:
        reasons.append(
            "NSER_KEY_ENCRYPTION_SECRET is the public development value; set it to a long "
            "random secret of your own (openssl rand -base64 48)"
        )
    if workers > 1 and urlsplit(settings.rate_limit_storage).scheme == "memory":
        reasons.append(
            f"--workers {workers} with in-memory rate limits would give every worker budgets "
            "of its own (each limit multiplied, a proof-of-work solution accepted once per "
            "worker); set NSER_RATE_LIMIT_STORAGE=redis://HOST:6379/0, or serve with "
            "--workers 1"
        )
    return reasons


# --- partners, staff, keys, audit (partner access) -------------------------------------
partners_cli = typer.Typer(help="Partner organizations and their agreements.", no_args_is_help=True)
staff_cli = typer.Typer(
    help="Staff members: API credentials, passkey enrolment links, disabling.",
    no_args_is_help=True,
)
keys_cli = typer.Typer(help="JWT signing keys.", no_args_is_help=True)
cli.add_typer(partners_cli, name="partners")
cli.add_typer(staff_cli, name="staff")
cli.add_typer(keys_cli, name="keys")


def _run_db(job: Callable[[asyncpg.Connection], Awaitable[T]], *, owner: bool = False) -> T:
    """Run ``job`` on one connection to the configured database: as the service's role,
    or as the schema's owner with ``owner`` (seeding).

    Rule violations, unreadable audit keys and database errors end the command with a
    one-line reason.
    """
    from app.db import asyncpg_target
    from app.errors import AppError
    from app.services.audit.keys import InvalidAuditKeys
    from app.services.pmt.model import InvalidModel
    from app.services.sharing.rules import RuleViolation

    async def _main() -> T:
        settings = get_settings()
        if owner:
            url = resolve_owner_url(settings)
        else:  # straight to PostgreSQL, not through a transaction pooler
            resolve_database_url(settings)
            url = settings.session_database_url()
        target = asyncpg_target(url)
        conn = await asyncpg.connect(dsn=target.dsn, host=target.host)
        try:
            return await job(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(_main())
    except (RuleViolation, InvalidModel, InvalidAuditKeys, OSError, asyncpg.PostgresError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except AppError as exc:  # a service's refusal (no such staff member, ...)
        fail(exc.detail)


def _echo_json(payload: dict[str, object]) -> None:
    typer.echo(json.dumps(payload))


@partners_cli.command("create")
def partners_create(
    name: Annotated[str, typer.Option(help="Organization name.")],
    type_: Annotated[str, typer.Option("--type", help="Organization type (Annex II).")],
    categories: Annotated[str, typer.Option(help="Comma-separated categories i..viii.")],
    dimensions: Annotated[str, typer.Option(help="Comma-separated dimension names.")] = "",
    geo: Annotated[list[str] | None, typer.Option(help="Geography code (repeatable).")] = None,
    valid_days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
    update_kinds: Annotated[str, typer.Option(help="Comma-separated update kinds.")] = "",
    rate_limit: Annotated[str | None, typer.Option(help='e.g. "600/minute".')] = None,
    extract_geo_level: Annotated[str, typer.Option(help="Finest extract level.")] = "tehsil",
    programmes: Annotated[
        str, typer.Option(help="Comma-separated programme codes the agreement names.")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create an organization, its agreement and API client; prints the secret once."""
    from app.services.programmes import store as programme_store
    from app.services.sharing import partners as partner_service
    from app.services.sharing.rules import RuleViolation, split_list

    spec = partner_service.PartnerSpec(
        name=name,
        type=type_,
        categories=split_list(categories),
        dimensions=split_list(dimensions),
        geo_codes=[code for item in geo or [] for code in split_list(item)],
        update_kinds=split_list(update_kinds),
        valid_days=valid_days,
        rate_limit=rate_limit,
        extract_geo_level=extract_geo_level,
    )
    codes = split_list(programmes)

    async def create(conn: asyncpg.Connection) -> partner_service.NewPartner:
        for code in codes:  # every programme known before anything is created
            if await programme_store.get(conn, code) is None:
                raise RuleViolation(f"no programme {code!r}")
        made = await partner_service.create_by_operator(conn, spec)
        for code in codes:
            await programme_store.name_in_agreement(conn, None, code, made.agreement_id)
        return made

    made = _run_db(create)
    payload: dict[str, object] = {
        "organization_id": str(made.organization_id),
        "agreement_id": str(made.agreement_id),
        "client_id": made.client_id,
        "client_secret": made.client_secret,
    }
    if as_json:
        _echo_json(payload)
    else:
        for key, value in payload.items():
            typer.echo(f"{key}: {value}")


def _set_status(agreement_id: str, status: str, reason: str | None) -> None:
    from app.services.sharing import partners as partner_service

    _run_db(lambda conn: partner_service.set_agreement_status(conn, agreement_id, status, reason))
    typer.echo(f"agreement {agreement_id} {status}")


@partners_cli.command("suspend")
def partners_suspend(
    agreement_id: str, reason: Annotated[str | None, typer.Option(help="Why.")] = None
) -> None:
    """Suspend an agreement: its tokens stop working at once."""
    _set_status(agreement_id, "suspended", reason)


@partners_cli.command("resume")
def partners_resume(
    agreement_id: str, reason: Annotated[str | None, typer.Option(help="Why.")] = None
) -> None:
    """Re-activate a suspended agreement."""
    _set_status(agreement_id, "active", reason)


@partners_cli.command("revoke")
def partners_revoke(
    agreement_id: str, reason: Annotated[str | None, typer.Option(help="Why.")] = None
) -> None:
    """Revoke an agreement for good."""
    _set_status(agreement_id, "revoked", reason)


@partners_cli.command("expire")
def partners_expire() -> None:
    """Mark agreements past their validity expired (and their requests); run daily."""
    from app.services.requests import store as request_store

    count = _run_db(request_store.expire_agreements)
    typer.echo(f"{count} agreement(s) expired")


@staff_cli.command("create")
def staff_create(
    name: Annotated[str, typer.Option(help="Who the client is for.")],
    role: Annotated[
        list[str] | None,
        typer.Option(
            help="officer, committee, secretary, me or admin (repeatable; at least one: "
            "the client's scopes are its roles')."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a staff member with roles: API credentials (the secret printed once) and a
    one-time link to register a passkey for the staff console."""
    from app.services.sharing.rules import split_list
    from app.services.staff import accounts, actors

    settings = get_settings()
    roles = [r for item in role or [] for r in split_list(item)]
    made = _run_db(
        lambda conn: accounts.create(
            conn,
            name,
            roles,
            actor=actors.OPERATOR,
            endpoint="nser staff create",
            origin=settings.staff_origin,
            link_hours=settings.staff_enrol_link_hours,
        )
    )
    # Staff are their API client: the staff id is the client id the audit log records.
    payload: dict[str, object] = {
        "staff_id": made.staff_id,
        "client_id": made.staff_id,
        "client_secret": made.client_secret,
        "enrolment_link": made.link.url,
        "enrolment_link_expires_at": made.link.expires_at.isoformat(),
    }
    _print(payload, as_json)


def _print(payload: dict[str, object], as_json: bool) -> None:
    if as_json:
        _echo_json(payload)
    else:
        for key, value in payload.items():
            typer.echo(f"{key}: {value}")


@staff_cli.command("enrol-link")
def staff_enrol_link(
    staff_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Issue a fresh one-time link to register a passkey (the member's unused links end)."""
    from app.services.staff import accounts, actors

    settings = get_settings()
    link = _run_db(
        lambda conn: accounts.issue_link(
            conn,
            staff_id,
            actor=actors.OPERATOR,
            endpoint="nser staff enrol-link",
            origin=settings.staff_origin,
            hours=settings.staff_enrol_link_hours,
        )
    )
    _print(
        {
            "staff_id": staff_id,
            "enrolment_link": link.url,
            "enrolment_link_expires_at": link.expires_at.isoformat(),
        },
        as_json,
    )


def _switch(staff_id: str, command: str, change: str) -> None:
    from app.services.staff import accounts, actors

    endpoint = f"nser staff {command}"

    async def job(conn: asyncpg.Connection) -> accounts.Member:
        if change in ("disable", "enable"):
            return await accounts.set_disabled(
                conn, staff_id, change == "disable", actor=actors.OPERATOR, endpoint=endpoint
            )
        return await accounts.set_credentials(
            conn, staff_id, change == "on", actor=actors.OPERATOR, endpoint=endpoint
        )

    member = _run_db(job)
    typer.echo(
        f"staff member {member.staff_id}: {'disabled' if member.disabled else 'enabled'}, "
        f"API credentials {'on' if member.credentials_on else 'off'}"
    )


@staff_cli.command("disable")
def staff_disable(staff_id: str) -> None:
    """Disable a staff member: console sessions end and API tokens are refused at once."""
    _switch(staff_id, "disable", "disable")


@staff_cli.command("enable")
def staff_enable(staff_id: str) -> None:
    """Enable a disabled staff member again (sign-in and API tokens work again)."""
    _switch(staff_id, "enable", "enable")


@staff_cli.command("credentials")
def staff_credentials(
    staff_id: str,
    on: Annotated[
        bool,
        typer.Option("--on/--off", help="Turn the member's API client credentials on or off."),
    ],
) -> None:
    """Turn a staff member's API client credentials (client id and secret) on or off; the
    console's passkey sign-in is not affected."""
    _switch(staff_id, "credentials --on" if on else "credentials --off", "on" if on else "off")


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Make a new signing key; tokens of the previous one verify until they expire."""
    from app.auth import keys

    new, old = _run_db(lambda conn: keys.rotate(conn, get_settings()))
    typer.echo(json.dumps({"kid": new, "previous_kid": old}))
    _anchor_at_rotation("nser keys rotate")


@keys_cli.command("rotate-dci")
def keys_rotate_dci() -> None:
    """Make a new Ed25519 key for DCI signatures; the previous one stays in the JWKS a day."""
    from app.services.dci import signing

    new, old = _run_db(lambda conn: signing.rotate(conn, get_settings()))
    typer.echo(json.dumps({"kid": new, "previous_kid": old}))
    _anchor_at_rotation("nser keys rotate-dci")


def _anchor_at_rotation(reason: str) -> None:
    """At a key rotation, anchor the audit chain outside the database (when
    NSER_AUDIT_ANCHOR_DIR is set), saying so on stderr; a refusal ends the command with
    exit 1 (what was rotated stays rotated)."""
    from app.services.audit import anchor

    if anchor.store_of(get_settings()) is None:
        return
    typer.echo(_write_anchor(reason), err=True)


def _write_anchor(reason: str) -> str:
    """Write an audit anchor now; one line on it. Exit 1 when anchoring is off or refused."""
    from app.services.audit import anchor
    from app.services.audit import trail as audit_service
    from app.services.audit.keys import InvalidAuditKeys

    settings = get_settings()
    store = anchor.store_of(settings)
    if store is None:
        fail("NSER_AUDIT_ANCHOR_DIR is not set: anchoring is off")
    try:
        keyring = audit_service.keyring_of(settings)
    except InvalidAuditKeys as exc:
        fail(str(exc))
    try:
        written = _run_db(lambda conn: anchor.write(conn, store, keyring, reason))
    except anchor.AnchorError as exc:
        fail(f"audit anchor not written: {exc}")
    return anchor.summary(written)


dci_cli = typer.Typer(help="An agreement's DCI registration.", no_args_is_help=True)
partners_cli.add_typer(dci_cli, name="dci")


@dci_cli.command("set")
def partners_dci_set(
    agreement_id: str,
    callback_base_url: Annotated[
        str, typer.Option(help="Every DCI callback URL of the agreement lies under it.")
    ],
    jwk_file: Annotated[
        Path | None,
        typer.Option(
            help="The sender's Ed25519 public key, a JWK (OKP/Ed25519) in a JSON file; "
            "then every message must be signed. Without it, none is registered."
        ),
    ] = None,
) -> None:
    """Set (replace) the agreement's DCI registration; audited."""
    import uuid

    from app.services.dci import registration

    try:
        ident = uuid.UUID(agreement_id)
    except ValueError:
        fail(f"not an agreement id: {agreement_id!r}")
    jwk: object = None
    if jwk_file is not None:
        try:
            jwk = json.loads(jwk_file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"cannot read the JWK file: {exc}")
    settings = get_settings()
    made = _run_db(
        lambda conn: registration.register(
            conn, settings, ident, callback_base_url=callback_base_url, public_key=jwk, actor=None
        )
    )
    _echo_json(made.as_json())


@dci_cli.command("show")
def partners_dci_show(agreement_id: str) -> None:
    """The agreement's DCI registration (JSON), or a failure if it has none."""
    import uuid

    from app.services.dci import registration

    try:
        ident = uuid.UUID(agreement_id)
    except ValueError:
        fail(f"not an agreement id: {agreement_id!r}")
    found = _run_db(lambda conn: registration.get(conn, ident))
    if found is None:
        fail(f"agreement {agreement_id} has no DCI registration")
    _echo_json(found.as_json())


audit_cli = typer.Typer(help="The keyed, hash-chained audit log.", no_args_is_help=True)
cli.add_typer(audit_cli, name="audit")


@audit_cli.command("verify")
def audit_verify(
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Walk the whole chain from its first row, ignoring checkpoints (run it "
            "periodically: only it sees an earlier row edited in place).",
        ),
    ] = False,
) -> None:
    """Walk the audit chain, each row with the audit key it names; exit 1 naming the first
    altered, removed or reordered row, a key that is not configured, or a checkpoint that
    does not verify. Incremental: from the last checkpoint on (each successful run records
    one, sealed with the audit key), unless --full. With NSER_AUDIT_ANCHOR_DIR set, first
    checks the newest external anchor: its signature, and that no chain lost anchored
    rows (the newest rows deleted, the table truncated)."""
    from rich.console import Console
    from rich.progress import Progress

    from app.services.audit import anchor
    from app.services.audit import trail as audit_service
    from app.services.audit.keys import InvalidAuditKeys

    settings = get_settings()
    try:
        keyring = audit_service.keyring_of(settings)
    except InvalidAuditKeys as exc:
        fail(str(exc))
    store = anchor.store_of(settings)
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("verifying", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        async def job(
            conn: asyncpg.Connection,
        ) -> tuple[anchor.Check, audit_service.Verdict | None]:
            # The anchor first: a log cut back since it records no checkpoint.
            checked = await anchor.check(conn, store, keyring)
            if checked.problem is not None:
                return checked, None
            return checked, await audit_service.verify(conn, keyring, full=full, progress=progress)

        external, verdict = _run_db(job)
    if external.problem is not None:
        if external.anchor is None:
            fail(f"audit anchor check failed: {external.problem}")
        fail(f"audit chain broken: {external.problem}")
    assert verdict is not None
    if not verdict.ok:
        fail(f"audit chain broken: {verdict.problem}")
    if external.anchor is not None:
        fewer = anchor.short_rows(external.anchor, verdict.heads)
        if fewer is not None:
            fail(f"audit chain broken: {fewer}")
    per_key = ", ".join(f"{key}: {n}" for key, n in sorted(verdict.rows_per_key.items()))
    chains = len(verdict.heads)
    typer.echo(
        f"audit log intact: {verdict.rows} rows in {chains} chain{'s' if chains != 1 else ''}"
        + (f" ({per_key})" if per_key else "")
    )
    since = verdict.since
    if since is None:
        typer.echo(f"checked {verdict.checked} rows from the start")
    else:
        typer.echo(
            f"checked {verdict.checked} rows added since checkpoint {since.id} of "
            f"{since.at.isoformat(timespec='seconds')} (which ended at row {since.last_id}; "
            "`--full` checks every row)"
        )
    if verdict.checkpoint is not None:
        typer.echo(f"checkpoint {verdict.checkpoint} recorded")
    typer.echo(external.note)


@audit_cli.command("anchor")
def audit_anchor() -> None:
    """Write an anchor of the audit chain outside the database, into NSER_AUDIT_ANCHOR_DIR:
    every chain's head and rows, signed with the current audit key's anchor key. Exit 1
    when the log no longer reaches the newest anchor (rows cut off or truncated)."""
    typer.echo(_write_anchor("nser audit anchor"))


@audit_cli.command("new-key")
def audit_new_key() -> None:
    """Print a new audit key entry, ID=SECRET: put it first in NSER_AUDIT_KEYS (keeping the
    others) and restart every process to rotate. With NSER_AUDIT_ANCHOR_DIR set, also
    anchors the chain under the key in use (`nser worker` anchors under the new one at its
    restart)."""
    from app.services.audit.keys import new_entry

    typer.echo(new_entry())
    _anchor_at_rotation("nser audit new-key")


# --- seed and pmt (synthetic registry, scoring) -----------------------------------------
pmt_cli = typer.Typer(help="Proxy means test: current model, re-scoring.", no_args_is_help=True)
cli.add_typer(pmt_cli, name="pmt")


@cli.command("seed")
def seed_registry(
    households: Annotated[int, typer.Option("--households", help="Households to add.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same N and S, same data).")] = 0,
) -> None:
    """Add a deterministic synthetic registry (households, members, scores) with COPY."""
    from rich.progress import Progress

    from app.services.seed import loader as seed_service

    if households < 1:
        fail("--households must be at least 1")
    url = resolve_owner_url(get_settings())  # it drops and rebuilds indexes: the owner
    with Progress(transient=True) as bar:
        tasks = {
            "load": bar.add_task("generating, scoring + COPY", total=households),
            "index": bar.add_task("indexes and keys", total=None),
        }

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(tasks[stage], completed=done, total=total)

        result = _run_db(
            lambda _conn: seed_service.seed_registry(url, households, seed, progress=progress),
            owner=True,
        )
    bands = ", ".join(f"{band} {n}" for band, n in sorted(result.bands.items()))
    typer.echo(
        f"seeded {result.households} households ({result.first_id}..{result.last_id}), "
        f"{result.members} members in {result.seconds:.1f}s "
        f"(load {result.load_seconds:.1f}s, indexes and keys "
        f"{result.seconds - result.load_seconds:.1f}s); bands: {bands}"
    )
    # The public statistics describe the new registry at once, not after the worker's turn.
    products_refresh(full=True)


# --- public products ------------------------------------------------------------------------
products_cli = typer.Typer(help="The public summaries and maps.", no_args_is_help=True)
cli.add_typer(products_cli, name="products")


def _policy(settings: Settings) -> Policy:
    from app.services.disclosure.policy import Policy

    return Policy(
        threshold=settings.suppress_below, rounding_base=settings.disclosure_rounding_base
    )


@products_cli.command("refresh")
def products_refresh(
    full: Annotated[
        bool, typer.Option("--full", help="Count every district again, changed or not.")
    ] = False,
) -> None:
    """Refresh the public cube and its pre-rendered answers now (what the worker does at
    most every NSER_PUBLIC_REFRESH_SECONDS after a change); waits for a refresh running."""
    from rich.progress import Progress

    from app.services.products import cube

    settings = get_settings()
    with Progress(transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(_STAGES.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        done = _run_db(
            lambda conn: cube.refresh_now(conn, _policy(settings), full=full, progress=progress)
        )
    if done is None:
        typer.echo("public products: nothing changed since the last refresh")
        return
    typer.echo(
        f"public products refresh {done.id} ({'full' if done.full else 'incremental'}): "
        f"registry version {done.registry_version}, {done.districts} districts counted, "
        f"{done.answers} answers pre-rendered in {done.seconds:.1f}s"
    )


_STAGES = {
    "districts": "summaries' cube",
    "households": "maps' cube (households)",
    "answers": "pre-rendered answers",
}


@pmt_cli.command("recompute")
def pmt_recompute() -> None:
    """Re-score every household under the current PMT model (history for changes)."""
    from rich.progress import Progress

    from app.services.pmt import model as pmt

    with Progress(transient=True) as bar:
        task = bar.add_task("re-scoring", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        model, changed = _run_db(lambda conn: pmt.recompute(conn, on_progress=progress))
    typer.echo(f"re-scored under {model.version}: {changed} households changed")


@pmt_cli.command("show")
def pmt_show() -> None:
    """Print the current PMT model as JSON."""
    import json

    from app.services.pmt import model as pmt

    model = _run_db(pmt.current_model)
    typer.echo(
        json.dumps(
            {
                "version": model.version,
                "description": model.description,
                "illustrative": model.illustrative,
                "intercept": model.intercept,
                "weights": dict(model.weights),
                "bands": model.bands_json(),
            }
        )
    )


@cli.command("worker")
def worker(
    lease_seconds: Annotated[
        float, typer.Option(help="Seconds after which a dead worker's batch is reclaimed.")
    ] = 60.0,
    poll_seconds: Annotated[float, typer.Option(help="Idle wait between queue polls.")] = 0.5,
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="Stop once the queue is empty.")
    ] = False,
) -> None:
    """Process queued update batches, refresh the public summaries and maps, deliver DCI
    callbacks and anchor the audit chain (a separate process beside the service's own
    workers)."""
    import asyncio
    import signal

    from app.db import asyncpg_target
    from app.logging import configure_logging
    from app.services.audit import anchor as audit_anchor
    from app.services.dci import callbacks as dci_callbacks
    from app.services.dci import jobs as dci_jobs
    from app.services.dci import notify as dci_notify
    from app.services.ingest import worker as ingest_worker
    from app.services.products import cube

    settings = get_settings()
    # The same JSON log lines (CNICs masked) as the service's: claims, stops, retries.
    configure_logging(settings)
    # Session state (staging tables, the refresher's session lock): never through a
    # transaction pooler (NSER_DIRECT_DATABASE_URL).
    resolve_database_url(settings)
    target = asyncpg_target(settings.session_database_url())

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # The public products' refresher beside the batches, on a connection of its own:
        # a steady stream of batches never holds a refresh back.
        refresher = asyncio.create_task(
            cube.run_refresher(
                target.dsn,
                host=target.host,
                policy=_policy(settings),
                interval=settings.public_refresh_seconds,
                stop=stop,
            )
        )
        # The DCI callbacks' delivery loop, with connections of its own.
        deliverer = asyncio.create_task(
            dci_callbacks.run_delivery(target.dsn, settings=settings, host=target.host, stop=stop)
        )
        # The DCI notifier: history matched against the subscriptions (app.services.dci.notify).
        notifier = asyncio.create_task(
            dci_notify.run_notifier(target.dsn, settings=settings, host=target.host, stop=stop)
        )
        # The asynchronous DCI requests (search, txn status), answered by those callbacks.
        dci_runner = asyncio.create_task(
            dci_jobs.run_jobs(target.dsn, settings=settings, host=target.host, stop=stop)
        )
        # The audit chain's external anchors (NSER_AUDIT_ANCHOR_DIR; nothing when unset).
        anchorer = asyncio.create_task(
            audit_anchor.run_anchorer(target.dsn, settings=settings, host=target.host, stop=stop)
        )
        try:
            await ingest_worker.run_worker(
                target.dsn,
                host=target.host,
                lease_seconds=lease_seconds,
                poll_seconds=poll_seconds,
                stop=stop,
                exit_when_idle=exit_when_idle,
                chunk=settings.ingest_chunk_records,
                pipeline=settings.ingest_pipeline,
            )
        finally:
            stop.set()
            await refresher
            await deliverer
            await notifier
            await dci_runner
            await anchorer

    asyncio.run(_main())


DEMO_PARTNER_FILE = "demo-partner.json"


@cli.command()
def demo(
    households: Annotated[int, typer.Option(help="Households in the demo registry.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed of the demo registry.")] = 1,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
) -> None:
    """Demo: migrate, seed a synthetic registry if empty, print what to try, then serve."""
    from app.services.sharing import partners as partner_service

    # The console's passkeys are bound to the origin the browser shows: this demo's port.
    if "NSER_STAFF_ORIGIN" not in os.environ:
        os.environ["NSER_STAFF_ORIGIN"] = f"http://localhost:{port}"
        get_settings.cache_clear()
    settings = get_settings()
    _migrate(settings)
    existing = _run_db(lambda conn: conn.fetchval("SELECT count(*) FROM households"))
    if not existing:
        seed_registry(households=households, seed=seed)  # and its public products
    else:
        products_refresh(full=False)  # what changed since (a first count after an upgrade)
    samples = _run_db(
        lambda conn: conn.fetch(
            """SELECT DISTINCT ON (h.poverty_band) m.cnic, h.poverty_band
             FROM members m JOIN households h ON h.id = m.household_id
            WHERE m.cnic IS NOT NULL AND m.deceased_on IS NULL AND m.relationship = 'head'
            ORDER BY h.poverty_band, h.id"""
        )
    )
    # The demo partner's secret is shown once by the service; keep it beside the demo data.
    credentials_file = settings.data_dir / DEMO_PARTNER_FILE
    partner = json.loads(credentials_file.read_text()) if credentials_file.exists() else {}
    known = partner and _run_db(
        lambda conn: conn.fetchval(
            "SELECT count(*) FROM api_clients WHERE client_id = $1", partner["client_id"]
        )
    )
    if not known:
        spec = partner_service.PartnerSpec(
            name="Demo programme",
            type="government",
            categories=["iii", "iv", "v", "vi"],
            dimensions=["disability", "education"],
            geo_codes=[],
            update_kinds=["member_birth", "member_death", "phone_change", "address_change"],
        )
        made = _run_db(lambda conn: partner_service.create_by_operator(conn, spec))
        partner = {"client_id": made.client_id, "client_secret": made.client_secret}
        credentials_file.parent.mkdir(parents=True, exist_ok=True)
        credentials_file.write_text(json.dumps(partner))
        credentials_file.chmod(0o600)
    staff = _demo_staff(settings.data_dir / DEMO_STAFF_FILE)
    programmes = _run_db(lambda conn: _demo_programmes(conn, partner["client_id"]))
    base = f"http://{host}:{port}"
    typer.echo(f"\nNSER demo registry ready ({existing or households} households).")
    typer.echo(f"Website (English and Urdu): {base}/    ({base}/?lang=ur for Urdu)")
    typer.echo(f"  {base}/check  {base}/statistics  {base}/map  {base}/apply")
    typer.echo(
        f"Public look-up (limits per IP: {settings.public_lookup_limits}), "
        "one CNIC per poverty band:"
    )
    for row in samples:
        cnic = row["cnic"]
        typer.echo(
            f"  curl {base}/v1/public/scores/{cnic[:5]}-{cnic[5:12]}-{cnic[12]}"
            f"    # {row['poverty_band']}"
        )
    typer.echo("Partner API (demo agreement: categories iii, iv, v, vi):")
    typer.echo(
        f"  curl -s -d grant_type=client_credentials -d client_id={partner['client_id']} "
        f"-d client_secret={partner['client_secret']} {base}/v1/auth/token"
    )
    typer.echo(
        f"  curl -H 'Authorization: Bearer TOKEN' "
        f"'{base}/v1/partner/beneficiaries?poverty_band=ultra_poor&limit=2'"
    )
    typer.echo("DCI Social Registry API (the same agreement; a household by a member's CNIC):")
    typer.echo(
        f"  curl -s -H 'Authorization: Bearer TOKEN' -H 'Content-Type: application/json' "
        f"-d '{json.dumps(_demo_dci_search(samples[0]['cnic']), separators=(',', ':'))}' "
        f"{base}/dci/registry/sync/search"
    )
    typer.echo(f"Programmes the demo agreement names ({', '.join(programmes)}):")
    typer.echo(
        f"  curl -H 'Authorization: Bearer TOKEN' "
        f"{base}/v1/partner/programmes/{programmes[0]}/eligibility/{samples[0]['cnic']}"
    )
    typer.echo(
        f"  curl -H 'Authorization: Bearer TOKEN' -H 'Accept: application/x-ndjson' "
        f"{base}/v1/partner/programmes/{programmes[0]}/beneficiaries"
    )
    typer.echo("Data-sharing request: apply (no credentials), then follow the status_url:")
    typer.echo(
        f"  curl -s -H 'Content-Type: application/json' -d '{json.dumps(DEMO_REQUEST_FORM)}' "
        f"{base}/v1/requests"
    )
    typer.echo("Staff (demo staff: officer, committee, secretary and M&E roles):")
    typer.echo(
        f"  curl -s -d grant_type=client_credentials -d client_id={staff['client_id']} "
        f"-d client_secret={staff['client_secret']} {base}/v1/auth/token"
    )
    typer.echo(
        "  curl -s -X POST -H 'Authorization: Bearer STAFF_TOKEN' "
        "-H 'Content-Type: application/json' -d '{}' "
        f"{base}/v1/staff/requests/REFERENCE/actions/start_review"
    )
    typer.echo(
        "  then review, record_interview, recommend, approve and sign (docs/api.md has each "
        f"body); GET {base}/v1/staff/requests/REFERENCE/quote prices it"
    )
    links = _demo_console_links(settings, staff["client_id"])
    typer.echo(
        f"Staff console with passkeys ({settings.staff_origin}/staff/; browsers offer passkeys "
        "on localhost, not on 127.0.0.1). One-time links to register a passkey, new each run:"
    )
    typer.echo(f"  the demo staff member:   {links[0]}")
    typer.echo(f"  the demo administrator:  {links[1]}")
    typer.echo(f"  then sign in at {settings.staff_origin}/staff/sign-in")
    typer.echo(f"API docs: {base}/docs\n")
    serve(host=host, port=port, workers=1, migrate_db=False, demo=True)


def _demo_dci_search(cnic: str) -> dict[str, Any]:
    """A DCI sync search for the household of ``cnic`` (``idtype-value``, the standard's UIN)."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return {
        "header": {
            "version": "1.0.0",
            "message_id": "demo-1",
            "message_ts": now,
            "action": "search",
            "sender_id": "demo.example.org",
            "total_count": 1,
        },
        "message": {
            "transaction_id": "demo-t1",
            "search_request": [
                {
                    "reference_id": "demo-r1",
                    "timestamp": now,
                    "search_criteria": {
                        "query_type": "idtype-value",
                        "query": {"type": "UIN", "value": cnic},
                    },
                }
            ],
        },
    }


async def _demo_programmes(conn: asyncpg.Connection, client_id: str) -> list[str]:
    """The two publicly reported programmes, named by the demo partner's agreement."""
    from app.services.programmes.demo import ensure_demo_programmes

    agreement = await conn.fetchval(
        "SELECT agreement_id FROM api_clients WHERE client_id = $1", client_id
    )
    return await ensure_demo_programmes(conn, agreement)


DEMO_STAFF_FILE = "demo-staff.json"
DEMO_REQUEST_FORM = {
    "organization": {
        "name": "Demo Research Institute",
        "type": "academic",
        "contact_name": "Demo Contact",
        "email": "contact@demo.example.pk",
        "phone": "+92 51 1234567",
        "address": "Islamabad",
    },
    "purpose": "Poverty research",
    "extent_of_use": "Two researchers",
    "period": {"start": "2027-01-01", "end": "2027-12-31"},
    "storage": "vpn",
    "categories": ["iv"],
    "methodology": "Descriptive statistics",
    "security_measures": "Encrypted laptop",
}


def _demo_staff(path: Path) -> dict[str, str]:
    """The demo's staff client, holding every workflow role; made once, kept beside the data."""
    from app.services.sharing import partners as partner_service

    staff: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    known = staff and _run_db(
        lambda conn: conn.fetchval(
            "SELECT count(*) FROM api_clients WHERE client_id = $1", staff["client_id"]
        )
    )
    if not known:
        roles = ["officer", "committee", "secretary", "me"]
        made = _run_db(lambda conn: partner_service.create_staff_client(conn, "Demo staff", roles))
        staff = {"client_id": made.client_id, "client_secret": made.client_secret}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(staff))
        path.chmod(0o600)
    return staff


DEMO_ADMIN_FILE = "demo-admin.json"


def _demo_console_links(settings: Settings, staff_id: str) -> tuple[str, str]:
    """Fresh enrolment links for the demo staff member and the demo administrator (made
    once, with the admin role only, kept beside the data)."""
    from app.errors import Conflict
    from app.services.staff import accounts, actors

    path = settings.data_dir / DEMO_ADMIN_FILE
    admin: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    known = admin and _run_db(
        lambda conn: conn.fetchval(
            "SELECT count(*) FROM api_clients WHERE client_id = $1", admin["staff_id"]
        )
    )
    hours = settings.staff_enrol_link_hours

    async def fresh(conn: asyncpg.Connection, member: str) -> str:
        try:
            link = await accounts.issue_link(
                conn,
                member,
                actor=actors.OPERATOR,
                endpoint="nser demo",
                origin=settings.staff_origin,
                hours=hours,
            )
        except Conflict:  # disabled in the console: it stays so
            return "(disabled: enable the member first)"
        return link.url

    async def links(conn: asyncpg.Connection) -> tuple[str, str]:
        nonlocal admin
        staff_link = await fresh(conn, staff_id)
        if known:
            return staff_link, await fresh(conn, admin["staff_id"])
        made = await accounts.create(
            conn,
            "Demo administrator",
            ["admin"],
            actor=actors.OPERATOR,
            endpoint="nser demo",
            origin=settings.staff_origin,
            link_hours=hours,
        )
        admin = {"staff_id": made.staff_id}
        return staff_link, made.link.url

    made_links = _run_db(links)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(admin))
    return made_links


def main() -> None:
    from pydantic import ValidationError

    from app.settings import UnknownSetting, explain

    # Configuration is input: an unknown NSER_* name or a value out of range ends every
    # command (help aside) before it does anything, in one line without a traceback.
    if len(sys.argv) > 1 and not {"--help", "-h"} & set(sys.argv[1:]):
        try:
            get_settings()
        except (UnknownSetting, ValidationError) as exc:
            typer.echo(f"error: {explain(exc)}", err=True)
            sys.exit(1)
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
