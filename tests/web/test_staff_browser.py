"""The staff console in a real browser: Debian's Chromium with a WebAuthn virtual
authenticator (DevTools protocol: ctap2, internal transport, resident keys, user
verification), driving the pages and their passkey script as a member would.

Enrol, sign in and sign out; idle expiry; a member disabled by an administrator is locked
out at once; the step-up prompt before a role change. Every page is scanned with axe-core
(WCAG 2.2 AA) in English and Urdu and saved to artifacts/screenshots/staff-*.png.

Passkeys are bound to a host name, not an IP address, so the console is served here at
``http://localhost:PORT`` (``NSER_STAFF_ORIGIN``), a port chosen before the server starts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from browser import axe_violations, screenshot
from conftest import fresh_database, run_cli, service_url
from playwright.sync_api import Browser, CDPSession, Page, Playwright, expect, sync_playwright
from server import Server, free_port, serve
from web.fixtures import CHROMIUM, CHROMIUM_ARGS, DESKTOP

pytestmark = pytest.mark.slow

AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
}


@dataclass
class Console:
    server: Server
    origin: str
    database_url: str

    def create(self, *roles: str, name: str) -> dict[str, str]:
        """``nser staff create``: the member's id, secret and enrolment link."""
        args = ["staff", "create", "--name", name, *[f"--role={r}" for r in roles], "--json"]
        out = run_cli(args, self.database_url, NSER_STAFF_ORIGIN=self.origin).stdout
        made: dict[str, str] = json.loads(out)
        return made

    def sql(self, query: str, *args: Any) -> Any:
        """One statement on the console's database (in a thread: Playwright holds this one)."""

        async def run() -> Any:
            conn = await asyncpg.connect(self.database_url)
            try:
                return await conn.fetchval(query, *args)
            finally:
                await conn.close()

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, run()).result()


@contextmanager
def console_on(folder: Path, **registry: int) -> Iterator[Console]:
    """``nser serve`` with the console at http://localhost:PORT (browsers refuse passkeys on
    an IP address) over a fresh registry (``fresh_database(**registry)``), with no
    in-process worker: a test that needs one runs it."""
    port = free_port()
    origin = f"http://localhost:{port}"
    with fresh_database(**registry) as url:
        env = {
            "NSER_DATABASE_URL": service_url(url),
            "NSER_STAFF_ORIGIN": origin,
            "NSER_IN_PROCESS_WORKERS": "0",
            "NSER_STAFF_SIGN_IN_LIMITS": "10000/minute",
        }
        with serve(env, folder, workers=1, port=port) as server:
            yield Console(server, origin, url)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with console_on(tmp_path_factory.mktemp("console")) as running:
        yield running


