"""An update batch is not a look-up service (issue: the update oracle).

A partner's records are matched only inside its agreement's geography; outcomes and
reasons never repeat registry data the agreement does not grant; "unchanged" never
confirms a guessed value the partner may not read; every batch, dry runs included, is
audited with the households it matched; an agreement may send only so many records an
hour; dry runs show in the M&E updates report.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from conftest import fresh_database, make_settings, open_client, run_cli
from partner_helpers import create_partner, get_token
from updates_helpers import headers, send

from app.schemas.updates import UPDATE_KINDS

TODAY = date.today()


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=1200, seed=41) as u:
        yield u


@pytest.fixture(scope="module")
async def client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(make_settings(url)):
        yield c


@pytest.fixture(scope="module")
async def db(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
async def provinces(db: asyncpg.Connection) -> tuple[str, str]:
    """(ours, theirs): the two provinces with the most households."""
    rows = await db.fetch(
        "SELECT province_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 2"
    )
    assert len(rows) == 2
    return rows[0]["province_code"], rows[1]["province_code"]


async def scoped_partner(
    url: str,
    client: httpx.AsyncClient,
    name: str,
    province: str,
    *,
    categories: str = "iii",
    dimensions: str | None = None,
) -> dict[str, str]:
    """A partner of one province, allowed every update kind."""
    partner = create_partner(
        url,
        name=name,
        categories=categories,
        dimensions=dimensions,
        geo=province,
        update_kinds="member_birth",
    )
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE agreements SET update_kinds = $1 WHERE id = $2::uuid",
            list(UPDATE_KINDS),
            partner["agreement_id"],
        )
    finally:
        await conn.close()
    token = await get_token(client, partner["client_id"], partner["client_secret"])
    return {**partner, "token": token}


@pytest.fixture(scope="module")
async def ours(url: str, client: httpx.AsyncClient, provinces: tuple[str, str]) -> dict[str, str]:
    return await scoped_partner(url, client, "One Province Programme", provinces[0])


async def person(db: asyncpg.Connection, province: str, offset: int = 0) -> asyncpg.Record:
    """A living non-head member with a CNIC in ``province``, with its household."""
    row = await db.fetchrow(
        """SELECT m.id AS member_id, m.cnic, m.date_of_birth, h.id AS household_id,
                  h.phone, h.version, h.rooms, h.district_code, h.tehsil_code,
                  h.union_council_code
             FROM members m JOIN households h ON h.id = m.household_id
            WHERE h.province_code = $1 AND m.cnic IS NOT NULL AND m.deceased_on IS NULL
              AND m.relationship <> 'head' AND h.phone IS NOT NULL
            ORDER BY m.id OFFSET $2 LIMIT 1""",
        province,
        offset,
    )
    assert row is not None
    return row


def unknown_cnic() -> str:
    return "1" + str(uuid.uuid4().int)[:12]


def masked(cnic: str) -> str:
    return f"{cnic[:5]}-*******-{cnic[-1]}"


def without(text: str, *values: str) -> str:
    for value in values:
        text = text.replace(value, "<X>")
    return text


def says(text: str, value: str) -> bool:
    """Whether ``text`` holds ``value`` as a whole token (a number not inside another)."""
    return re.search(rf"(?<![\d-]){re.escape(value)}(?!\d)", text) is not None


def registry_values(row: asyncpg.Record) -> list[str]:
    """Every registry value of ``row`` a reason could leak, as it would be written."""
    out = [row["date_of_birth"].isoformat(), str(row["member_id"]), f"version {row['version']}"]
    if row["phone"]:
        out.append(row["phone"])
    return out


async def test_a_cnic_outside_the_scope_is_answered_as_one_that_does_not_exist(
    client: httpx.AsyncClient,
    ours: dict[str, str],
    db: asyncpg.Connection,
    provinces: tuple[str, str],
) -> None:
    """The issue's reproduction: a dry-run death of 1900-01-01 for a person in another
    province said "death date 1900-01-01 before birth <their date of birth>"."""
    theirs = await person(db, provinces[1])
    nobody = unknown_cnic()
    records = [
        {"ref": "outside", "kind": "member_death", "cnic": theirs["cnic"]},
        {"ref": "nobody", "kind": "member_death", "cnic": nobody},
    ]
    for r in records:
        r["date_of_death"] = "1900-01-01"
    body = await send(client, ours, records, dry_run=True)
    got = {r["ref"]: r for r in body["results"]}
    assert got["outside"]["outcome"] == got["nobody"]["outcome"] == "rejected"
    assert without(got["outside"]["reasons"][0], masked(theirs["cnic"])) == without(
        got["nobody"]["reasons"][0], masked(nobody)
    )
    assert (got["outside"]["household_id"], got["outside"]["member_id"]) == (None, None)
    text = repr(got["outside"])
    for value in registry_values(theirs):
        assert not says(text, value), value

    # The same for every way of naming a target: household id, member id, a move's
    # destination.
    ghost = 10**12
    other = await person(db, provinces[1], offset=3)
    mine = await person(db, provinces[0])
    records = [
        {"ref": "hh-out", "kind": "phone_change", "household_id": theirs["household_id"]},
        {"ref": "hh-none", "kind": "phone_change", "household_id": ghost},
        {
            "ref": "m-out",
            "kind": "member_update",
            "household_id": theirs["household_id"],
            "member_id": theirs["member_id"],
            "education": "primary",
        },
        {
            "ref": "m-none",
            "kind": "member_update",
            "household_id": ghost,
            "member_id": ghost,
            "education": "primary",
        },
        {
            "ref": "to-out",
            "kind": "member_move",
            "cnic": mine["cnic"],
            "to_household_id": other["household_id"],
        },
        {"ref": "to-none", "kind": "member_move", "cnic": mine["cnic"], "to_household_id": ghost},
    ]
    for r in records:
        if r["kind"] == "phone_change":
            r["phone"] = "03001234567"
    body = await send(client, ours, records, dry_run=True)
    got = {r["ref"]: r for r in body["results"]}
    pairs = [
        ("hh-out", "hh-none", str(theirs["household_id"])),
        ("m-out", "m-none", str(theirs["household_id"])),
        ("to-out", "to-none", str(other["household_id"])),
    ]
    for out, none, outside_id in pairs:
        assert got[out]["outcome"] == got[none]["outcome"] == "rejected", got
        assert without(" ".join(got[out]["reasons"]), outside_id, str(theirs["member_id"])) == (
            without(" ".join(got[none]["reasons"]), str(ghost))
        ), got
        assert got[out]["household_id"] is None
        assert got[out]["member_id"] is None


async def test_no_reason_repeats_what_the_agreement_does_not_grant(
    client: httpx.AsyncClient,
    ours: dict[str, str],
    db: asyncpg.Connection,
    provinces: tuple[str, str],
) -> None:
    """Inside the scope too: a date of birth, another member's id, a household's version
    and a phone are never repeated back."""
    me = await person(db, provinces[0], offset=5)
    head = await db.fetchrow(
        "SELECT id, cnic FROM members WHERE household_id = $1 AND relationship = 'head'",
        me["household_id"],
    )
    elsewhere = await person(db, provinces[1], offset=7)
    # A child without a CNIC: named by household and member id.
    minor = await db.fetchrow(
        """SELECT m.id AS member_id, m.date_of_birth, h.id AS household_id, h.phone, h.version
             FROM members m JOIN households h ON h.id = m.household_id
            WHERE h.province_code = $1 AND m.cnic IS NULL AND m.deceased_on IS NULL
              AND m.date_of_birth BETWEEN current_date - interval '11 years'
                                      AND current_date - interval '3 years'
            ORDER BY m.id LIMIT 1""",
        provinces[0],
    )
    assert minor is not None
    child = {"household_id": minor["household_id"], "member_id": minor["member_id"]}
    records: list[dict[str, Any]] = [
        {"ref": "death", "kind": "member_death", "cnic": me["cnic"], "date_of_death": "1900-01-01"},
        {
            "ref": "stale",
            "kind": "phone_change",
            "household_id": me["household_id"],
            "expected_version": me["version"] - 1 if me["version"] > 1 else me["version"] + 1,
            "phone": "03001234567",
        },
        {
            "ref": "future",
            "kind": "phone_change",
            "household_id": me["household_id"],
            "expected_version": me["version"] + 50,
            "phone": "03001234567",
        },
        # A CNIC already registered, inside and outside the scope: the same words, and
        # neither names the member or household holding it.
        {"ref": "dup-in", "kind": "member_update", **child, "new_cnic": head["cnic"]},
        {"ref": "dup-out", "kind": "member_update", **child, "new_cnic": elsewhere["cnic"]},
        # The registry's age of a member is not repeated either.
        {"ref": "minor", "kind": "member_update", **child, "marital_status": "married"},
        {
            "ref": "wrong-member",
            "kind": "member_death",
            "cnic": me["cnic"],
            "member_id": head["id"],
            "date_of_death": TODAY.isoformat(),
        },
    ]
    body = await send(client, ours, records, dry_run=True)
    got = {r["ref"]: r for r in body["results"]}
    assert got["death"]["outcome"] == "rejected"
    assert got["death"]["reasons"] == [
        "date_of_death 1900-01-01 is before the member's date of birth"
    ]
    assert got["stale"]["outcome"] == got["future"]["outcome"] == "conflict"
    assert re.sub(r"\d+", "N", got["stale"]["reasons"][0]) == re.sub(
        r"\d+", "N", got["future"]["reasons"][0]
    )
    assert got["dup-in"]["outcome"] == got["dup-out"]["outcome"] == "rejected"
    assert without(got["dup-in"]["reasons"][0], masked(head["cnic"])) == without(
        got["dup-out"]["reasons"][0], masked(elsewhere["cnic"])
    )
    assert got["wrong-member"]["outcome"] == "rejected"
    assert got["minor"]["outcome"] == "rejected", got["minor"]
    assert got["minor"]["reasons"] == ["member of the age recorded cannot be married (minimum 14)"]
    leaks = [
        *registry_values(me),
        *registry_values(elsewhere),
        minor["date_of_birth"].isoformat(),
        str(elsewhere["household_id"]),
        f"current {me['version']}",
    ]
    for ref, result in got.items():
        for reason in result["reasons"]:
            for value in leaks:
                assert not says(reason, value), (ref, reason, value)


async def test_unchanged_never_confirms_a_guessed_value(
    url: str,
    client: httpx.AsyncClient,
    ours: dict[str, str],
    db: asyncpg.Connection,
    provinces: tuple[str, str],
) -> None:
    """Today "unchanged" vs "applied" confirms a guessed phone; locked indicators likewise."""
    me = await person(db, provinces[0], offset=9)
    right, wrong = (
        me["phone"],
        "+923009999999" if me["phone"] != "+923009999999" else "+923008888888",
    )
    rooms = me["rooms"]
    assert rooms is not None
    records = [
        {
            "ref": "right",
            "kind": "phone_change",
            "household_id": me["household_id"],
            "phone": right,
        },
        {
            "ref": "wrong",
            "kind": "phone_change",
            "household_id": me["household_id"],
            "phone": wrong,
        },
    ]
    body = await send(client, ours, records, dry_run=True)
    got = {r["ref"]: r for r in body["results"]}
    assert {k: (v["outcome"], v["reasons"]) for k, v in got.items()} == {
        "right": ("applied", []),
        "wrong": ("applied", []),
    }
    # Surveys: a locked indicator (rooms) the agreement does not grant.
    survey = {
        "ref": "rooms",
        "kind": "household_survey",
        "household_id": me["household_id"],
        "indicators": {"rooms": rooms},
    }
    body = await send(client, ours, [survey], dry_run=True)
    assert body["results"][0]["outcome"] == "applied"

    # A partner whose agreement lets it read rooms (category v, room_count) is told the truth.
    reader = await scoped_partner(
        url, client, "Rooms Reader", provinces[0], categories="iv,v", dimensions="room_count"
    )
    body = await send(client, reader, [survey], dry_run=True)
    assert body["results"][0]["outcome"] == "unchanged"

    # A real run of the right phone: told "applied", nothing written, the truth kept for
    # the registry's own report.
    before = await db.fetchrow(
        "SELECT version, phone FROM households WHERE id = $1", me["household_id"]
    )
    body = await send(client, ours, [records[0]])
    assert body["results"][0]["outcome"] == "applied"
    after = await db.fetchrow(
        "SELECT version, phone FROM households WHERE id = $1", me["household_id"]
    )
    assert tuple(after) == tuple(before)
    assert await db.fetchval(
        "SELECT unchanged FROM update_results WHERE batch_id = $1", uuid.UUID(body["batch_id"])
    )


async def test_new_places_must_be_inside_the_scope(
    client: httpx.AsyncClient,
    ours: dict[str, str],
    db: asyncpg.Connection,
    provinces: tuple[str, str],
) -> None:
    mine = await person(db, provinces[0], offset=11)
    theirs = await person(db, provinces[1], offset=11)
    place = {
        "district": theirs["district_code"],
        "tehsil": theirs["tehsil_code"],
        "union_council": theirs["union_council_code"],
    }
    records = [
        {
            "ref": "move-away",
            "kind": "address_change",
            "household_id": mine["household_id"],
            "address": "Somewhere else",
            **place,
        },
        {
            "ref": "new-away",
            "kind": "new_household",
            "household": {
                "address": "Plot 1",
                **place,
                "surveyed_on": TODAY.isoformat(),
                "members": [
                    {
                        "name": "Z",
                        "gender": "male",
                        "date_of_birth": "1980-01-01",
                        "relationship": "head",
                        "marital_status": "married",
                    }
                ],
            },
        },
    ]
    body = await send(client, ours, records, dry_run=True)
    for result in body["results"]:
        assert result["outcome"] == "rejected", result
        assert result["reasons"] == ["the place named is outside the agreement's geography"]


async def test_ids_only_inside_the_scope_and_none_invented_by_a_dry_run(
    client: httpx.AsyncClient,
    ours: dict[str, str],
    db: asyncpg.Connection,
    provinces: tuple[str, str],
) -> None:
    mine = await person(db, provinces[0], offset=13)
    birth = {
        "ref": "birth",
        "kind": "member_birth",
        "household_id": mine["household_id"],
        "member": {
            "name": "Newborn",
            "gender": "female",
            "date_of_birth": (TODAY - timedelta(days=2)).isoformat(),
            "relationship": "other_relative",
        },
    }
    death = {
        "ref": "death",
        "kind": "member_death",
        "cnic": mine["cnic"],
        "date_of_death": (TODAY - timedelta(days=1)).isoformat(),
    }
    body = await send(client, ours, [birth, death], dry_run=True)
    got = {r["ref"]: r for r in body["results"]}
    assert got["birth"]["outcome"] == "applied"
    assert (got["birth"]["household_id"], got["birth"]["member_id"]) == (mine["household_id"], None)
    assert got["death"]["outcome"] == "applied"
    assert (got["death"]["household_id"], got["death"]["member_id"]) == (
        mine["household_id"],
        mine["member_id"],
    )


async def test_every_batch_dry_runs_included_is_audited_with_what_it_matched(
    url: str,
    client: httpx.AsyncClient,
    ours: dict[str, str],
    db: asyncpg.Connection,
    provinces: tuple[str, str],
) -> None:
    mine = await person(db, provinces[0], offset=15)
    theirs = await person(db, provinces[1], offset=15)
    records = [
        {
            "ref": "a",
            "kind": "phone_change",
            "household_id": mine["household_id"],
            "phone": "03001112223",
        },
        {"ref": "b", "kind": "member_death", "cnic": theirs["cnic"], "date_of_death": "2020-01-01"},
        {"ref": "c", "kind": "member_update", "cnic": mine["cnic"], "employment": "employed"},
    ]
    for dry_run in (True, False):
        body = await send(client, ours, records, dry_run=dry_run)
        rows = await db.fetch(
            """SELECT actor_type, client_id, agreement_id, households, members, filters
                 FROM audit_log WHERE endpoint = 'POST /v1/partner/updates (processed)'
                  AND filters->>'batch_id' = $1""",
            body["batch_id"],
        )
        assert len(rows) == 1, rows
        row = rows[0]
        assert (row["actor_type"], row["client_id"], str(row["agreement_id"])) == (
            "partner",
            ours["client_id"],
            ours["agreement_id"],
        )
        filters = orjson.loads(row["filters"])
        assert filters["dry_run"] == str(dry_run).lower()
        assert filters["kinds"] == ["member_death=1", "member_update=1", "phone_change=1"]
        assert sorted(filters["outcomes"]) == ["applied=2", "rejected=1"]
        # What was matched: our household (twice), never the one outside the scope.
        assert filters["households"] == [str(mine["household_id"])]
        assert filters["members"] == [str(mine["member_id"])]
        assert (row["households"], row["members"]) == (1, 1)
    # Reading the outcomes back is audited too.
    reads = await db.fetchval(
        """SELECT count(*) FROM audit_log WHERE endpoint = '/v1/partner/updates/{batch_id}'
            AND filters->>'batch_id' = $1""",
        body["batch_id"],
    )
    assert reads >= 1


async def test_records_per_hour_per_agreement(
    url: str, client: httpx.AsyncClient, db: asyncpg.Connection, provinces: tuple[str, str]
) -> None:
    # Both partners first: `nser partners create` runs while this test's event loop waits,
    # so it must not run while the in-process worker holds a chunk (and the audit lock).
    partner = await scoped_partner(url, client, "Hourly Programme", provinces[0])
    other = await scoped_partner(url, client, "Hourly Other", provinces[0])
    mine = await person(db, provinces[0], offset=17)
    record = {"kind": "phone_change", "household_id": mine["household_id"], "phone": "03001234567"}
    async for limited in open_client(
        make_settings(url, updates_records_per_hour=5, in_process_workers=0)
    ):
        first = {"dry_run": True, "records": [{"ref": str(i), **record} for i in range(3)]}
        key = uuid.uuid4().hex
        r = await limited.post("/v1/partner/updates", json=first, headers=headers(partner, key))
        assert r.status_code == 202, r.text
        # Dry runs count: three more would pass five.
        r = await limited.post("/v1/partner/updates", json=first, headers=headers(partner))
        assert r.status_code == 429, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert 3500 <= int(r.headers["retry-after"]) <= 3600
        assert "NSER_UPDATES_RECORDS_PER_HOUR" in r.json()["detail"]
        # A replay of the stored batch costs nothing; two more fit.
        r = await limited.post("/v1/partner/updates", json=first, headers=headers(partner, key))
        assert r.status_code == 200, r.text
        two = {"records": [{"ref": str(i), **record} for i in range(2)]}
        r = await limited.post("/v1/partner/updates", json=two, headers=headers(partner))
        assert r.status_code == 202, r.text
        r = await limited.post(
            "/v1/partner/updates", json={"records": [record]}, headers=headers(partner)
        )
        assert r.status_code == 429
        # A batch larger than the whole hour can never fit: 413, split it.
        six = {"records": [{"ref": str(i), **record} for i in range(6)]}
        r = await limited.post("/v1/partner/updates", json=six, headers=headers(partner))
        assert r.status_code == 413, r.text
        # The budget is the agreement's: another agreement is not affected.
        r = await limited.post("/v1/partner/updates", json=two, headers=headers(other))
        assert r.status_code == 202, r.text
    # Refused batches were not stored.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM update_batches WHERE agreement_id = $1::uuid",
            partner["agreement_id"],
        )
        == 2
    )


async def test_dry_runs_appear_in_the_updates_report(
    url: str,
    client: httpx.AsyncClient,
    ours: dict[str, str],
    db: asyncpg.Connection,
    provinces: tuple[str, str],
) -> None:
    mine = await person(db, provinces[0], offset=19)
    record = {
        "ref": "x",
        "kind": "phone_change",
        "household_id": mine["household_id"],
        "phone": "03007654321",
    }
    body = await send(client, ours, [record, {**record, "ref": "y"}], dry_run=True)
    staff = orjson.loads(
        run_cli(["staff", "create", "--name", "M&E", "--role", "me", "--json"], url).stdout
    )
    token = await get_token(client, staff["client_id"], staff["client_secret"])
    r = await client.get("/v1/staff/reports/updates", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    report = r.json()
    rows = [
        row
        for row in report["rows"]
        if row["agreement_id"] == ours["agreement_id"]
        and row["kind"] == "phone_change"
        and row["dry_run"] is True
    ]
    assert len(rows) == 1, report["rows"]
    assert rows[0]["received"] >= 2
    assert report["totals"]["dry_run_batches"] >= 1
    assert body["dry_run"] is True
