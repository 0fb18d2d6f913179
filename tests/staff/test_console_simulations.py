"""The console's simulation pages over HTTP: who may run them (403 as a page), the form's
errors, a simulation started (audited), followed while the worker runs it, and its result
as tables and SVG bars."""

from __future__ import annotations

import asyncio
import re
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
)

__all__ = ["browser", "staff_db"]  # the fixtures

LIST = "/staff/simulations"


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with fresh_database(households=200, seed=33) as url:
        yield url


@pytest.fixture(scope="module")
async def programme(staff_db: asyncpg.Connection) -> str:
    org = await staff_db.fetchval(
        "INSERT INTO organizations (name, type) VALUES ('Sim office', 'government') RETURNING id"
    )
    pid = await staff_db.fetchval(
        "INSERT INTO programmes (code, name, organization_id) VALUES ('sim-prog', 'Sim', $1) "
        "RETURNING id",
        org,
    )
    await staff_db.execute(
        """INSERT INTO programme_rules (programme_id, version, rule, created_by)
           VALUES ($1, 1, '{"unit": "household", "cut_off": 30, "raised_cut_offs": [],
                   "geography": [], "requires": []}', 'test')""",
        pid,
    )
    return "sim-prog"


async def test_start_follow_and_read(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection, programme: str
) -> None:
    me_member, c = await signed_in_member(database_url, browser, "me")
    me_id = me_member.staff_id
    start = await c.get(LIST)
    assert start.status_code == 200
    assert programme in start.text
    # Bad input: no programme; no candidate; a bad amount.
    none = await post_form(c, LIST, {"transfer_amount": "2000", "cut_off": "40"})
    assert none.status_code == 422
    assert "Choose the programme" in none.text
    nothing = await post_form(c, LIST, {"programme_id": programme, "transfer_amount": "2000"})
    assert nothing.status_code == 422
    assert "Give a candidate" in nothing.text
    amount = await post_form(
        c, LIST, {"programme_id": programme, "transfer_amount": "lots", "cut_off": "40"}
    )
    assert amount.status_code == 422
    assert "Enter the amount in rupees" in amount.text
    assert await staff_db.fetchval("SELECT count(*) FROM simulations") == 0

    started = await post_form(
        c,
        LIST,
        {"programme_id": programme, "transfer_amount": "2500", "cut_off": "40", "label": "wider"},
    )
    assert started.status_code == 303, started.text
    found = re.fullmatch(rf"{LIST}/([0-9a-f-]{{36}})\?lang=en", started.headers["location"])
    assert found
    sim_id = found.group(1)
    for _ in range(600):  # the in-process worker runs it
        page = await c.get(f"{LIST}/{sim_id}")
        assert page.status_code == 200
        if 'data-status="done"' in page.text:
            break
        assert "Refresh" in page.text  # without JavaScript, a link
        assert "/staff/static/refresh.js" in page.text
        await asyncio.sleep(0.1)
    assert 'data-status="done"' in page.text
    assert "refresh.js" not in page.text
    assert "<svg" in page.text
    assert "Households entering and leaving eligibility, by province" in page.text
    entering = await staff_db.fetchval(
        "SELECT count(*) FROM households WHERE pmt_score >= 30 AND pmt_score < 40"
    )
    assert f"Entering: {entering:,} households" in page.text
    assert (
        await staff_db.fetchval(
            "SELECT count(*) FROM audit_log WHERE client_id = $1 AND endpoint = $2",
            me_id,
            "/v1/staff/simulations",
        )
        == 1
    )
    assert (await c.get(LIST)).text.count(sim_id) >= 1
    assert (await c.get(f"{LIST}/{sim_id}", params={"lang": "ur"})).status_code == 200


async def test_roles(database_url: str, browser: Browser) -> None:
    _, officer = await signed_in_member(database_url, browser, "officer")
    refused = await officer.get(LIST)
    assert refused.status_code == 403
    assert "Simulations are run by" in refused.text
    forced = await post_form(officer, LIST, {"programme_id": "sim-prog"})
    assert forced.status_code == 403
    assert 'href="/staff/simulations' not in (await officer.get("/staff/")).text
    assert (await officer.get(f"{LIST}/not-an-id")).status_code in (403, 422)
