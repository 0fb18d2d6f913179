"""The console's programme pages over HTTP: who may manage them (403 as a page), the
form's errors, a new programme, the rule editor's preview (a simulation queued for the
worker, followed on the editor, nothing saved) and its save, close with step-up and
reopen, and the audit rows."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from conftest import fresh_database
from staff_helpers import (
    Browser,
    browser,
    post_form,
    signed_in_member,
    staff_db,
    step_up,
)

__all__ = ["browser", "staff_db"]  # the fixtures

LIST = "/staff/programmes"


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with fresh_database(households=200, seed=32) as url:
        yield url


async def organization(db: asyncpg.Connection) -> str:
    return str(
        await db.fetchval(
            "INSERT INTO organizations (name, type) VALUES ('Console test office', 'government') "
            "RETURNING id"
        )
    )


async def test_create_preview_save_close_and_reopen(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    admin, c = await signed_in_member(database_url, browser, "admin")
    org = await organization(staff_db)
    assert (await c.get(LIST)).status_code == 200
    assert (await c.get(f"{LIST}/new")).status_code == 200

    good = {
        "code": "console-pilot",
        "name": "Console pilot",
        "organization_id": org,
        "unit": "household",
        "cut_off": "30",
        "geography": "",
        "note": "first",
    }
    # Bad input: each field says what is wrong; nothing is stored.
    bad = await post_form(
        c, f"{LIST}/new", {**good, "code": "Bad Code", "cut_off": "300", "organization_id": ""}
    )
    assert bad.status_code == 422
    assert "Enter a code of 2 to 40" in bad.text
    assert "Enter a cut-off score from 0 to 100" in bad.text
    assert "Choose the organization" in bad.text
    unknown = await post_form(c, f"{LIST}/new", {**good, "geography": "ZZ99"})
    assert unknown.status_code == 422
    assert "not a known unit code" in unknown.text
    raised = await post_form(c, f"{LIST}/new", {**good, "raised_cut_off_0": "35"})
    assert raised.status_code == 422
    assert "Each raised cut-off needs a condition" in raised.text
    assert await staff_db.fetchval("SELECT count(*) FROM programmes") == 0

    made = await post_form(c, f"{LIST}/new", good)
    assert made.status_code == 303, made.text
    assert made.headers["location"] == f"{LIST}/console-pilot?done=created&lang=en"
    again = await post_form(c, f"{LIST}/new", good)
    assert again.status_code == 409
    assert "exists already" in again.text

    editor = await c.get(f"{LIST}/console-pilot/versions/new")
    assert editor.status_code == 200
    assert 'value="preview"' in editor.text  # an administrator may run simulations
    rule = {"unit": "household", "cut_off": "45", "geography": "", "note": "wider"}
    queued = await post_form(c, f"{LIST}/console-pilot/versions/new", {**rule, "intent": "preview"})
    # The preview is a simulation queued for the worker, never run in the request: the
    # editor again, filled with the candidate rule, following its progress.
    assert queued.status_code == 303, queued.text
    found = re.fullmatch(
        rf"{LIST}/console-pilot/versions/new\?preview=([0-9a-f-]{{36}})&lang=en",
        queued.headers["location"],
    )
    assert found, queued.headers["location"]
    for _ in range(600):  # the in-process worker runs it
        preview = await c.get(queued.headers["location"])
        assert preview.status_code == 200, preview.text
        if 'data-status="done"' in preview.text:
            break
        assert "/staff/static/refresh.js" in preview.text
        assert "<progress" in preview.text
        await asyncio.sleep(0.1)
    assert 'data-status="done"' in preview.text
    assert "refresh.js" not in preview.text
    assert 'value="45"' in preview.text  # the candidate's cut-off, in the form again
    assert "Households entering and leaving eligibility, by province" in preview.text
    # Another programme's preview, or none, is not found here.
    other = await c.get(f"{LIST}/console-pilot/versions/new?preview={uuid.uuid4()}")
    assert other.status_code == 404
    bad = await c.get(f"{LIST}/console-pilot/versions/new?preview=nope")
    assert bad.status_code == 422
    assert await staff_db.fetchval("SELECT count(*) FROM programme_rules") == 1  # not saved
    expected = await staff_db.fetchval(
        "SELECT count(*) FROM households WHERE pmt_score >= 30 AND pmt_score < 45"
    )
    assert f"Entering: {expected:,}" in preview.text
    saved = await post_form(c, f"{LIST}/console-pilot/versions/new", {**rule, "intent": "save"})
    assert saved.status_code == 303
    assert await staff_db.fetchval("SELECT max(version) FROM programme_rules") == 2

    # Closing needs a recent passkey verification; a missing reason is a form error.
    await staff_db.execute(
        "UPDATE staff_sessions SET last_verified_at = now() - interval '1 hour' "
        "WHERE staff_id = $1",
        admin.staff_id,
    )
    stale = await post_form(c, f"{LIST}/console-pilot/close", {"reason": "ended"})
    assert stale.status_code == 303
    assert stale.headers["location"].startswith("/staff/step-up?next=")
    await step_up(c, admin.device, f"{LIST}/console-pilot")
    empty = await post_form(c, f"{LIST}/console-pilot/close", {"reason": " "})
    assert empty.status_code == 422
    assert "Give the reason" in empty.text
    closed = await post_form(c, f"{LIST}/console-pilot/close", {"reason": "budget ended"})
    assert closed.status_code == 303
    twice = await post_form(c, f"{LIST}/console-pilot/close", {"reason": "again"})
    assert twice.status_code == 409
    assert "Nothing was changed" in twice.text
    reopened = await post_form(c, f"{LIST}/console-pilot/reopen", {"reason": "funded"})
    assert reopened.status_code == 303

    endpoints = {
        r["endpoint"]
        for r in await staff_db.fetch(
            "SELECT endpoint FROM audit_log WHERE client_id = $1",
            admin.staff_id,
        )
    }
    assert {
        "POST /v1/staff/programmes",
        "POST /staff/programmes/{programme_id}/versions/new (preview)",
        "POST /v1/staff/programmes/{programme_id}/versions",
        "POST /v1/staff/programmes/{programme_id}/close",
        "POST /v1/staff/programmes/{programme_id}/reopen",
    } <= endpoints


async def test_roles(database_url: str, browser: Browser, staff_db: asyncpg.Connection) -> None:
    _, me = await signed_in_member(database_url, browser, "me")
    for path in (LIST, f"{LIST}/new"):
        refused = await me.get(path)
        assert refused.status_code == 403
        assert "Programmes are managed by" in refused.text
    forced = await post_form(me, f"{LIST}/new", {"code": "x"})
    assert forced.status_code == 403
    # An officer manages programmes but does not run simulations: no preview offered, and
    # a forced preview is refused with the reason.
    org = await organization(staff_db)
    _, officer = await signed_in_member(database_url, browser, "officer")
    made = await post_form(
        officer,
        f"{LIST}/new",
        {"code": "officer-prog", "name": "Officer", "organization_id": org, "cut_off": "20"},
    )
    assert made.status_code == 303
    editor = await officer.get(f"{LIST}/officer-prog/versions/new")
    assert 'value="preview"' not in editor.text
    peek = await officer.get(f"{LIST}/officer-prog/versions/new?preview={uuid.uuid4()}")
    assert peek.status_code == 403
    forced = await post_form(
        officer, f"{LIST}/officer-prog/versions/new", {"cut_off": "25", "intent": "preview"}
    )
    assert forced.status_code == 403
    assert "do not include running simulations" in forced.text
