"""The console's grievance pages over HTTP: who may read and act (403 shown as a page), the
state machine's 409 as a message, form errors, the re-survey as a staff update batch
applied by the ingest worker, and the audit rows of every read and action."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
from conftest import fresh_database
from staff_helpers import (
    Browser,
    browser,
    post_form,
    signed_in_member,
    staff_db,
)

__all__ = ["browser", "staff_db"]  # the fixtures

LIST = "/staff/grievances"


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A registry of its own (re-surveys change households), for the console's fixtures."""
    with fresh_database(households=200, seed=31) as url:
        yield url


async def file_grievance(client: httpx.AsyncClient, cnic: str) -> str:
    filed = await client.post(
        "/v1/public/grievances",
        json={"cnic": cnic, "reason": "wrong_assets", "details": "We sold the cows"},
    )
    assert filed.status_code == 201, filed.text
    reference: str = filed.json()["reference"]
    return reference


async def member_of(db: asyncpg.Connection) -> asyncpg.Record:
    row = await db.fetchrow(
        """SELECT m.cnic, h.id AS household_id, h.cows
             FROM members m JOIN households h ON h.id = m.household_id
            WHERE m.cnic IS NOT NULL AND m.deceased_on IS NULL AND h.pmt_score IS NOT NULL
            ORDER BY h.id, m.id LIMIT 1"""
    )
    assert row is not None
    return row


async def test_an_officer_triages_resurveys_and_resolves(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    officer_member, officer = await signed_in_member(database_url, browser, "officer")
    officer_id = officer_member.staff_id
    row = await member_of(staff_db)
    ref = await file_grievance(browser(), row["cnic"])
    gid = await staff_db.fetchval("SELECT id FROM grievances WHERE reference = $1", ref)

    listed = await officer.get(LIST, params={"status": "received"})
    assert listed.status_code == 200
    assert ref in listed.text
    page = await officer.get(f"{LIST}/{ref}")
    assert page.status_code == 200
    assert row["cnic"] in page.text  # the full CNIC, for staff
    assert "What each indicator adds to the score" in page.text  # the explanation
    assert "/actions/triage" in page.text
    assert "/resurvey?" not in page.text
    assert "/actions/resolve" not in page.text  # not from "received"

    # Resolving too early: the machine's 409, shown as a message.
    early = await post_form(officer, f"{LIST}/{ref}/actions/resolve", reasons="fine")
    assert early.status_code == 409
    assert "not possible now" in early.text
    assert "received" in early.text
    # Bad input: the reasons are required, and the form says so.
    empty = await post_form(officer, f"{LIST}/{ref}/actions/reject", reasons="")
    assert empty.status_code == 422
    assert "Write the reasons" in empty.text
    assert 'aria-invalid="true"' in empty.text
    # A field the form does not have.
    odd = await post_form(officer, f"{LIST}/{ref}/actions/triage", notes="x", status="closed")
    assert odd.status_code == 422

    done = await post_form(officer, f"{LIST}/{ref}/actions/triage", notes="assets disputed")
    assert done.status_code == 303
    assert done.headers["location"] == f"{LIST}/{ref}?done=triage&lang=en"
    ordered = await post_form(officer, f"{LIST}/{ref}/actions/order_resurvey")
    assert ordered.status_code == 303
    page = await officer.get(f"{LIST}/{ref}")
    assert "/resurvey?" in page.text

    # The re-survey's form: a bad number, then nothing at all, then a real survey.
    bad = await post_form(officer, f"{LIST}/{ref}/resurvey", cows="-3")
    assert bad.status_code == 422
    assert "Enter a number in the allowed range" in bad.text
    nothing = await post_form(officer, f"{LIST}/{ref}/resurvey", notes="x")
    assert nothing.status_code == 422
    assert "at least one indicator" in nothing.text
    cows = (row["cows"] or 0) + 7
    sent = await post_form(officer, f"{LIST}/{ref}/resurvey", cows=str(cows), notes="visited")
    assert sent.status_code == 303, sent.text
    batch = await staff_db.fetchrow(
        """SELECT b.id, b.client_id FROM grievances g JOIN update_batches b
             ON b.id = g.resurvey_batch_id WHERE g.id = $1""",
        gid,
    )
    assert batch["client_id"] == officer_id  # a staff batch, by the member
    for _ in range(600):  # the in-process ingest worker applies it
        status = await staff_db.fetchval(
            "SELECT status FROM update_batches WHERE id = $1", batch["id"]
        )
        if status == "done":
            break
        await asyncio.sleep(0.1)
    assert status == "done"
    assert (
        await staff_db.fetchval("SELECT cows FROM households WHERE id = $1", row["household_id"])
        == cows
    )

    resolved = await post_form(
        officer, f"{LIST}/{ref}/actions/resolve", reasons="The household was visited again."
    )
    assert resolved.status_code == 303
    page = await officer.get(resolved.headers["location"])
    assert "The grievance was resolved" in page.text
    assert "Your roles allow no action" in page.text

    endpoints = [
        r["endpoint"]
        for r in await staff_db.fetch(
            "SELECT endpoint FROM audit_log WHERE client_id = $1 ORDER BY id", officer_id
        )
    ]
    for expected in (
        "GET /v1/staff/grievances",
        "GET /v1/staff/grievances/{grievance_id}",
        "/v1/staff/households/{household_id}/score-explanation",
        "POST /v1/staff/grievances/{grievance_id}/actions/triage",
        "POST /v1/staff/grievances/{grievance_id}/actions/order_resurvey",
        "POST /v1/staff/grievances/{grievance_id}/resurvey",
        "POST /v1/staff/grievances/{grievance_id}/actions/resolve",
    ):
        assert expected in endpoints, (expected, endpoints)


async def test_roles(database_url: str, browser: Browser, staff_db: asyncpg.Connection) -> None:
    row = await member_of(staff_db)
    ref = await file_grievance(browser(), row["cnic"])
    _, me = await signed_in_member(database_url, browser, "me")
    _, admin = await signed_in_member(database_url, browser, "admin")
    # M&E reads, with no action offered; a forced POST is refused with the reason.
    page = await me.get(f"{LIST}/{ref}")
    assert page.status_code == 200
    assert "/actions/" not in page.text
    assert "Your roles allow no action" in page.text
    forced = await post_form(me, f"{LIST}/{ref}/actions/triage")
    assert forced.status_code == 403
    assert "Your roles do not allow this action" in forced.text
    forced = await post_form(me, f"{LIST}/{ref}/resurvey", cows="1")
    assert forced.status_code == 403
    # An administrator does not read grievances (and has no link to them).
    for path in (LIST, f"{LIST}/{ref}"):
        refused = await admin.get(path)
        assert refused.status_code == 403
        assert "Not allowed" in refused.text
    assert 'href="/staff/grievances' not in (await admin.get("/staff/")).text
    # A status the machine does not know: the filter is refused.
    assert (await me.get(LIST, params={"status": "lost"})).status_code == 422
    assert (await me.get(f"{LIST}/GRV-2026-99999999")).status_code == 404
    assert re.search(r'<html[^>]*dir="rtl"', (await me.get(f"{LIST}/{ref}?lang=ur")).text)
