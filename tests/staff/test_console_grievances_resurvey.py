"""The console's re-survey form over HTTP: the list-valued indicators as checkbox groups
(electrical and gas equipment, kitchen assets) reach the household through the staff batch
and the ingest worker, read back through the staff API's household history; bad choices are
refused per field and queue nothing; and the household's version shown on the page travels
as ``expected_version``, so a household changed meanwhile refuses the survey as a conflict,
changes nothing, and the page says why and offers the form again."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import fresh_database
from partner_helpers import bearer, get_token
from staff_helpers import Browser, browser, post_form, signed_in_member, staff_db

from app.models.registry import ELECTRICAL, KITCHEN

__all__ = ["browser", "staff_db"]  # the fixtures

LIST = "/staff/grievances"
VERSION = re.compile(r'<input type="hidden" name="expected_version" value="(\d+)">')


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A registry of its own: re-surveys change its households."""
    with fresh_database(households=80, seed=47) as url:
        yield url


async def households(db: asyncpg.Connection, count: int) -> list[asyncpg.Record]:
    """``count`` scored households, each with a living member's CNIC."""
    rows = await db.fetch(
        """SELECT DISTINCT ON (h.id) h.id AS household_id, m.cnic, h.version, h.rooms,
                  h.electrical, h.gas, h.kitchen
             FROM households h JOIN members m ON m.household_id = h.id
            WHERE m.cnic IS NOT NULL AND m.deceased_on IS NULL AND h.pmt_score IS NOT NULL
            ORDER BY h.id, m.id LIMIT $1""",
        count,
    )
    assert len(rows) == count
    return rows


async def ordered_grievance(browser: Browser, officer: httpx.AsyncClient, cnic: str) -> str:
    """A grievance filed on ``cnic``, triaged, with a re-survey ordered."""
    filed = await browser().post(
        "/v1/public/grievances",
        json={"cnic": cnic, "reason": "wrong_assets", "details": "We sold the fridge"},
    )
    assert filed.status_code == 201, filed.text
    ref: str = filed.json()["reference"]
    for action in ("triage", "order_resurvey"):
        done = await post_form(officer, f"{LIST}/{ref}/actions/{action}")
        assert done.status_code == 303, done.text
    return ref


async def applied(db: asyncpg.Connection, ref: str) -> dict[str, Any]:
    """The grievance's re-survey batch once the in-process ingest worker has finished it."""
    for _ in range(600):
        row = await db.fetchrow(
            """SELECT b.id, b.status, r.outcome, r.reasons FROM grievances g
                 JOIN update_batches b ON b.id = g.resurvey_batch_id
                 LEFT JOIN update_results r ON r.batch_id = b.id
                WHERE g.reference = $1""",
            ref,
        )
        if row is not None and row["status"] == "done":
            return dict(row)
        await asyncio.sleep(0.1)
    raise AssertionError(f"the re-survey of {ref} was not applied")


def changed(current: list[str] | None, items: tuple[str, ...]) -> list[str]:
    """A list of ``items`` other than ``current``."""
    held = set(current or [])
    other = [item for item in items if item not in held]
    return other[:2] if other else []


