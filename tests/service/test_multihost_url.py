"""A database URL naming several hosts, as in front of a Patroni cluster (docs/operations.md,
"Failover (Patroni)"): ``postgresql://user@h1:5432,h2:5432/db?target_session_attrs=read-write``.

asyncpg reads that URL as it is (the raw pool, the workers, the CLI); SQLAlchemy (the engine,
Alembic) needs it rewritten (``app.db.sqlalchemy_url``). Against the machine's PostgreSQL,
behind a first host that refuses connections:

- migrating, serving and looking up work through it;
- while every host answers but none accepts writes (the database made read-only, as a
  standby is: asyncpg's TargetServerAttributeNotMatched), the look-up and a partner read
  answer 503 with Retry-After, never 500, and the same app answers 200 again once a host
  accepts writes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from conftest import ADMIN_URL, ROOT, SERVICE_ROLE, fresh_database, open_client
from partner_helpers import bearer, create_partner, get_token

from app.db import sqlalchemy_url
from app.settings import Settings

# Nothing listens here (a port of the range the failover drill owns, unused by the suite).
CLOSED = "127.0.0.1:5599"
SERVER = urlsplit(ADMIN_URL).netloc.rpartition("@")[2]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://u:p%40ss@h1:5541,h2:5542/nser?target_session_attrs=read-write",
            "postgresql+asyncpg://u:p%40ss@/nser?host=h1:5541&host=h2:5542"
            "&target_session_attrs=read-write",
        ),
        ("postgresql://u@h1,h2:5433/db", "postgresql+asyncpg://u@/db?host=h1:5432&host=h2:5433"),
        ("postgresql://h1:1,h2:2/db", "postgresql+asyncpg:///db?host=h1:1&host=h2:2"),
        ("postgresql://u@h1:5432/db", "postgresql+asyncpg://u@h1:5432/db"),
        ("postgresql://u@/db?host=/run/pg", "postgresql+asyncpg://u@/db?host=/run/pg"),
        ("postgresql+asyncpg://u@h1:5432/db", "postgresql+asyncpg://u@h1:5432/db"),
    ],
)
def test_sqlalchemy_url(url: str, expected: str) -> None:
    assert sqlalchemy_url(url) == expected


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=200, seed=4) as db:
        yield db


def multi_host(url: str, user: str, hosts: str = f"{CLOSED},{SERVER}") -> str:
    name = url.rpartition("/")[2]
    return f"postgresql://{user}@{hosts}/{name}?target_session_attrs=read-write"


def test_migrate_through_a_multi_host_url(url: str) -> None:
    env = {
        **os.environ,
        "NSER_ENVIRONMENT": "test",
        "NSER_OWNER_DATABASE_URL": multi_host(url, urlsplit(ADMIN_URL).username or "postgres"),
        "NSER_DATABASE_URL": multi_host(url, SERVICE_ROLE),
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "database at heads" in done.stdout + done.stderr


@asynccontextmanager
async def app(url: str, hosts: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process on the service's multi-host URL over ``hosts``."""
    settings = Settings(
        database_url=multi_host(url, SERVICE_ROLE, hosts),
        environment="test",
        public_lookup_limits="1000/minute",
        in_process_workers=0,
    )
    running = open_client(settings)
    client = await anext(running)
    try:
        yield client
    finally:
        await running.aclose()


async def _some_cnic(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        cnic: str = await conn.fetchval(
            "SELECT cnic FROM members WHERE cnic IS NOT NULL AND deceased_on IS NULL LIMIT 1"
        )
        return cnic
    finally:
        await conn.close()


async def test_serve_through_a_multi_host_url(url: str) -> None:
    """The first host refuses connections: the service uses the second."""
    cnic = await _some_cnic(url)
    async with app(url, f"{CLOSED},{SERVER}") as api:
        assert (await api.get("/readyz")).status_code == 200
        r = await api.get(f"/v1/public/scores/{cnic}")
        assert r.status_code == 200, r.text


async def _read_only(url: str, on: bool) -> None:
    """New sessions of the database read-only (as on a standby) or not; the service's
    sessions cut, so that its pool reconnects."""
    name = url.rpartition("/")[2]
    conn = await asyncpg.connect(ADMIN_URL)  # not the database itself: read-only meanwhile
    try:
        if on:
            await conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        else:
            await conn.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE datname = $1 AND usename = $2",
            name,
            SERVICE_ROLE,
        )
    finally:
        await conn.close()


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


async def test_no_writable_host_is_503_then_200(url: str) -> None:
    cnic = await _some_cnic(url)
    # Both hosts answer (the same server twice): with none writable, asyncpg has no
    # connection error to report and raises TargetServerAttributeNotMatched.
    messages = _Messages()
    errors = logging.getLogger("nser.errors")
    errors.addHandler(messages)
    try:
        async with app(url, f"{SERVER},{SERVER}") as api:
            await _check_503_then_200(url, api, cnic, messages)
    finally:
        errors.removeHandler(messages)


async def _check_503_then_200(
    url: str, api: httpx.AsyncClient, cnic: str, messages: _Messages
) -> None:
    partner = create_partner(url, name="Multi Host", categories="iv")
    headers = bearer(await get_token(api, partner["client_id"], partner["client_secret"]))
    lookup, listing = f"/v1/public/scores/{cnic}", "/v1/partner/beneficiaries?limit=1"

    assert (await api.get("/readyz")).status_code == 200
    assert (await api.get(lookup)).status_code == 200
    assert (await api.get(listing, headers=headers)).status_code == 200

    await _read_only(url, True)
    try:
        for _ in range(3):  # a cut connection first, then no host accepting writes
            for r in (await api.get(lookup), await api.get(listing, headers=headers)):
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "5"
                assert r.headers["content-type"] == "application/problem+json"
        # The answers came from asyncpg finding no writable host, not from a cut connection.
        assert "database unavailable: TargetServerAttributeNotMatched" in messages.seen
    finally:
        await _read_only(url, False)

    r = await api.get(lookup)
    assert r.status_code == 200, r.text
    assert (await api.get(listing, headers=headers)).status_code == 200