@pytest.fixture(scope="module")
def driver(console: Console) -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def chromium(driver: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class Device:
    """A browser window with a passkey authenticator of its own."""

    page: Page
    cdp: CDPSession
    authenticator: str

    def passkeys(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.cdp.send(
            "WebAuthn.getCredentials", {"authenticatorId": self.authenticator}
        )["credentials"]
        return found


@pytest.fixture
def open_device(chromium: Browser, console: Console) -> Iterator[Callable[[], Device]]:
    """Opens windows (fresh contexts) on the console, each with a virtual authenticator;
    fails the test if any of them asked another origin for anything."""
    contexts = []
    requested: list[str] = []

    def open_one() -> Device:
        # bypass_csp only lets the scan inject axe-core; the pages' own CSP is tested elsewhere.
        context = chromium.new_context(base_url=console.origin, viewport=DESKTOP, bypass_csp=True)
        contexts.append(context)
        context.on("request", lambda request: requested.append(request.url))
        page = context.new_page()
        page.set_default_timeout(15_000)
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
        return Device(page, cdp, added["authenticatorId"])

    yield open_one
    for context in contexts:
        context.close()
    ours = urlsplit(console.origin).netloc
    same_server = (ours, ours.replace("localhost", "127.0.0.1"))
    foreign = [url for url in requested if urlsplit(url).netloc not in ("", *same_server)]
    assert not foreign, f"requests left for another origin: {foreign}"


def scan(page: Page, name: str) -> None:
    screenshot(page, name)
    assert axe_violations(page) == [], name


def enrol(device: Device, link: str, lang: str, label: str = "Office laptop") -> None:
    _, _, token = link.partition("#")
    device.page.goto(f"/staff/enrol?lang={lang}#{token}")
    device.page.fill("#passkey-label", label)
    device.page.click("button[data-start]")
    expect(device.page.locator("#passkey-done")).to_be_visible()


def sign_in(device: Device, lang: str) -> None:
    device.page.goto(f"/staff/sign-in?lang={lang}")
    device.page.click("button[data-start]")
    device.page.wait_for_url("**/staff/")


def signed_in(console: Console, device: Device, *roles: str, name: str) -> dict[str, str]:
    made = console.create(*roles, name=name)
    enrol(device, made["enrolment_link"], "en")
    sign_in(device, "en")
    return made


@pytest.mark.parametrize("lang", ["en", "ur"])
def test_enrol_sign_in_and_sign_out(
    console: Console, open_device: Callable[[], Device], lang: str
) -> None:
    made = console.create("officer", "me", name="Ayesha Khan")
    device = open_device()
    page = device.page
    _, _, token = made["enrolment_link"].partition("#")
    page.goto(f"/staff/enrol?lang={lang}#{token}")
    assert page.locator("html").get_attribute("dir") == ("rtl" if lang == "ur" else "ltr")
    # Switching language keeps the link's token (the fragment).
    assert page.locator(".lang-switch").get_attribute("href").endswith(f"#{token}")
    scan(page, f"staff-enrol-{lang}")
    page.fill("#passkey-label", "Office laptop")
    page.click("button[data-start]")
    done = page.locator("#passkey-done")
    expect(done).to_be_visible()
    expect(done).to_be_focused()
    assert "#" not in page.url  # the used token is out of the address bar
    assert len(device.passkeys()) == 1
    assert device.passkeys()[0]["isResidentCredential"]
    scan(page, f"staff-enrolled-{lang}")

    done.get_by_role("link").click()
    page.wait_for_url("**/staff/sign-in?lang=*")
    scan(page, f"staff-sign-in-{lang}")
    # Keyboard only: Tab to the button, Enter to use the passkey.
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.hasAttribute('data-start')"):
            break
    else:
        raise AssertionError("the sign-in button is not reachable by keyboard")
    page.keyboard.press("Enter")
    page.wait_for_url("**/staff/")
    expect(page.locator("main")).to_contain_text("Ayesha Khan")
    scan(page, f"staff-home-{lang}")
    assert (
        console.sql(
            "SELECT count(*) FROM staff_sessions WHERE staff_id = $1 AND ended_at IS NULL",
            made["staff_id"],
        )
        == 1
    )

    page.locator("form.sign-out button").click()
    page.wait_for_url("**/staff/sign-in?ended=signed_out*")
    expect(page.locator(".notice-success")).to_be_visible()
    assert (
        console.sql("SELECT ended_reason FROM staff_sessions WHERE staff_id = $1", made["staff_id"])
        == "sign_out"
    )
    page.goto("/staff/")
    assert urlsplit(page.url).path == "/staff/sign-in"


def test_an_idle_session_ends(console: Console, open_device: Callable[[], Device]) -> None:
    device = open_device()
    made = signed_in(console, device, "officer", name="Idle Member")
    console.sql(
        "UPDATE staff_sessions SET last_seen_at = now() - interval '16 minutes' "
        "WHERE staff_id = $1",
        made["staff_id"],
    )
    device.page.reload()
    assert urlsplit(device.page.url).path == "/staff/sign-in"
    expect(device.page.locator(".notice[role=status]")).to_contain_text("Your session has ended")
    # Signing in again brings the member back where they were.
    device.page.click("button[data-start]")
    device.page.wait_for_url("**/staff/")


def test_a_disabled_member_is_locked_out_at_once(
    console: Console, open_device: Callable[[], Device]
) -> None:
    admin = open_device()
    signed_in(console, admin, "admin", name="Admin Person")
    member = open_device()
    made = signed_in(console, member, "officer", name="Leaving Member")

    admin.page.goto(f"/staff/admin/staff/{made['staff_id']}")
    admin.page.get_by_role("button", name="Disable the staff member").click()
    expect(admin.page.locator(".notice-success")).to_contain_text("disabled")

    member.page.reload()
    assert urlsplit(member.page.url).path == "/staff/sign-in"
    member.page.click("button[data-start]")
    problem = member.page.locator("#passkey-error")
    expect(problem).to_be_visible()
    expect(problem).to_contain_text("Your staff account is disabled")
    expect(problem).to_be_focused()


@pytest.mark.parametrize("lang", ["en", "ur"])
def test_administration_and_the_step_up_prompt(
    console: Console, open_device: Callable[[], Device], lang: str
) -> None:
    admin = open_device()
    made = signed_in(console, admin, "admin", name="Step-up Admin")
    other = console.create("committee", name="Committee Member")
    page = admin.page
    for path, name in (
        ("/staff/admin/staff", "list"),
        ("/staff/admin/staff/new", "new"),
        (f"/staff/admin/staff/{other['staff_id']}", "member"),
    ):
        page.goto(f"{path}?lang={lang}")
        scan(page, f"staff-admin-{name}-{lang}")

    # Six minutes after the last passkey check, a role change asks for it again.
    console.sql(
        "UPDATE staff_sessions SET last_verified_at = now() - interval '6 minutes' "
        "WHERE staff_id = $1",
        made["staff_id"],
    )
    page.check("#role-secretary")
    page.locator("form[action*='/roles'] button[type=submit]").click()
    page.wait_for_url("**/staff/step-up?next=*")
    assert page.locator("html").get_attribute("lang") == lang
    scan(page, f"staff-step-up-{lang}")
    page.click("button[data-start]")
    page.wait_for_url(f"**/staff/admin/staff/{other['staff_id']}")
    assert console.sql("SELECT roles FROM api_clients WHERE client_id = $1", other["staff_id"]) == [
        "committee"
    ]  # nothing changed before the check
    page.check("#role-secretary")
    page.locator("form[action*='/roles'] button[type=submit]").click()
    expect(page.locator(".notice-success")).to_be_visible()
    assert console.sql("SELECT roles FROM api_clients WHERE client_id = $1", other["staff_id"]) == [
        "committee",
        "secretary",
    ]


def test_the_wrong_address_says_where_passkeys_work(
    console: Console, open_device: Callable[[], Device]
) -> None:
    device = open_device()
    ip_address = console.origin.replace("localhost", "127.0.0.1")
    device.page.goto(f"{ip_address}/staff/sign-in")
    problem = device.page.locator("#passkey-error")
    expect(problem).to_be_visible()
    expect(problem.get_by_role("link")).to_have_attribute("href", f"{console.origin}/staff/sign-in")
