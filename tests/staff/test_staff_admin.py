"""The staff console's administration over HTTP: a disabled member's session and API token
fail at their next request, API credentials off and on, roles, passkey removal, and the
step-up that sensitive actions need; every change in the audit log.
"""

from __future__ import annotations

import json
import re

import asyncpg
import httpx
from conftest import run_cli
from staff_helpers import (
    Browser,
    Member,
    browser,
    create_member,
    csrf,
    enrol,
    enrolled,
    new_device,
    post_json,
    session_hash,
    sign_in,
    staff_db,
    step_up,
    token_of,
)

__all__ = ["browser", "staff_db"]  # the fixtures

LIST = "/staff/admin/staff"


async def signed_in(url: str, browser: Browser, *roles: str) -> tuple[Member, httpx.AsyncClient]:
    member = await enrolled(url, browser, *roles)
    client = browser()
    signed = await sign_in(client, member.device)
    assert signed.status_code == 200, signed.text
    return member, client


async def api_token(client: httpx.AsyncClient, member: Member) -> httpx.Response:
    return await client.post(
        "/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": member.staff_id,
            "client_secret": member.client_secret,
        },
    )


async def post_form(
    client: httpx.AsyncClient, path: str, **fields: str | list[str]
) -> httpx.Response:
    token = await csrf(client, "/staff/")
    return await client.post(path, data={"csrf_token": token, **fields})


