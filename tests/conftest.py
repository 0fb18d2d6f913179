"""Test infrastructure: a fresh PostgreSQL database per test session, migrated by Alembic.

Tests run against the real PostgreSQL and Redis of the machine (NSER_TEST_ADMIN_URL,
NSER_TEST_REDIS_URL); if either is unreachable the session fails instead of skipping.

The databases made here have the two roles of a production set-up: the admin role owns the
schema (migrations, `nser seed`, and the tests' own checks through the URL they are given),
and the service — the app of ``make_settings`` and every other ``nser`` command of
``run_cli`` — connects as the restricted role ``nser_service`` (``service_url``), which
``nser db upgrade`` grants what it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import hypothesis
import psutil
import pytest
import redis

from app.main import create_app
from app.settings import Settings

# No Hypothesis test has a per-example deadline: on a machine busy with other work any
# deadline is a coin toss. Tests that set their own settings inherit this profile.
hypothesis.settings.register_profile("nser", deadline=None)
hypothesis.settings.load_profile("nser")

ADMIN_URL = os.environ.get("NSER_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("NSER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent
# The service's login role on the machine's PostgreSQL (shared by the suite's databases; a
# role belongs to the whole server). It connects the way the admin role does (no password).
SERVICE_ROLE = "nser_service"
# Databases made by create_database: their service runs as SERVICE_ROLE.
_TWO_ROLE_DATABASES: set[str] = set()


def _database_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def with_user(url: str, user: str) -> str:
    """``url`` with its user (and password) replaced by ``user``."""
    scheme, _, rest = url.partition("://")
    _, at, host = rest.rpartition("@")
    return f"{scheme}://{user}@{host if at else rest}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _database_name(url: str) -> str:
    return url.rpartition("/")[2].partition("?")[0]


def service_url(url: str) -> str:
    """The URL the service connects with to ``url``'s database: as SERVICE_ROLE for the
    databases made by create_database, else ``url`` itself (one role, as before)."""
    name = _database_name(url)
    return with_user(_database_url(name), SERVICE_ROLE) if name in _TWO_ROLE_DATABASES else url


def owner_url(url: str) -> str:
    """The owner's URL of ``url``'s database ("" when the service's role is the owner)."""
    name = _database_name(url)
    return _database_url(name) if name in _TWO_ROLE_DATABASES else ""


_CREATE_SERVICE_ROLE = f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') THEN
        CREATE ROLE {SERVICE_ROLE} LOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- another session made it
END $$
"""


def create_database(revision: str = "heads") -> str:
    """A new empty database, migrated (to head unless told) by the CLI as its owner, its
    service's role granted; returns the owner's URL."""
    name = f"nser_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    _TWO_ROLE_DATABASES.add(name)
    url = _database_url(name)
    run_cli(["db", "upgrade", "--revision", revision], url)
    return url


def drop_database(url: str) -> None:
    name = url.rpartition("/")[2]
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def fresh_database(households: int = 0, seed: int = 0) -> Iterator[str]:
    """A database of its own for a module, migrated (and seeded if asked), dropped after."""
    url = create_database()
    try:
        if households:
            run_cli(["seed", "--households", str(households), "--seed", str(seed)], url)
        yield url
    finally:
        drop_database(url)


def cli_env(url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "NSER_DATABASE_URL": service_url(url),
        "NSER_OWNER_DATABASE_URL": owner_url(url),
        "NSER_ENVIRONMENT": "test",
        "NSER_LOG_JSON": "true",
    }
    env.update(extra)
    return env


def run_cli(
    args: list[str], url: str, *, check: bool = True, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``nser ARGS`` as an operator would, against the database at ``url`` (as the
    service's role, and as the owner for `db` and `seed`)."""
    result = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=cli_env(url, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"nser {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


# Every process a test starts inherits this mark (test environments copy os.environ), so the
# session can find what its tests left running, even processes that detached themselves.
SESSION_MARK = "PYTEST_NSER_SESSION"
os.environ[SESSION_MARK] = uuid.uuid4().hex


def _leftover_processes(basetemp: Path | None) -> list[psutil.Process]:
    """Processes still alive that this session started: children of pytest, processes that
    carry the session's mark, and processes running from the session's temp folder."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True)}
    for process in psutil.process_iter():
        if process.pid == me.pid or process.pid in found:
            continue
        try:
            marked = process.environ().get(SESSION_MARK) == os.environ[SESSION_MARK]
            in_temp = basetemp is not None and f"{basetemp}{os.sep}" in " ".join(process.cmdline())
        except psutil.Error:  # gone, a zombie, or not ours to read
            continue
        if marked or in_temp:
            found[process.pid] = process
            with contextlib.suppress(psutil.Error):  # and what it started
                found.update((child.pid, child) for child in process.children(recursive=True))
    alive = []
    for process in found.values():
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            pass
    return alive


def _describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid}: {' '.join(process.cmdline()).strip()[:200]}"
    except psutil.Error:
        return f"pid {process.pid}"


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a test left a process running (servers, workers, embedded PostgreSQL).

    Each fixture stops what it started; this check makes a forgotten one fail the suite
    instead of leaving servers behind on the machine. The leftovers are then stopped.
    """
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)
    deadline = time.monotonic() + 10  # let processes that are shutting down finish
    while (leftovers := _leftover_processes(basetemp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not leftovers:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [_describe(process) for process in leftovers]
    if reporter is not None:
        reporter.write_line("")
        reporter.write_sep("=", "processes left running by the tests (session fails)", red=True)
        for line in lines:
            reporter.write_line(line)
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, still_alive = psutil.wait_procs(leftovers, timeout=10)
    for process in still_alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# The modules that take longest, first: with the suite spread over several processes
# (make test: pytest-xdist, one module per process at a time), a long module started last
# would leave the other processes idle at the end (make test keeps this order with
# --no-loadscope-reorder). Measured with --durations.
SLOW_FIRST = (
    "service/test_schemathesis.py",
    "service/test_wheel.py",
    "audit/test_audit_keys.py",
    "sharing/test_partner_beneficiaries.py",
    "ingest/test_updates_crash.py",
    "faults/test_fault_pg_stop.py",
    "ingest/test_updates_suspension.py",
    "web/test_apply.py",
    "targeting/test_targeting_api.py",
    "sharing/test_asof.py",
    "programmes/test_programmes.py",
    "seed/test_seed.py",
    "ingest/test_updates_privacy.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    tests = ROOT / "tests"

    def order(item: pytest.Item) -> int:
        return rank.get(item.path.relative_to(tests).as_posix(), len(rank))

    items.sort(key=order)  # stable: the rest keep their order


def pytest_sessionstart(session: pytest.Session) -> None:
    try:
        asyncio.run(_admin(_CREATE_SERVICE_ROLE))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.exit(f"PostgreSQL unreachable at {ADMIN_URL}: {exc}", returncode=3)
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis unreachable at {REDIS_URL}: {exc}", returncode=3)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """One migrated database shared by the session's tests (seeded lazily by fixtures)."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def seeded_url(database_url: str) -> str:
    """The session database with a small deterministic synthetic registry."""
    run_cli(["seed", "--households", "3000", "--seed", "7"], database_url)
    return database_url


def make_settings(url: str, **overrides: Any) -> Settings:
    """The service's settings for ``url``'s database (connecting as its service's role)."""
    values: dict[str, Any] = {
        "database_url": service_url(url),
        "environment": "test",
        "public_lookup_limits": "1000/minute",
        "log_json": True,
    }
    values.update(overrides)
    return Settings(**values)


async def open_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://nser.test") as c:
            yield c


@pytest.fixture(scope="session")
async def client(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the app on the seeded database."""
    async for c in open_client(make_settings(seeded_url)):
        yield c


@pytest.fixture(scope="session")
async def db(seeded_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection for independent checks (counts, checksums)."""
    conn = await asyncpg.connect(seeded_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def site_database() -> Iterator[str]:
    """The website's registry (tests/web): 2,000 households of its own."""
    with fresh_database(households=2000, seed=11) as url:
        yield url


# The website's browser fixtures (tests/web/fixtures.py), started only by the tests that ask.
from web.fixtures import (  # noqa: E402
    browser,
    known_member,
    new_page,
    page,
    phone_page,
    playwright,
    site,
)

__all__ = ["browser", "known_member", "new_page", "page", "phone_page", "playwright", "site"]
