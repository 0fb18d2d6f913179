"""The worker's pipeline: chunk N+1 is read and applied while chunk N is written.

Chunks of two records make every batch here span many chunks, so records that depend on
an earlier record sit in a later chunk that was loaded while the earlier one was still
uncommitted. Every record must still see every earlier record's effect.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import fresh_database, make_settings, open_client
from updates_helpers import send, updates_partner

from app.services.ingest import state as ingest_state
from app.services.ingest.worker import depends

TODAY = date.today()


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=200, seed=23) as u:
        yield u


@pytest.fixture(scope="module", params=[True, False], ids=["pipelined", "serial"])
async def client(url: str, request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(url, ingest_chunk_records=2, ingest_pipeline=request.param)
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def db(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    yield conn
    await conn.close()


def _cnic() -> str:
    return "71" + str(uuid.uuid4().int)[:10] + "1"


def _new_household(ref: str, geo: asyncpg.Record, head_cnic: str, form: str | None) -> Any:
    return {
        "ref": ref,
        "kind": "new_household",
        "household": {
            **({"form_number": form} if form else {}),
            "address": f"Plot {ref}",
            "district": geo["district_code"],
            "tehsil": geo["tehsil_code"],
            "union_council": geo["union_council_code"],
            "surveyed_on": TODAY.isoformat(),
            "members": [
                {
                    "name": "Kashif",
                    "gender": "male",
                    "date_of_birth": "1985-01-02",
                    "relationship": "head",
                    "marital_status": "married",
                    "cnic": head_cnic,
                },
                {
                    "name": "Rubina",
                    "gender": "female",
                    "date_of_birth": "1988-03-04",
                    "relationship": "spouse",
                    "marital_status": "married",
                },
            ],
        },
    }


async def _pick(db: asyncpg.Connection, n: int) -> list[asyncpg.Record]:
    """Households with a living non-head member holding a CNIC, not picked before."""
    rows: list[asyncpg.Record] = await db.fetch(
        """SELECT h.id, h.version, h.district_code, h.tehsil_code, h.union_council_code,
                  (SELECT m.cnic FROM members m WHERE m.household_id = h.id
                      AND m.cnic IS NOT NULL AND m.relationship <> 'head'
                      AND m.deceased_on IS NULL ORDER BY m.id LIMIT 1) AS cnic
             FROM households h
            WHERE h.phone IS DISTINCT FROM '+923009999999'
              AND EXISTS (SELECT 1 FROM members m WHERE m.household_id = h.id
                             AND m.cnic IS NOT NULL AND m.relationship <> 'head'
                             AND m.deceased_on IS NULL)
            ORDER BY random() LIMIT $1""",
        n,
    )
    # Mark them, so the other parametrisation picks others.
    await db.execute(
        "UPDATE households SET phone = '+923009999999' WHERE id = ANY($1)", [r["id"] for r in rows]
    )
    return rows


async def test_later_chunks_see_earlier_chunks(
    client: httpx.AsyncClient, url: str, db: asyncpg.Connection
) -> None:
    partner = await updates_partner(url, client, f"Pipeline {uuid.uuid4().hex[:6]}")
    x, src, dest = await _pick(db, 3)
    head = _cnic()
    records = [
        # chunk 1: a new household (its head's CNIC is new) and a phone change
        _new_household("new", x, head, None),
        {"ref": "phone1", "kind": "phone_change", "household_id": x["id"], "phone": "03001111111"},
        # chunk 2: a birth in the household chunk 1 created, named by the new CNIC; a move
        {
            "ref": "birth",
            "kind": "member_birth",
            "cnic": head,
            "member": {
                "name": "Zara",
                "gender": "female",
                "date_of_birth": (TODAY - timedelta(days=2)).isoformat(),
                "relationship": "daughter",
            },
        },
        {
            "ref": "move",
            "kind": "member_move",
            "cnic": src["cnic"],
            "to_household_id": dest["id"],
            "relationship": "other_relative",
        },
        # chunk 3: the moved member, by CNIC, is now in the other household
        {
            "ref": "death",
            "kind": "member_death",
            "cnic": src["cnic"],
            "date_of_death": (TODAY - timedelta(days=1)).isoformat(),
        },
        {
            "ref": "phone2",
            "kind": "phone_change",
            "household_id": dest["id"],
            "expected_version": dest["version"] + 2,  # moved in, then the death
            "phone": "03002222222",
        },
        # chunk 4: the CNIC chunk 1 registered is taken; the first phone change is seen
        _new_household("again", x, head, None),
        {
            "ref": "phone3",
            "kind": "phone_change",
            "household_id": x["id"],
            "expected_version": x["version"] + 1,
            "phone": "03003333333",
        },
    ]
    body = await send(client, partner, records)
    got = {r["ref"]: r for r in body["results"]}
    outcomes = {ref: r["outcome"] for ref, r in got.items()}
    assert outcomes == {
        "new": "applied",
        "phone1": "applied",
        "birth": "applied",
        "move": "applied",
        "death": "applied",
        "phone2": "applied",
        "again": "rejected",
        "phone3": "applied",
    }, got
    assert "already registered" in got["again"]["reasons"][0]
    new_id = got["new"]["household_id"]
    assert got["birth"]["household_id"] == new_id
    assert got["death"]["household_id"] == dest["id"]
    assert await db.fetchval(
        "SELECT count(*) FROM members WHERE household_id = $1 AND name = 'Zara'", new_id
    )
    moved = await db.fetchrow(
        "SELECT household_id, deceased_on FROM members WHERE cnic = $1", src["cnic"]
    )
    assert (moved["household_id"], moved["deceased_on"]) == (dest["id"], TODAY - timedelta(days=1))
    assert await db.fetchval("SELECT version FROM households WHERE id = $1", dest["id"]) == (
        dest["version"] + 3
    )
    assert await db.fetchval("SELECT phone FROM households WHERE id = $1", x["id"]) == (
        "+923003333333"
    )


async def test_a_chunk_the_database_refuses_goes_record_by_record(
    client: httpx.AsyncClient, url: str, db: asyncpg.Connection
) -> None:
    """Two new households whose generated form numbers collide, in different chunks: the
    database refuses the second one's chunk when it writes; that chunk is redone record by
    record and the chunks after it still apply, each record with exactly one outcome. The
    next chunk changes a household of the refused one again (loaded while the refused one
    was writing): it must see that household after the refused chunk's redo, not before."""
    partner = await updates_partner(url, client, f"Pipeline {uuid.uuid4().hex[:6]}")
    hh = await _pick(db, 4)
    suffix = uuid.uuid4().hex[:15]
    records: list[Any] = [
        # chunk 1
        _new_household(f"a{suffix}", hh[0], _cnic(), None),
        {"ref": "p1", "kind": "phone_change", "household_id": hh[1]["id"], "phone": "03004444444"},
        # chunk 2: refused as a whole (the second generated form number), then one by one
        {"ref": "p2", "kind": "phone_change", "household_id": hh[2]["id"], "phone": "03005555555"},
        _new_household(f"b{suffix}", hh[0], _cnic(), None),
        # chunk 3: the household p2 changed, at the version p2 leaves it
        {
            "ref": "p3",
            "kind": "phone_change",
            "household_id": hh[2]["id"],
            "expected_version": hh[2]["version"] + 1,
            "phone": "03006666666",
        },
        # chunks 3 and 4
        *(
            {"ref": f"p{i}", "kind": "phone_change", "household_id": hh[3]["id"], "phone": p}
            for i, p in ((4, "03007777777"), (5, "03008888888"))
        ),
    ]
    body = await send(client, partner, records)
    got = {r["ref"]: r for r in body["results"]}
    assert len(body["results"]) == len(records)
    assert got[f"b{suffix}"]["outcome"] == "rejected"
    assert "registry refused" in got[f"b{suffix}"]["reasons"][0]
    assert body["counts"] == {"applied": 6, "rejected": 1, "conflict": 0, "unchanged": 0}, got
    assert await db.fetchrow(
        "SELECT phone, version FROM households WHERE id = $1", hh[2]["id"]
    ) == (
        "+923006666666",
        hh[2]["version"] + 2,
    )
    assert await db.fetchval("SELECT phone FROM households WHERE id = $1", hh[3]["id"]) == (
        "+923008888888"
    )
    assert await db.fetchval(
        "SELECT count(*) FROM update_results r JOIN update_batches b ON b.id = r.batch_id"
        " WHERE b.id = $1::uuid",
        body["batch_id"],
    ) == len(records)


def test_depends_names_what_a_later_chunk_may_have_read_stale() -> None:
    earlier = ingest_state.State()
    earlier.add_member({"id": 7, "household_id": 3, "cnic": "1111111111111"})
    earlier.stray_members[9] = {"id": 9, "household_id": 4, "cnic": None}
    earlier.form_numbers.add("F-1")
    assert not depends(ingest_state.Wanted(household_ids={3}), earlier)  # locks cover it
    assert depends(ingest_state.Wanted(cnics={"1111111111111"}), earlier)
    assert depends(ingest_state.Wanted(member_ids={7}), earlier)
    assert depends(ingest_state.Wanted(member_ids={9}), earlier)
    assert depends(ingest_state.Wanted(form_numbers={"F-1"}), earlier)
    assert not depends(
        ingest_state.Wanted(cnics={"2222222222222"}, member_ids={8}, form_numbers={"F-2"}),
        earlier,
    )
