"""Fair-usage limits: 429 + Retry-After, trusted proxies only, Redis shared and Redis down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import REDIS_URL, make_settings
from lookup_data import LIVING, UNKNOWN, insert_known_members
from server import serve

from app.main import create_app
from app.rate_limit import forwarded_client

SCORE = f"/v1/public/scores/{LIVING}"


async def app_client(
    url: str, peer: str = "203.0.113.10", **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(url, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://nser.test") as c:
            yield c


@pytest.fixture(scope="module")
async def known(database_url: str) -> str:
    await insert_known_members(database_url)
    return database_url


async def test_429_with_retry_after_after_the_limit(known: str) -> None:
    async for client in app_client(known, public_lookup_limits="3/minute"):
        # Unknown CNICs count too: the limit is what stops enumeration.
        statuses = [
            (await client.get(path)).status_code
            for path in (SCORE, f"/v1/public/scores/{UNKNOWN}", SCORE)
        ]
        assert statuses == [200, 404, 200]
        response = await client.get(SCORE)
        assert response.status_code == 429
        assert response.headers["content-type"] == "application/problem+json"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.json()["status"] == 429
        # A different CNIC in the path does not reset the count.
        assert (await client.get(f"/v1/public/scores/{UNKNOWN}")).status_code == 429


async def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored(known: str) -> None:
    async for client in app_client(
        known, public_lookup_limits="2/minute", trusted_proxies=["10.0.0.0/8"]
    ):
        statuses = [
            (await client.get(SCORE, headers={"X-Forwarded-For": f"198.51.100.{i}"})).status_code
            for i in range(3)
        ]
        assert statuses == [200, 200, 429]


async def test_forwarded_for_from_trusted_proxy_selects_the_client(known: str) -> None:
    async for client in app_client(
        known, peer="10.1.2.3", public_lookup_limits="2/minute", trusted_proxies=["10.0.0.0/8"]
    ):

        async def as_client(chain: str, c: httpx.AsyncClient = client) -> int:
            return (await c.get(SCORE, headers={"X-Forwarded-For": chain})).status_code

        assert await as_client("198.51.100.7") == 200
        # The left-most hop is the client's own claim; the proxy appended the real address.
        assert await as_client("6.6.6.6, 198.51.100.7, 10.9.9.9") == 200
        assert await as_client("198.51.100.7") == 429
        assert await as_client("198.51.100.8") == 200


def test_forwarded_client_rules() -> None:
    import ipaddress

    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    assert forwarded_client("203.0.113.1", ["1.1.1.1"], trusted) == "203.0.113.1"
    assert forwarded_client("10.0.0.1", ["1.1.1.1"], trusted) == "1.1.1.1"
    assert forwarded_client("10.0.0.1", ["1.1.1.1, 2.2.2.2"], trusted) == "2.2.2.2"
    assert forwarded_client("10.0.0.1", ["1.1.1.1", "2.2.2.2, 10.0.0.2"], trusted) == "2.2.2.2"
    assert forwarded_client("10.0.0.1", ["garbage, 2.2.2.2"], trusted) == "2.2.2.2"
    assert forwarded_client("10.0.0.1", ["2.2.2.2, garbage"], trusted) == "10.0.0.1"
    assert forwarded_client("10.0.0.1", ["10.0.0.3"], trusted) == "10.0.0.3"
    assert forwarded_client("10.0.0.1", [], trusted) == "10.0.0.1"
    assert forwarded_client("10.0.0.1", ["1.1.1.1"], []) == "10.0.0.1"


async def test_redis_down_still_answers_and_limits_per_process(known: str) -> None:
    # Port 1 on localhost: connection refused, as for a Redis that is down.
    async for client in app_client(
        known, public_lookup_limits="3/minute", rate_limit_storage="redis://127.0.0.1:1/0"
    ):
        statuses = [(await client.get(SCORE)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]


async def test_redis_storage_counts_in_redis(known: str) -> None:
    prefix = f"nser-test-{uuid.uuid4().hex}"
    storage = f"{REDIS_URL}?key_prefix={prefix}"
    async for client in app_client(
        known, public_lookup_limits="2/minute", rate_limit_storage=storage
    ):
        assert [(await client.get(SCORE)).status_code for _ in range(3)] == [200, 200, 429]
    r = redis.Redis.from_url(REDIS_URL)
    keys = r.keys(f"*{prefix}*")
    assert keys
    r.delete(*keys)


@pytest.mark.slow
def test_two_workers_share_one_count_through_redis(known: str, tmp_path: Path) -> None:
    prefix = f"nser-test-{uuid.uuid4().hex}"
    limit = 30
    env = {
        "NSER_DATABASE_URL": known,
        "NSER_RATE_LIMIT_STORAGE": f"{REDIS_URL}?key_prefix={prefix}",
        "NSER_PUBLIC_LOOKUP_LIMITS": f"{limit}/minute",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    (tmp_path / "metrics").mkdir()
    try:
        with serve(env, tmp_path, workers=2) as server:
            statuses = asyncio.run(_hit_concurrently(server.base_url, SCORE, limit + 1))
        assert sorted(statuses) == [200] * limit + [429], statuses
        # Whichever worker took each request (the kernel's choice), every hit went to the
        # one count in Redis; none stayed in a worker's memory.
        r = redis.Redis.from_url(REDIS_URL)
        counts = [int(r.get(key) or 0) for key in r.keys(f"*{prefix}*") if r.type(key) == b"string"]
        assert limit + 1 in counts, counts
    finally:
        r = redis.Redis.from_url(REDIS_URL)
        keys = r.keys(f"*{prefix}*")
        if keys:
            r.delete(*keys)


async def _hit_concurrently(base_url: str, path: str, count: int) -> list[int]:
    """``count`` requests, each on its own connection, so that either worker may take each."""

    async def one() -> int:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            return (await client.get(path)).status_code

    statuses: list[int] = []
    for start in range(0, count, 8):
        batch = [one() for _ in range(min(8, count - start))]
        statuses += await asyncio.gather(*batch)
    return statuses