async def test_a_disabled_member_is_refused_at_the_next_request(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    admin, console = await signed_in(database_url, browser, "admin")
    officer, officer_console = await signed_in(database_url, browser, "officer")
    api = browser()
    granted = await api_token(api, officer)
    assert granted.status_code == 200, granted.text
    bearer = {"Authorization": f"Bearer {granted.json()['access_token']}"}
    assert (await api.get("/v1/staff/requests", headers=bearer)).status_code == 200
    assert (await officer_console.get("/staff/")).status_code == 200
    officer_session = await session_hash(officer_console)

    # Disabling needs no step-up: cutting access must be quick.
    await staff_db.execute(
        "UPDATE staff_sessions SET last_verified_at = now() - interval '1 hour' WHERE id_hash = $1",
        await session_hash(console),
    )
    done = await post_form(console, f"{LIST}/{officer.staff_id}/disable")
    assert done.status_code == 303
    assert done.headers["location"] == f"{LIST}/{officer.staff_id}?done=disabled&lang=en"
    page = await console.get(done.headers["location"])
    assert "Disabled since" in page.text

    # The console session: gone at once, and says so.
    gone = await officer_console.get("/staff/")
    assert gone.status_code == 303
    assert "ended=expired" in gone.headers["location"]
    reason = await staff_db.fetchval(
        "SELECT ended_reason FROM staff_sessions WHERE id_hash = $1", officer_session
    )
    assert reason == "disabled"
    # The API token, still unexpired: refused, problem+json; and no new token.
    refused = await api.get("/v1/staff/requests", headers=bearer)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["detail"] == "the staff member is disabled"
    again = await api_token(api, officer)
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_client"
    # No sign-in either (the passkey is known, the member disabled).
    no = browser()
    blocked = await sign_in(no, officer.device)
    assert blocked.status_code == 401
    assert blocked.json()["code"] == "disabled"

    # Enabling widens access: it asks for the passkey first, then works.
    stale = await post_form(console, f"{LIST}/{officer.staff_id}/enable")
    assert stale.status_code == 303
    assert stale.headers["location"].startswith("/staff/step-up?next=")
    verified = await step_up(console, admin.device, f"{LIST}/{officer.staff_id}")
    assert verified.json() == {"redirect": f"{LIST}/{officer.staff_id}"}
    enabled = await post_form(console, f"{LIST}/{officer.staff_id}/enable")
    assert enabled.headers["location"].endswith("done=enabled&lang=en")
    assert (await api.get("/v1/staff/requests", headers=bearer)).status_code == 200
    assert (await sign_in(browser(), officer.device)).status_code == 200

    rows = await staff_db.fetch(
        "SELECT actor_type, client_id, endpoint, filters FROM audit_log "
        "WHERE filters->>'staff' = $1 AND filters->>'action' IN ('disable', 'enable') "
        "ORDER BY id",
        officer.staff_id,
    )
    assert [(r["client_id"], r["endpoint"]) for r in rows] == [
        (admin.staff_id, "POST /staff/admin/staff/{staff_id}/disable"),
        (admin.staff_id, "POST /staff/admin/staff/{staff_id}/enable"),
    ]
    assert json.loads(rows[0]["filters"])["sessions_ended"] == "1"


async def test_the_cli_disables_and_enables_too(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    member, console = await signed_in(database_url, browser, "officer")
    out = run_cli(["staff", "disable", member.staff_id], database_url).stdout
    assert "disabled" in out
    assert (await console.get("/staff/")).status_code == 303
    run_cli(["staff", "enable", member.staff_id], database_url)
    assert (await sign_in(browser(), member.device)).status_code == 200
    missing = run_cli(["staff", "disable", "nss_" + "0" * 24], database_url, check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: no staff member nss_{'0' * 24}"
    endpoints = await staff_db.fetch(
        "SELECT actor_type, endpoint FROM audit_log WHERE filters->>'staff' = $1 "
        "AND endpoint LIKE 'nser staff %' ORDER BY id",
        member.staff_id,
    )
    assert [(r["actor_type"], r["endpoint"]) for r in endpoints] == [
        ("operator", "nser staff create"),
        ("operator", "nser staff disable"),
        ("operator", "nser staff enable"),
    ]


async def test_api_credentials_off_leave_the_console_alone(
    database_url: str, browser: Browser
) -> None:
    _, console = await signed_in(database_url, browser, "admin")
    officer, officer_console = await signed_in(database_url, browser, "officer")
    api = browser()
    bearer = {"Authorization": f"Bearer {(await api_token(api, officer)).json()['access_token']}"}
    off = await post_form(console, f"{LIST}/{officer.staff_id}/credentials-off")
    assert off.headers["location"].endswith("done=credentials_off&lang=en")
    assert (await api.get("/v1/staff/requests", headers=bearer)).status_code == 403
    assert (await api_token(api, officer)).status_code == 401
    assert (await officer_console.get("/staff/")).status_code == 200
    # And back on (fresh verification: just signed in).
    on = await post_form(console, f"{LIST}/{officer.staff_id}/credentials-on")
    assert on.headers["location"].endswith("done=credentials_on&lang=en")
    assert (await api.get("/v1/staff/requests", headers=bearer)).status_code == 200
    # The operator's switch is the same one.
    run_cli(["staff", "credentials", officer.staff_id, "--off"], database_url)
    assert (await api_token(api, officer)).status_code == 401


async def test_role_changes_need_a_recent_passkey_verification(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    admin, console = await signed_in(database_url, browser, "admin")
    member = create_member(database_url, "committee")
    path = f"{LIST}/{member.staff_id}"
    # Just signed in: the change goes through.
    fresh = await post_form(console, f"{path}/roles", role=["committee", "secretary"])
    assert fresh.status_code == 303
    assert fresh.headers["location"] == f"{path}?done=roles&lang=en"
    assert await staff_db.fetchval(
        "SELECT roles FROM api_clients WHERE client_id = $1", member.staff_id
    ) == ["committee", "secretary"]

    # Six minutes later: the passkey again, first.
    key = await session_hash(console)
    await staff_db.execute(
        "UPDATE staff_sessions SET last_verified_at = now() - interval '6 minutes' "
        "WHERE id_hash = $1",
        key,
    )
    stale = await post_form(console, f"{path}/roles", role=["officer"])
    assert stale.status_code == 303
    assert stale.headers["location"] == (
        f"/staff/step-up?next=%2Fstaff%2Fadmin%2Fstaff%2F{member.staff_id}"
    )
    assert await staff_db.fetchval(
        "SELECT roles FROM api_clients WHERE client_id = $1", member.staff_id
    ) == ["committee", "secretary"]
    prompt = await console.get(stale.headers["location"])
    assert prompt.status_code == 200
    assert 'data-passkey="step-up"' in prompt.text
    assert f'data-next="{path}"' in prompt.text

    # Another member's passkey cannot stand in for the admin's.
    other = await enrolled(database_url, browser, "officer")
    token = await csrf(console, f"/staff/step-up?next={path}")
    options = await console.post("/staff/step-up/options", json={}, headers={"X-CSRF-Token": token})
    allowed = [item["id"] for item in options.json()["allowCredentials"]]
    assert len(allowed) == 1
    wrong = other.device.get(options.json(), credential=next(iter(other.device.credentials)))
    refused = await console.post(
        "/staff/step-up/verify",
        json={"credential": wrong, "next": path},
        headers={"X-CSRF-Token": token},
    )
    assert refused.status_code == 401
    assert refused.json()["code"] == "not_yours"

    verified = await step_up(console, admin.device, path)
    assert verified.status_code == 200, verified.text
    assert verified.json() == {"redirect": path}
    age = await staff_db.fetchval(
        "SELECT now() - last_verified_at FROM staff_sessions WHERE id_hash = $1", key
    )
    assert age.total_seconds() < 60
    done = await post_form(console, f"{path}/roles", role=["officer"])
    assert done.headers["location"] == f"{path}?done=roles&lang=en"

    audit = await staff_db.fetch(
        "SELECT endpoint, filters FROM audit_log WHERE client_id = $1 ORDER BY id",
        admin.staff_id,
    )
    kinds = [
        (
            r["endpoint"],
            json.loads(r["filters"]).get("outcome") or json.loads(r["filters"])["action"],
        )
        for r in audit
    ]
    assert kinds == [
        ("POST /staff/enrol", "enrolled"),
        ("POST /staff/sign-in", "signed_in"),
        ("POST /staff/admin/staff/{staff_id}/roles", "roles"),
        ("POST /staff/step-up", "failed"),
        ("POST /staff/step-up", "verified"),
        ("POST /staff/admin/staff/{staff_id}/roles", "roles"),
    ]
    change = json.loads(audit[-1]["filters"])
    assert change == {
        "action": "roles",
        "staff": member.staff_id,
        "from": ["committee", "secretary"],
        "to": ["officer"],
    }


async def test_removing_a_passkey_ends_the_sessions_it_opened(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    _, console = await signed_in(database_url, browser, "admin")
    member, member_console = await signed_in(database_url, browser, "officer")
    member_session = await session_hash(member_console)
    # A second passkey, on another device, through a fresh link.
    laptop = new_device()
    link = json.loads(
        run_cli(["staff", "enrol-link", member.staff_id, "--json"], database_url).stdout
    )["enrolment_link"]
    assert (await enrol(browser(), link, laptop, label="Laptop")).status_code == 200
    laptop_console = browser()
    assert (await sign_in(laptop_console, laptop)).status_code == 200
    first = await staff_db.fetchval(
        "SELECT id FROM staff_passkeys WHERE staff_id = $1 AND label = 'Test key'",
        member.staff_id,
    )
    page = await console.get(f"{LIST}/{member.staff_id}")
    assert "Laptop" in page.text
    assert page.text.count("/remove?lang=en") == 2
    removed = await post_form(console, f"{LIST}/{member.staff_id}/passkeys/{first}/remove")
    assert removed.headers["location"].endswith("done=passkey_removed&lang=en")
    assert (await member_console.get("/staff/")).status_code == 303  # opened by that passkey
    assert (await laptop_console.get("/staff/")).status_code == 200  # the other one stays
    refused = await sign_in(browser(), member.device)
    assert refused.json()["code"] == "unknown_passkey"
    reason = await staff_db.fetchval(
        "SELECT ended_reason FROM staff_sessions WHERE id_hash = $1", member_session
    )
    assert reason == "passkey_removed"
    again = await post_form(console, f"{LIST}/{member.staff_id}/passkeys/{first}/remove")
    assert again.status_code == 404


async def test_admins_create_members_whose_link_and_secret_work(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    admin, console = await signed_in(database_url, browser, "admin")
    form = await console.get(f"{LIST}/new")
    assert form.status_code == 200
    empty = await post_form(console, f"{LIST}/new", name="  ")
    assert empty.status_code == 422
    assert "Choose at least one role." in empty.text
    made = await post_form(console, f"{LIST}/new", name="Sana Malik", role=["me"])
    assert made.status_code == 200, made.text
    link = re.search(r'value="(http://nser\.test/staff/enrol#[A-Za-z0-9_-]{43})"', made.text)
    secret = re.search(r'class="secret">([A-Za-z0-9_-]{43})<', made.text)
    client_id = re.search(r"<code dir=\"ltr\">(nss_[0-9a-f]{24})</code>", made.text)
    assert link
    assert secret
    assert client_id
    assert made.headers["cache-control"] == "no-store"
    new = Member(client_id.group(1), secret.group(1), link.group(1), new_device())
    assert (await api_token(browser(), new)).status_code == 200
    assert (await enrol(browser(), new.link, new.device)).status_code == 200
    assert token_of(new.link) not in made.headers.get("set-cookie", "")
    listing = await console.get(LIST)
    assert "Sana Malik" in listing.text
    row = await staff_db.fetchrow(
        "SELECT actor_type, client_id FROM audit_log WHERE filters->>'action' = 'create' "
        "AND filters->>'staff' = $1",
        new.staff_id,
    )
    assert (row["actor_type"], row["client_id"]) == ("staff", admin.staff_id)
    link_row = await staff_db.fetchval(
        "SELECT created_by FROM staff_enrolment_links WHERE staff_id = $1", new.staff_id
    )
    assert link_row == admin.staff_id


async def test_admins_cannot_lock_themselves_out(database_url: str, browser: Browser) -> None:
    admin, console = await signed_in(database_url, browser, "admin")
    me = f"{LIST}/{admin.staff_id}"
    disable = await post_form(console, f"{me}/disable")
    assert disable.status_code == 409
    assert "You cannot disable yourself" in disable.text
    demote = await post_form(console, f"{me}/roles", role=["officer"])
    assert demote.status_code == 409
    assert "your own administrator role" in demote.text
    assert (await console.get("/staff/admin/staff")).status_code == 200


async def test_enrolment_links_from_the_console(database_url: str, browser: Browser) -> None:
    _, console = await signed_in(database_url, browser, "admin")
    member = create_member(database_url, "officer")
    issued = await post_form(console, f"{LIST}/{member.staff_id}/enrol-link")
    assert issued.status_code == 200
    link = re.search(r'value="(http://nser\.test/staff/enrol#[A-Za-z0-9_-]{43})"', issued.text)
    assert link
    assert (await enrol(browser(), link.group(1), member.device)).status_code == 200
    # The CLI's link of before was ended by it.
    other = browser()
    stale = await post_json(
        other, "/staff/enrol/options", {"token": token_of(member.link)}, await csrf(other)
    )
    assert stale.status_code == 404
    run_cli(["staff", "disable", member.staff_id], database_url)
    refused = await post_form(console, f"{LIST}/{member.staff_id}/enrol-link")
    assert refused.status_code == 409
    assert "Enable the staff member first." in refused.text


async def test_admin_pages_are_for_admins(database_url: str, browser: Browser) -> None:
    _, console = await signed_in(database_url, browser, "officer", "secretary")
    for path in (LIST, f"{LIST}/new"):
        page = await console.get(path)
        assert page.status_code == 403, path
        assert "Only staff administrators can open this page." in page.text
    home = await console.get("/staff/")
    assert "/staff/admin/staff" not in home.text
    _, admin_console = await signed_in(database_url, browser, "admin")
    assert (await admin_console.get(f"{LIST}/nss_{'0' * 24}")).status_code == 404
    assert (await admin_console.get(f"{LIST}/not-an-id")).status_code == 422
    bad = await post_form(admin_console, f"{LIST}/new", name="X", role=["king"])
    assert bad.status_code == 422
