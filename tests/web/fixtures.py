"""The website in a real browser: Debian's Chromium driven by Playwright.

These fixtures are imported by tests/conftest.py (a second conftest.py would shadow the
top one's module name), so any test can ask for them; they start only when asked.

``site`` is a live ``nser serve`` over a registry seeded for this package. Proxies from
127.0.0.1 are trusted, so each page context sends its own ``X-Forwarded-For`` and the
fair-usage limits of one test never spend another's budget. Every page fixture records
the requests the browser makes and fails the test if one leaves for another origin.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from server import Server, serve

CHROMIUM = "/usr/bin/chromium"
# The flags this machine's closed network needs (no background calls home).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
_client_ips = itertools.count(1)

KNOWN_MEMBER_SQL = """
SELECT m.cnic, h.pmt_score::float8 AS pmt_score, h.poverty_band
FROM members m JOIN households h ON h.id = m.household_id
WHERE m.deceased_on IS NULL AND m.cnic IS NOT NULL AND h.poverty_band = $1
ORDER BY m.id LIMIT 1
"""


@pytest.fixture(scope="session")
def site(site_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "NSER_DATABASE_URL": site_database,
        "NSER_TRUSTED_PROXIES": "127.0.0.1/32",
        "NSER_IN_PROCESS_WORKERS": "0",
    }
    with serve(env, tmp_path_factory.mktemp("site"), workers=1) as server:
        server.database_url = site_database  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="session")
def known_member(site_database: str) -> dict[str, Any]:
    """A living member of a 'poor' household: its CNIC, score and band."""

    async def find() -> dict[str, Any]:
        conn = await asyncpg.connect(site_database)
        try:
            row = await conn.fetchrow(KNOWN_MEMBER_SQL, "poor")
        finally:
            await conn.close()
        assert row is not None
        return dict(row)

    with ThreadPoolExecutor(1) as pool:  # a thread of its own: Playwright may hold this one
        return pool.submit(asyncio.run, find()).result()


# Playwright's sync API runs an event loop in this thread while it is open, so it lives per
# module: other modules' fixtures (asyncio.run, pytest-asyncio) must find the thread free.
# In a browser test module, use plain httpx against ``site`` rather than async fixtures.
@pytest.fixture(scope="module")
def playwright(site: Server) -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise AssertionError(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get)"
        )
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


def _foreign(base_url: str, url: str) -> bool:
    scheme = urlsplit(url).scheme
    if scheme in ("data", "blob", "about"):
        return False
    return urlsplit(url).netloc != urlsplit(base_url).netloc


@pytest.fixture
def new_page(browser: Browser, site: Server) -> Iterator[Callable[..., Page]]:
    """Opens pages in fresh contexts; each has its own client IP and an origin check."""
    contexts = []
    requested: list[str] = []

    def open_page(**options: Any) -> Page:
        n = next(_client_ips)
        headers = {"X-Forwarded-For": f"10.77.{n // 250 % 250}.{n % 250 + 1}"}
        headers.update(options.pop("extra_http_headers", {}))
        options.setdefault("viewport", DESKTOP)
        context = browser.new_context(base_url=site.base_url, extra_http_headers=headers, **options)
        contexts.append(context)
        context.on("request", lambda request: requested.append(request.url))
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield open_page
    for context in contexts:
        context.close()
    foreign = [url for url in requested if _foreign(site.base_url, url)]
    assert not foreign, f"requests left for another origin: {foreign}"


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    return new_page()


@pytest.fixture
def phone_page(new_page: Callable[..., Page]) -> Page:
    return new_page(viewport=PHONE, is_mobile=True, has_touch=True)
