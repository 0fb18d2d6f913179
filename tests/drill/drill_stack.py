"""The registry on the HA cluster: roles, schema, a seeded registry, a partner, and the
`nser` processes, all through the libpq multi-host URL (``target_session_attrs=read-write``).

Shared by the drill (tests/drill/test_failover.py) and bench/failover_sync.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import asyncpg
import httpx
from ha_cluster import ROOT, HACluster

SERVE_PORT = 5570


def base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful), SIGKILL if it hangs, then anything left in its session."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def nser(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``nser ARGS`` running in the background until the block ends, its output in ``log``."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


def run_nser(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"nser {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


async def _create_roles(cluster: HACluster, owner: str, service: str) -> None:
    conn = await asyncpg.connect(cluster.superuser_url())
    try:
        await conn.execute(f"CREATE ROLE nser_owner LOGIN PASSWORD '{owner}'")
        await conn.execute(f"CREATE ROLE nser_service LOGIN PASSWORD '{service}'")
        await conn.execute("CREATE DATABASE nser OWNER nser_owner")
    finally:
        await conn.close()


def database(cluster: HACluster) -> dict[str, str]:
    """The two roles and their database, migrated; returns the services' environment (both
    URLs name both nodes)."""
    owner, service = secrets.token_hex(12), secrets.token_hex(12)
    asyncio.run(_create_roles(cluster, owner, service))
    env = {
        **os.environ,
        "NSER_ENVIRONMENT": "production",
        "NSER_DATABASE_URL": cluster.url("nser_service", service, "nser"),
        "NSER_OWNER_DATABASE_URL": cluster.url("nser_owner", owner, "nser"),
        "NSER_KEY_ENCRYPTION_SECRET": secrets.token_urlsafe(48),
        "NSER_LOG_JSON": "true",
        # Every request of the drill comes from one address.
        "NSER_PUBLIC_LOOKUP_LIMITS": "1000000/minute",
        # Batches are applied by a separate `nser worker` only.
        "NSER_IN_PROCESS_WORKERS": "0",
        # The public products' refresh is not what is measured: not every minute.
        "NSER_PUBLIC_REFRESH_SECONDS": "3600",
    }
    run_nser(["db", "upgrade"], env)
    return env


def registry(cluster: HACluster, households: int, categories: str) -> dict[str, str]:
    """:func:`database` seeded with ``households``, and a partner (its JSON in
    ``DRILL_PARTNER``) with ``categories`` that may send phone changes."""
    env = database(cluster)
    run_nser(["seed", "--households", str(households), "--seed", "18"], env)
    partner = run_nser(
        [
            "partners",
            "create",
            "--json",
            "--name",
            "Drill Programme",
            "--type",
            "government",
            "--categories",
            categories,
            "--update-kinds",
            "phone_change",
            "--rate-limit",
            "1000000/minute",
        ],
        env,
    )
    env["DRILL_PARTNER"] = partner.strip()
    return env


def partner_of(env: dict[str, str]) -> dict[str, str]:
    created: dict[str, str] = json.loads(env["DRILL_PARTNER"])
    return created


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"exited:\n{log.read_text()[-4000:]}"
            with suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.2)
    raise AssertionError(f"{url} not ready in {timeout} s:\n{log.read_text()[-4000:]}")


@contextmanager
def serving(
    env: dict[str, str], root: Path, port: int = SERVE_PORT
) -> Iterator[subprocess.Popen[bytes]]:
    """`nser serve` on ``port`` (one process), ready; its log is serve-PORT.log."""
    log = root / f"serve-{port}.log"
    with nser(["serve", "--port", str(port), "--workers", "1"], env, log) as process:
        wait_http(f"{base_url(port)}/readyz", 60, process, log)
        yield process


async def token(client: httpx.AsyncClient, partner: dict[str, str]) -> str:
    r = await client.post(
        "/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": partner["client_id"],
            "client_secret": partner["client_secret"],
        },
    )
    assert r.status_code == 200, r.text
    access: str = r.json()["access_token"]
    return access
