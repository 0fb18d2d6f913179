"""``nser serve`` refuses what is only safe in a demo, and says what to set instead.

- the public development key-encryption secret is accepted only in demo mode (``--demo``,
  ``nser demo``, or NSER_ENVIRONMENT=test);
- several workers need a shared rate-limit storage (Redis) outside demo mode: in memory
  each worker would keep its own budgets (doubling them) and its own record of used
  proof-of-work solutions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from server import ROOT, _stop, free_port, serve

from app.settings import DEV_SECRET

SECRET = "a-real-secret-for-this-test-only-0123456789abcdef"


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("NSER_")}
    env.update(
        NSER_DATABASE_URL=database_url,
        NSER_ENVIRONMENT="development",
        NSER_LOG_JSON="true",
        NSER_IN_PROCESS_WORKERS="0",
    )
    env.update(extra)
    return env


def refusal(env: dict[str, str], *args: str) -> str:
    """Run ``nser serve ARGS``; it must exit 1 before serving. Returns what it said."""
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            while process.poll() is None:
                try:
                    answered = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                except httpx.TransportError:
                    time.sleep(0.2)
                    continue
                raise AssertionError(f"nser serve started (/healthz {answered.status_code})")
        finally:
            _stop(process)
        output, _ = process.communicate()
    assert process.returncode == 1, output
    return output


def test_the_development_secret_is_refused_outside_a_demo(database_url: str) -> None:
    said = refusal(_env(database_url), "--workers", "1")
    assert "NSER_KEY_ENCRYPTION_SECRET" in said
    assert "--demo" in said
    # Set explicitly to the public value, it is refused the same way.
    said = refusal(_env(database_url, NSER_KEY_ENCRYPTION_SECRET=DEV_SECRET), "--workers", "1")
    assert "NSER_KEY_ENCRYPTION_SECRET" in said


def test_several_workers_with_memory_limits_are_refused(database_url: str) -> None:
    env = _env(database_url, NSER_KEY_ENCRYPTION_SECRET=SECRET)
    said = refusal(env, "--workers", "2")
    assert "NSER_RATE_LIMIT_STORAGE" in said
    assert "redis://" in said
    said = refusal({**env, "NSER_RATE_LIMIT_STORAGE": "memory://"}, "--workers", "3")
    assert "NSER_RATE_LIMIT_STORAGE" in said


def test_a_demo_may_use_the_development_secret_and_memory(
    database_url: str, tmp_path: Path
) -> None:
    env = _env(database_url)
    with serve(env, tmp_path, workers=2, args=["--demo"]) as server:
        assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
