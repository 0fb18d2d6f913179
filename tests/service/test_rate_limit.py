"""Fair-usage limits: 429 + Retry-After, trusted proxies only, Redis shared and Redis down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import REDIS_URL, make_settings
from lookup_data import LIVING, UNKNOWN, insert_known_members
from request_helpers import form
from server import serve

from app.main import create_app
from app.rate_limit import budget_address, forwarded_client

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


# -- IPv6 clients are counted by prefix ----------------------------------------------------

Peers = Callable[[str], httpx.AsyncClient]


@asynccontextmanager
async def peers(url: str, **overrides: Any) -> AsyncIterator[Peers]:
    """One app, and a client of it speaking from whichever address is asked."""
    app = create_app(make_settings(url, **overrides))
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))

        def speaking_from(peer: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(peer, 40000))
            client = httpx.AsyncClient(transport=transport, base_url="http://nser.test")
            stack.push_async_callback(client.aclose)
            return client

        yield speaking_from


def one_prefix(count: int, prefix: str = "2001:db8:5:6") -> list[str]:
    """``count`` addresses of one /64, as a client rotating through its prefix uses them."""
    return [f"{prefix}:{i:x}:{i * 7:x}:{i * 13:x}:{i + 1:x}" for i in range(count)]


def test_budget_address_rules() -> None:
    # IPv4 stays per address; IPv6 is grouped by prefix; an IPv4 client reaching a dual-stack
    # socket (an IPv4-mapped address) is the IPv4 address, not a share of ::ffff:0:0/96.
    assert budget_address("203.0.113.7", 64) == "203.0.113.7"
    assert budget_address("2001:db8:5:6:aaaa:bbbb:cccc:dddd", 64) == "2001:db8:5:6::/64"
    assert budget_address("2001:DB8:5:6::1", 64) == "2001:db8:5:6::/64"
    assert budget_address("2001:db8:5:6::1", 48) == "2001:db8:5::/48"
    assert budget_address("2001:db8:5:6::1", 128) == "2001:db8:5:6::1/128"
    assert budget_address("::ffff:203.0.113.7", 64) == "203.0.113.7"
    assert budget_address("unknown", 64) == "unknown"  # no socket address at all


@pytest.mark.parametrize("fast_path", [True, False])
async def test_one_ipv6_prefix_shares_one_lookup_budget(known: str, fast_path: bool) -> None:
    async with peers(known, public_lookup_limits="3/minute", public_fast_path=fast_path) as at:
        rotating = one_prefix(5)
        statuses = [(await at(peer).get(SCORE)).status_code for peer in rotating]
        assert statuses == [200, 200, 200, 429, 429]
        # Another /64 has its own budget, and IPv4 addresses stay one budget each.
        assert (await at("2001:db8:5:7::1").get(SCORE)).status_code == 200
        for peer in ("198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"):
            assert (await at(peer).get(SCORE)).status_code == 200


async def test_the_ipv6_prefix_is_a_setting(known: str) -> None:
    async with peers(known, public_lookup_limits="2/minute", rate_limit_ipv6_prefix=48) as at:
        # Two /64s of one /48: one budget.
        assert (await at("2001:db8:5:6::1").get(SCORE)).status_code == 200
        assert (await at("2001:db8:5:7::1").get(SCORE)).status_code == 200
        assert (await at("2001:db8:5:8::1").get(SCORE)).status_code == 429
        assert (await at("2001:db8:6:6::1").get(SCORE)).status_code == 200


async def test_ipv6_behind_a_trusted_proxy_is_grouped_too(known: str) -> None:
    async with peers(known, public_lookup_limits="2/minute", trusted_proxies=["10.0.0.0/8"]) as at:
        proxy = at("10.1.2.3")

        async def via_proxy(client: str) -> int:
            return (await proxy.get(SCORE, headers={"X-Forwarded-For": client})).status_code

        assert [await via_proxy(peer) for peer in one_prefix(3, "2001:db8:9:9")] == [
            200,
            200,
            429,
        ]
        assert await via_proxy("2001:db8:9:a::1") == 200


# Every per-IP budget counts an IPv6 client by its prefix: (method, path, request arguments).
PER_IP = {
    "summaries": ("GET", "/v1/public/summaries", {"params": {"group_by": "province"}}),
    "maps": ("GET", "/v1/public/maps/households", {"params": {"resolution": 0}}),
    "request forms": ("POST", "/v1/requests", {"json": form()}),
    "grievances": ("POST", "/v1/public/grievances", {"json": {}}),
    "token endpoint": ("POST", "/v1/auth/token", {"data": {"grant_type": "password"}}),
}


@pytest.mark.parametrize("budget", list(PER_IP))
async def test_every_per_ip_budget_groups_ipv6(known: str, budget: str) -> None:
    method, path, arguments = PER_IP[budget]
    limits = "2/minute"
    async with peers(
        known,
        public_lookup_limits=limits,
        request_form_limits=limits,
        grievance_limits=limits,
        token_limits=limits,
        in_process_workers=0,
    ) as at:
        statuses = [
            (await at(peer).request(method, path, **arguments)).status_code
            for peer in one_prefix(3)
        ]
        assert 429 not in statuses[:2], statuses
        assert statuses[2] == 429, statuses
        other = await at("2001:db8:5:7::1").request(method, path, **arguments)
        assert other.status_code != 429


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
