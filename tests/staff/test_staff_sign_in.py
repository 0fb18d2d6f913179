"""The staff console's sign-in over HTTP: enrolment links (expiry, once only, hashed),
passkey sign-in (user verification, replay, wrong origin), sessions (idle and absolute
expiry, sign-out, the cookie), each outcome in the audit log.

A software authenticator (tests/staff_helpers.py) answers the ceremonies; the service's
verification is py_webauthn's. Timestamps are moved in the database, never slept on.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import asyncpg
from conftest import run_cli
from staff_helpers import (
    ORIGIN,
    Authenticator,
    Browser,
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
    token_of,
)

__all__ = ["browser", "staff_db"]  # the fixtures


async def test_create_prints_a_one_time_link_stored_hashed(
    database_url: str, staff_db: asyncpg.Connection
) -> None:
    args = ["staff", "create", "--name", "Ayesha Khan", "--role", "officer", "--json"]
    made = json.loads(run_cli(args, database_url).stdout)
    # The fields of before stay; the link and its expiry are added.
    assert made["staff_id"] == made["client_id"]
    assert made["client_secret"]
    token = token_of(made["enrolment_link"])
    assert made["enrolment_link"].startswith("http://localhost:8000/staff/enrol#")
    row = await staff_db.fetchrow(
        "SELECT * FROM staff_enrolment_links WHERE staff_id = $1", made["staff_id"]
    )
    assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
    assert row["used_at"] is None
    assert row["created_by"] is None
    assert row["expires_at"] - row["created_at"] == timedelta(hours=24)
    assert token.encode() not in b"".join(
        v if isinstance(v, bytes) else str(v).encode() for v in row.values()
    )
    audit = await staff_db.fetchrow(
        "SELECT actor_type, filters FROM audit_log WHERE endpoint = 'nser staff create' "
        "AND filters->>'staff' = $1",
        made["staff_id"],
    )
    assert audit["actor_type"] == "operator"


async def test_enrolment_then_sign_in(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    member = create_member(database_url, "officer", "me", name="Bilal Ahmed")
    client = browser()
    done = await enrol(client, member.link, member.device, label="Office laptop")
    assert done.status_code == 200, done.text
    assert done.json() == {"redirect": "/staff/sign-in"}
    key = await staff_db.fetchrow(
        "SELECT * FROM staff_passkeys WHERE staff_id = $1", member.staff_id
    )
    assert key["label"] == "Office laptop"
    assert key["transports"] == ["internal"]
    assert key["sign_count"] == 0
    assert key["last_used_at"] is None
    assert bytes(key["credential_id"]) in member.device.credentials

    signed = await sign_in(client, member.device)
    assert signed.status_code == 200, signed.text
    assert signed.json() == {"redirect": "/staff/"}
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith("nser_staff=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie
    assert "Max-Age" not in cookie
    value = client.cookies["nser_staff"]
    session = await staff_db.fetchrow(
        "SELECT * FROM staff_sessions WHERE id_hash = $1", hashlib.sha256(value.encode()).digest()
    )
    assert session["staff_id"] == member.staff_id
    assert session["ended_at"] is None
    assert session["passkey_id"] == key["id"]

    home = await client.get("/staff/")
    assert home.status_code == 200
    assert "Bilal Ahmed" in home.text
    assert "Officer (NSER-MU)" in home.text
    assert "Monitoring and evaluation" in home.text
    assert home.headers["cache-control"] == "no-store"
    assert "unsafe-inline" not in home.headers["content-security-policy"]
    urdu = await client.get("/staff/?lang=ur")
    assert urdu.status_code == 200
    assert 'dir="rtl"' in urdu.text

    used = await staff_db.fetchrow("SELECT * FROM staff_passkeys WHERE id = $1", key["id"])
    assert used["sign_count"] == 1
    assert used["last_used_at"] is not None
    rows = await staff_db.fetch(
        "SELECT endpoint, filters FROM audit_log WHERE client_id = $1 ORDER BY id",
        member.staff_id,
    )
    outcomes = [(r["endpoint"], json.loads(r["filters"])["outcome"]) for r in rows]
    assert outcomes == [("POST /staff/enrol", "enrolled"), ("POST /staff/sign-in", "signed_in")]


async def test_a_link_works_once(database_url: str, browser: Browser) -> None:
    member = create_member(database_url, "committee")
    first = await enrol(browser(), member.link, member.device)
    assert first.status_code == 200, first.text
    again = browser()
    token = await csrf(again, "/staff/enrol")
    answer = await post_json(again, "/staff/enrol/options", {"token": token_of(member.link)}, token)
    assert answer.status_code == 410
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "link_used"


async def test_an_expired_link_is_refused(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    member = create_member(database_url, "committee")
    client = browser()
    token = await csrf(client, "/staff/enrol")
    secret = token_of(member.link)
    options = await post_json(client, "/staff/enrol/options", {"token": secret}, token)
    assert options.status_code == 200
    await staff_db.execute(
        "UPDATE staff_enrolment_links SET created_at = created_at - interval '25 hours', "
        "expires_at = expires_at - interval '25 hours' WHERE staff_id = $1",
        member.staff_id,
    )
    credential = member.device.create(options.json())
    late = await post_json(
        client, "/staff/enrol/verify", {"token": secret, "credential": credential}, token
    )
    assert late.status_code == 410
    assert late.json()["code"] == "link_expired"
    again = await post_json(client, "/staff/enrol/options", {"token": secret}, token)
    assert again.status_code == 410
    assert again.json()["code"] == "link_expired"
    assert (
        await staff_db.fetchval(
            "SELECT count(*) FROM staff_passkeys WHERE staff_id = $1", member.staff_id
        )
        == 0
    )


async def test_a_fresh_link_ends_the_unused_one(database_url: str, browser: Browser) -> None:
    member = create_member(database_url, "secretary")
    fresh = json.loads(
        run_cli(["staff", "enrol-link", member.staff_id, "--json"], database_url).stdout
    )
    client = browser()
    token = await csrf(client, "/staff/enrol")
    old = await post_json(client, "/staff/enrol/options", {"token": token_of(member.link)}, token)
    assert old.status_code == 404
    assert old.json()["code"] == "link_unknown"
    done = await enrol(client, fresh["enrolment_link"], member.device)
    assert done.status_code == 200, done.text


async def test_unknown_or_malformed_links_are_404(browser: Browser) -> None:
    client = browser()
    token = await csrf(client, "/staff/enrol")
    for secret in ("A" * 43, "short", "../../etc"):
        answer = await post_json(client, "/staff/enrol/options", {"token": secret}, token)
        assert answer.status_code == 404, secret
        assert answer.json()["code"] == "link_unknown"


async def test_enrolment_requires_user_verification_and_the_origin(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    member = create_member(database_url, "officer")
    client = browser()
    token = await csrf(client, "/staff/enrol")
    secret = token_of(member.link)
    lazy = Authenticator(origin=ORIGIN, rp_id="nser.test", user_verified=False)
    for device, origin in ((lazy, None), (member.device, "http://evil.test")):
        options = await post_json(client, "/staff/enrol/options", {"token": secret}, token)
        credential = device.create(options.json(), origin=origin)
        refused = await post_json(
            client, "/staff/enrol/verify", {"token": secret, "credential": credential}, token
        )
        assert refused.status_code == 401
        assert refused.json()["code"] == "not_accepted"
    # Nothing was registered and the link still works.
    assert (
        await staff_db.fetchval(
            "SELECT count(*) FROM staff_passkeys WHERE staff_id = $1", member.staff_id
        )
        == 0
    )
    done = await enrol(client, member.link, member.device)
    assert done.status_code == 200, done.text
    failed = await staff_db.fetchval(
        "SELECT count(*) FROM audit_log WHERE client_id = $1 AND endpoint = 'POST /staff/enrol'"
        " AND filters->>'outcome' = 'failed'",
        member.staff_id,
    )
    assert failed == 2


async def test_failed_sign_ins_are_refused_and_audited(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    member = await enrolled(database_url, browser, "officer")
    client = browser(ip="203.0.113.77")
    token = await csrf(client)
    # A passkey the registry does not know.
    stranger = new_device()
    stranger.create(
        {
            "rp": {"id": "nser.test"},
            "user": {"id": "eA"},
            "challenge": "AAAA",
            "authenticatorSelection": {"userVerification": "required", "residentKey": "required"},
        }
    )
    options = await post_json(client, "/staff/sign-in/options", {}, token)
    unknown = await post_json(
        client, "/staff/sign-in/verify", {"credential": stranger.get(options.json())}, token
    )
    assert unknown.status_code == 401
    assert unknown.json()["code"] == "unknown_passkey"
    # No user verification.
    member.device.user_verified = False
    options = await post_json(client, "/staff/sign-in/options", {}, token)
    lazy = await post_json(
        client, "/staff/sign-in/verify", {"credential": member.device.get(options.json())}, token
    )
    member.device.user_verified = True
    assert lazy.status_code == 401
    assert lazy.json()["code"] == "not_accepted"
    # A replayed answer: its challenge is used up.
    options = await post_json(client, "/staff/sign-in/options", {}, token)
    answer = member.device.get(options.json())
    first = await post_json(client, "/staff/sign-in/verify", {"credential": answer}, token)
    assert first.status_code == 200
    replay = await post_json(browser(), "/staff/sign-in/verify", {"credential": answer}, token)
    assert replay.status_code in (401, 403)
    again = await post_json(client, "/staff/sign-in/verify", {"credential": answer}, token)
    assert again.status_code == 401
    assert again.json()["code"] == "challenge"
    # Malformed answers are a 4xx, never a 500.
    for bad in ({}, {"rawId": "!!", "response": {}}, {"rawId": "A" * 40, "response": {}}):
        answer = await post_json(client, "/staff/sign-in/verify", {"credential": bad}, token)
        assert answer.status_code == 401
        assert answer.json()["code"] == "malformed"
    failed = await staff_db.fetch(
        "SELECT actor_type, client_id, filters->>'reason' AS reason FROM audit_log "
        "WHERE endpoint = 'POST /staff/sign-in' AND filters->>'client' = '203.0.113.77' "
        "AND filters->>'outcome' = 'failed' ORDER BY id"
    )
    reasons = [(r["actor_type"], r["client_id"], r["reason"]) for r in failed]
    assert reasons[:3] == [
        ("anonymous", None, "unknown_passkey"),
        ("staff", member.staff_id, "not_accepted"),
        ("staff", member.staff_id, "challenge"),
    ]
    assert [r["reason"] for r in failed[3:]] == ["malformed"] * 3


async def test_the_ceremonies_need_the_csrf_header_and_json(browser: Browser) -> None:
    client = browser()
    token = await csrf(client)
    missing = await client.post("/staff/sign-in/options", json={})
    assert missing.status_code == 403
    assert missing.json()["code"] == "csrf"
    forged = await post_json(client, "/staff/sign-in/options", {}, "0" * 64)
    assert forged.status_code == 403
    as_form = await client.post(
        "/staff/sign-in/options", data={"x": "1"}, headers={"X-CSRF-Token": token}
    )
    assert as_form.status_code == 400
    extra = await post_json(client, "/staff/sign-in/options", {"surprise": 1}, token)
    assert extra.status_code == 422


async def test_idle_sessions_end(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    member = await enrolled(database_url, browser, "officer")
    client = browser()
    assert (await sign_in(client, member.device)).status_code == 200
    key = await session_hash(client)
    # 14 minutes idle: still open, and the request counts as activity.
    await staff_db.execute(
        "UPDATE staff_sessions SET last_seen_at = now() - interval '14 minutes' WHERE id_hash = $1",
        key,
    )
    assert (await client.get("/staff/")).status_code == 200
    seen = await staff_db.fetchval(
        "SELECT now() - last_seen_at FROM staff_sessions WHERE id_hash = $1", key
    )
    assert seen < timedelta(minutes=1)
    # 15 minutes idle: over.
    await staff_db.execute(
        "UPDATE staff_sessions SET last_seen_at = now() - interval '15 minutes 1 second' "
        "WHERE id_hash = $1",
        key,
    )
    gone = await client.get("/staff/admin/staff?lang=ur")
    assert gone.status_code == 303
    assert gone.headers["location"] == (
        "/staff/sign-in?next=%2Fstaff%2Fadmin%2Fstaff%3Flang%3Dur&lang=ur&ended=expired"
    )
    assert 'nser_staff=""' in gone.headers["set-cookie"]
    row = await staff_db.fetchrow("SELECT * FROM staff_sessions WHERE id_hash = $1", key)
    assert row["ended_reason"] == "idle"
    # The page it was sent to says so, in the visitor's language.
    notice = await client.get(gone.headers["location"])
    assert notice.status_code == 200
    assert "notice" in notice.text


async def test_sessions_end_after_eight_hours_whatever_happens(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    member = await enrolled(database_url, browser, "officer")
    client = browser()
    assert (await sign_in(client, member.device)).status_code == 200
    key = await session_hash(client)
    await staff_db.execute(
        "UPDATE staff_sessions SET created_at = now() - interval '7 hours 59 minutes' "
        "WHERE id_hash = $1",
        key,
    )
    assert (await client.get("/staff/")).status_code == 200
    await staff_db.execute(
        "UPDATE staff_sessions SET created_at = now() - interval '8 hours 1 second' "
        "WHERE id_hash = $1",
        key,
    )
    assert (await client.get("/staff/")).status_code == 303
    reason = await staff_db.fetchval(
        "SELECT ended_reason FROM staff_sessions WHERE id_hash = $1", key
    )
    assert reason == "expired"


async def test_sign_out_ends_the_session_at_once(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    member = await enrolled(database_url, browser, "officer")
    client = browser()
    assert (await sign_in(client, member.device)).status_code == 200
    cookie = client.cookies["nser_staff"]
    key = await session_hash(client)
    # Without the form's CSRF field nothing happens.
    refused = await client.post("/staff/sign-out", data={"stay": "1"})
    assert refused.status_code == 403
    assert (await client.get("/staff/")).status_code == 200
    token = await csrf(client, "/staff/")
    out = await client.post("/staff/sign-out", data={"csrf_token": token})
    assert out.status_code == 303
    assert out.headers["location"] == "/staff/sign-in?ended=signed_out&lang=en"
    row = await staff_db.fetchrow("SELECT * FROM staff_sessions WHERE id_hash = $1", key)
    assert row["ended_reason"] == "sign_out"
    # The old cookie, presented again, opens nothing.
    stolen = browser()
    stolen.cookies.set("nser_staff", cookie)
    assert (await stolen.get("/staff/")).status_code == 303
    audit = await staff_db.fetchval(
        "SELECT count(*) FROM audit_log WHERE client_id = $1 AND endpoint = 'POST /staff/sign-out'",
        member.staff_id,
    )
    assert audit == 1


async def test_pages_need_a_session(browser: Browser) -> None:
    client = browser()
    for path in ("/staff/", "/staff/admin/staff", "/staff/step-up?next=/staff/"):
        answer = await client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/staff/sign-in?next=")
    step = await post_json(client, "/staff/step-up/options", {}, await csrf(client))
    assert step.status_code == 401
    assert step.json()["code"] == "signed_out"


async def test_next_stays_in_the_console(database_url: str, browser: Browser) -> None:
    member = await enrolled(database_url, browser, "officer")
    for target, expected in (
        ("/staff/admin/staff", "/staff/admin/staff"),
        ("https://evil.example/", "/staff/"),
        ("//evil.example/staff/", "/staff/"),
        ("/staff/../v1/", "/staff/"),
        ("/check", "/staff/"),
    ):
        signed = await sign_in(browser(), member.device, next_=target)
        assert signed.json() == {"redirect": expected}, target


async def test_what_the_browser_says_is_kept_only_if_it_makes_sense(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    member = create_member(database_url, "officer")
    client = browser()
    token = await csrf(client, "/staff/enrol")
    secret = token_of(member.link)
    options = await post_json(client, "/staff/enrol/options", {"token": secret}, token)
    credential = member.device.create(options.json())
    credential["response"]["transports"] = [{"x": 1}, "usb", 5, "teleport", "hybrid"]
    label = "  Work\u00a0 phone   " + "x" * 120
    done = await post_json(
        client,
        "/staff/enrol/verify",
        {"token": secret, "credential": credential, "label": label[:100]},
        token,
    )
    assert done.status_code == 200, done.text
    key = await staff_db.fetchrow(
        "SELECT transports, label FROM staff_passkeys WHERE staff_id = $1", member.staff_id
    )
    assert key["transports"] == ["usb", "hybrid"]
    assert key["label"].startswith("Work phone xxx")
    too_long = await post_json(
        client,
        "/staff/enrol/verify",
        {"token": secret, "credential": credential, "label": "y" * 101},
        token,
    )
    assert too_long.status_code == 422
