"""Redis stopped, then stalled (``DEBUG SLEEP``), under `nser serve`'s rate limits.

The rate limits' counts live in a Redis of the test's own (``redis-server`` on a free port;
the machine's shared Redis is never stopped). The public look-up (the service's own check,
app/rate_limit.py ``hit``) and the token endpoint (slowapi) are asked throughout:

- **stopped**: every request is still answered, as fast as before; the look-up's limit
  (30 a minute here) is counted per process in memory: exactly 30 answers of 200, then 429
  with Retry-After;
- **started again**: the counts go back to Redis by themselves (the figure: how long after
  the start);
- **stalled** (the server frozen by ``DEBUG SLEEP 8``): every request is answered in a
  fraction of the stall, since each Redis call gives up after 0.25 s and the process then
  counts in memory (the figures: median and slowest answer, against those with Redis up).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from conftest import cli_env
from server import free_port, serve

pytestmark = pytest.mark.slow

LIMIT = 30  # look-ups a minute from one address
STALL_SECONDS = 8
# An answer during the stall must come well inside it: Redis is given up after 0.25 s.
STALL_BOUND = 3.0


def start_redis(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is missing: `make redis-deps` installs it")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            # DEBUG SLEEP, from this machine only (Redis 7).
            "--enable-debug-command",
            "local",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            return process
        except redis.RedisError:
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


def stop_redis(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stall(port: int, out: list[object]) -> None:
    """``DEBUG SLEEP``: the server answers nothing until it ends; its reply in ``out``."""
    try:
        r = redis.Redis(port=port, socket_timeout=STALL_SECONDS + 10)
        out.append(r.execute_command("DEBUG", "SLEEP", STALL_SECONDS))
    except redis.RedisError as exc:
        out.append(exc)


@dataclass
class Answer:
    kind: str  # "lookup" or "token"
    seconds: float
    status: int
    retry_after: str | None


async def ask(client: httpx.AsyncClient, cnic: str, *, token: bool = False) -> Answer:
    """A public look-up, or (``token``) a token request with unknown credentials (401)."""
    start = time.monotonic()
    if token:
        r = await client.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"},
        )
    else:
        r = await client.get(f"/v1/public/scores/{cnic}")
    return Answer(
        "token" if token else "lookup",
        time.monotonic() - start,
        r.status_code,
        r.headers.get("retry-after"),
    )


async def phase(client: httpx.AsyncClient, cnic: str, lookups: int) -> list[Answer]:
    """``lookups`` look-ups one after the other, and a token request after every tenth."""
    answers = []
    for i in range(lookups):
        answers.append(await ask(client, cnic))
        if i % 10 == 0:
            answers.append(await ask(client, cnic, token=True))
    return answers


def of(answers: list[Answer], kind: str) -> list[Answer]:
    return [a for a in answers if a.kind == kind]


async def test_redis_stopped_and_stalled(seeded_url: str, tmp_path: Path) -> None:
    url = seeded_url  # the session's registry: only read here
    conn = await asyncpg.connect(url)
    try:
        cnic = await conn.fetchval(
            "SELECT cnic FROM members WHERE cnic IS NOT NULL AND deceased_on IS NULL"
            " ORDER BY id LIMIT 1"
        )
    finally:
        await conn.close()
    port = free_port()
    rds = start_redis(port, tmp_path)
    env = cli_env(
        url,
        NSER_RATE_LIMIT_STORAGE=f"redis://127.0.0.1:{port}/0",
        NSER_PUBLIC_LOOKUP_LIMITS=f"{LIMIT}/minute",
        NSER_TOKEN_LIMITS="100000/minute",
        NSER_IN_PROCESS_WORKERS="0",
    )
    try:
        with serve(env, tmp_path, workers=1, startup_timeout=180) as service:
            async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as client:
                # Redis up: a few look-ups, counted in Redis.
                up = await phase(client, cnic, 5)
                assert {a.status for a in of(up, "lookup")} == {200}, up
                assert {a.status for a in of(up, "token")} == {401}, up
                assert redis.Redis(port=port).dbsize() > 0, "nothing counted in Redis"

                # Stopped: answered, counted per process in memory.
                stop_redis(rds)
                stopped = await phase(client, cnic, LIMIT + 10)
                statuses = [a.status for a in of(stopped, "lookup")]
                assert statuses == [200] * LIMIT + [429] * 10, Counter(statuses)
                assert all(a.retry_after for a in stopped if a.status == 429)
                assert {a.status for a in of(stopped, "token")} == {401}

                # Started again (empty): the counts go back to Redis.
                rds = start_redis(port, tmp_path)
                started = time.monotonic()
                while redis.Redis(port=port).dbsize() == 0:
                    assert time.monotonic() - started < 30, "the counts never went back to Redis"
                    await ask(client, cnic)
                    await asyncio.sleep(0.1)
                back_s = time.monotonic() - started

                # Stalled: DEBUG SLEEP freezes the server; every answer comes well inside it.
                slept: list[object] = []
                sleeper = threading.Thread(target=stall, args=(port, slept))
                sleeper.start()
                await asyncio.sleep(0.2)  # the command is running
                stall_started = time.monotonic()
                stalled: list[Answer] = []
                while time.monotonic() - stall_started < STALL_SECONDS - 3:
                    stalled += await phase(client, cnic, 10)
                sleeper.join()
                assert slept == [b"OK"], slept
            assert service.process.poll() is None
    finally:
        stop_redis(rds)

    assert {a.status for a in stalled} <= {200, 401, 429}, Counter(a.status for a in stalled)
    assert all(a.retry_after for a in stalled if a.status == 429)
    slowest = max(a.seconds for a in stalled)
    assert slowest < STALL_BOUND, f"an answer took {slowest:.2f} s during a {STALL_SECONDS} s stall"

    def figures(answers: list[Answer]) -> str:
        def ms(kind: str) -> str:
            times = [a.seconds * 1000 for a in of(answers, kind)]
            return f"median {statistics.median(times):.0f} ms, slowest {max(times):.0f} ms"

        return f"look-ups {ms('lookup')}; token requests {ms('token')}"

    print(
        f"\nredis: up {figures(up)}; stopped {figures(stopped)}, {LIMIT} look-ups answered"
        f" 200 then 429 (the per-process budget); back in Redis {back_s:.1f} s after it"
        f" started again; stalled {STALL_SECONDS} s: {len(stalled)} requests answered,"
        f" {figures(stalled)}",
        flush=True,
    )