async def test_list_indicators_reach_the_household(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    officer_member, officer = await signed_in_member(database_url, browser, "officer")
    (hh,) = await households(staff_db, 1)
    ref = await ordered_grievance(browser, officer, hh["cnic"])
    gid = await staff_db.fetchval("SELECT id FROM grievances WHERE reference = $1", ref)

    page = await officer.get(f"{LIST}/{ref}")
    assert page.status_code == 200
    for legend in ("Electrical equipment", "Gas equipment", "Kitchen assets"):
        assert f"<legend>{legend}</legend>" in page.text
    for name, value in (("electrical", "refrigerator"), ("gas", "geyser"), ("kitchen", "none")):
        assert f'type="checkbox" name="{name}" value="{value}"' in page.text
    assert 'for="record_resurvey-electrical-air_cooler">Air cooler</label>' in page.text
    found = VERSION.search(page.text)
    assert found, "the household's version travels with the form"
    assert int(found.group(1)) == hh["version"]

    # Bad choices: each refused on its own group, the ticks kept, nothing queued.
    cases: list[tuple[dict[str, str | list[str]], str, str]] = [
        ({"electrical": ["refrigerator", "jacuzzi"]}, "electrical", "Tick only the items listed"),
        ({"gas": ["none", "geyser"]}, "gas", "not both"),
        ({"kitchen": ["cooking_stove", "cooking_stove"]}, "kitchen", "Tick only the items listed"),
        ({"electrical": "television", "expected_version": "abc"}, "expected_version", "reload"),
        ({"electrical": "television", "expected_version": "0"}, "expected_version", "reload"),
        ({"electrical": "television", "expected_version": "²"}, "expected_version", "reload"),
        ({"cows": "²"}, "cows", "Enter a number in the allowed range"),
    ]
    for fields, name, message in cases:
        bad = await post_form(officer, f"{LIST}/{ref}/resurvey", fields)
        assert bad.status_code == 422, (fields, bad.text[-2000:])
        assert message in bad.text, fields
        assert f'href="#record_resurvey-{name}"' in bad.text  # the summary links the field
        assert f'id="record_resurvey-{name}"' in bad.text
    kept = await post_form(officer, f"{LIST}/{ref}/resurvey", gas=["none", "geyser"])
    assert 'aria-describedby="record_resurvey-gas-error record_resurvey-lists-hint"' in kept.text
    assert 'id="record_resurvey-gas-geyser" checked' in kept.text
    assert (
        await staff_db.fetchval("SELECT resurvey_batch_id FROM grievances WHERE id = $1", gid)
        is None
    )

    electrical = changed(hh["electrical"], ELECTRICAL)
    kitchen = changed(hh["kitchen"], KITCHEN) or list(KITCHEN)
    fields: dict[str, str | list[str]] = {
        "electrical": electrical or "none",
        "gas": "none",
        "kitchen": kitchen,
        "expected_version": found.group(1),
        "notes": "visited",
    }
    sent = await post_form(officer, f"{LIST}/{ref}/resurvey", fields)
    assert sent.status_code == 303, sent.text
    batch = await applied(staff_db, ref)
    assert batch["outcome"] == "applied", batch

    # Read back through the staff API: the household's history shows the lists now held.
    api = browser()
    token = await get_token(api, officer_member.staff_id, officer_member.client_secret)
    history = await api.get(f"/v1/households/{hh['household_id']}/history", headers=bearer(token))
    assert history.status_code == 200, history.text
    body = history.json()
    assert body["current_version"] == hh["version"] + 1
    last = body["items"][-1]
    assert (last["change"], last["source"], last["ref"]) == ("household_survey", "staff", ref)
    assert last["after"]["electrical"] == electrical
    assert last["after"]["kitchen"] == kitchen
    if hh["gas"]:
        assert last["after"]["gas"] == []
    else:  # it already had none: not a change
        assert "gas" not in last["after"]
    page = await officer.get(f"{LIST}/{ref}")
    assert 'id="resurvey-conflict"' not in page.text


async def test_a_stale_version_is_refused_and_changes_nothing(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    _, officer = await signed_in_member(database_url, browser, "officer")
    _, colleague = await signed_in_member(database_url, browser, "officer")
    hh = (await households(staff_db, 2))[1]
    ref = await ordered_grievance(browser, officer, hh["cnic"])
    # The officer opens the page: the form carries the household's version as shown.
    page = await officer.get(f"{LIST}/{ref}")
    seen = VERSION.search(page.text)
    assert seen
    assert int(seen.group(1)) == hh["version"]

    # Meanwhile a colleague's re-survey of the same household (another grievance) lands.
    other = await ordered_grievance(browser, colleague, hh["cnic"])
    first = await post_form(
        colleague, f"{LIST}/{other}/resurvey", rooms=str((hh["rooms"] or 0) + 1)
    )
    assert first.status_code == 303, first.text
    assert (await applied(staff_db, other))["outcome"] == "applied"
    before = await staff_db.fetchrow(
        "SELECT version, rooms, electrical, gas, kitchen, pmt_score FROM households WHERE id = $1",
        hh["household_id"],
    )
    assert before["version"] == hh["version"] + 1

    # The officer sends the form as it was shown: refused as a conflict, nothing changed.
    stale = await post_form(
        officer,
        f"{LIST}/{ref}/resurvey",
        electrical=changed(before["electrical"], ELECTRICAL) or "none",
        rooms="9",
        expected_version=seen.group(1),
    )
    assert stale.status_code == 303, stale.text
    batch = await applied(staff_db, ref)
    assert batch["outcome"] == "conflict", batch
    assert batch["reasons"] == [
        f"expected_version {hh['version']} is not the household's current version"
    ]
    after = await staff_db.fetchrow(
        "SELECT version, rooms, electrical, gas, kitchen, pmt_score FROM households WHERE id = $1",
        hh["household_id"],
    )
    assert dict(after) == dict(before)

    # The page says why, and offers the form again on the household as it is now.
    page = await officer.get(f"{LIST}/{ref}")
    notice = page.text[page.text.index('id="resurvey-conflict"') :][:800]
    assert "the household changed after the form was opened" in notice
    assert "Nothing was changed." in notice
    assert f"now at version {before['version']}" in notice
    fresh = VERSION.search(page.text)
    assert fresh
    assert int(fresh.group(1)) == before["version"]
    again = await post_form(
        officer, f"{LIST}/{ref}/resurvey", rooms="9", expected_version=fresh.group(1)
    )
    assert again.status_code == 303
    assert (await applied_after(staff_db, ref, batch["id"]))["outcome"] == "applied"
    assert (
        await staff_db.fetchval("SELECT rooms FROM households WHERE id = $1", hh["household_id"])
        == 9
    )


async def applied_after(db: asyncpg.Connection, ref: str, previous: uuid.UUID) -> dict[str, Any]:
    """The grievance's next re-survey batch (after ``previous``) once applied."""
    for _ in range(600):
        batch = await applied(db, ref)
        if batch["id"] != previous:
            return batch
        await asyncio.sleep(0.1)
    raise AssertionError(f"no new re-survey of {ref}")
