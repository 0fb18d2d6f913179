"""The slice of the registry one chunk of records touches: loaded in bulk, written back in bulk.

A chunk's households are locked (``FOR UPDATE``, in id order so two workers cannot
deadlock each other), the records are applied to this in-memory copy in order, and the
final state goes back with a handful of set-based statements in the same transaction as
the records' results: an applied record and its outcome commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from app.services import pmt as pmt_service

HOUSEHOLD_COLUMNS = {
    "id": "bigint",
    "form_number": "text",
    "province_code": "text",
    "division_code": "text",
    "district_code": "text",
    "tehsil_code": "text",
    "union_council_code": "text",
    "village_code": "text",
    "address": "text",
    "phone": "text",
    "surveyed_on": "date",
    "rooms": "smallint",
    "toilet_type": "text",
    "electrical": "text[]",
    "gas": "text[]",
    "kitchen": "text[]",
    "cows": "smallint",
    "goats": "smallint",
    "buffaloes": "smallint",
    "bullocks": "smallint",
    "lambs": "smallint",
    "land_muraba": "numeric",
    "land_acre": "numeric",
    "land_kanal": "numeric",
    "land_marla": "numeric",
    "version": "int",
}
MEMBER_COLUMNS = {
    "id": "bigint",
    "household_id": "bigint",
    "cnic": "text",
    "name": "text",
    "gender": "text",
    "date_of_birth": "date",
    "relationship": "text",
    "marital_status": "text",
    "disabilities": "text[]",
    "education": "text",
    "employment": "text",
    "deceased_on": "date",
}
HISTORY_COLUMNS = {
    "household_id": "bigint",
    "member_id": "bigint",
    "version": "int",
    "change": "text",
    "before": "jsonb",
    "after": "jsonb",
    "batch_id": "text",
    "ref": "text",
    "actor": "text",
}
RESULT_COLUMNS = {
    "position": "int",
    "ref": "text",
    "kind": "text",
    "outcome": "text",
    "reasons": "text[]",
    "household_id": "bigint",
    "member_id": "bigint",
}
LAND = ("land_muraba", "land_acre", "land_kanal", "land_marla")

Row = dict[str, Any]


@dataclass
class State:
    households: dict[int, Row] = field(default_factory=dict)
    members: dict[int, Row] = field(default_factory=dict)
    by_household: dict[int, list[int]] = field(default_factory=dict)
    cnic_owner: dict[str, int] = field(default_factory=dict)
    # Member ids whose household was not locked (looked up by CNIC or id only).
    stray_members: dict[int, Row] = field(default_factory=dict)
    form_numbers: set[str] = field(default_factory=set)
    # Writes accumulated while applying, flushed by ``write``.
    dirty_households: set[int] = field(default_factory=set)
    new_households: set[int] = field(default_factory=set)
    dirty_members: set[int] = field(default_factory=set)
    new_members: set[int] = field(default_factory=set)
    rescore: set[int] = field(default_factory=set)
    history: list[Row] = field(default_factory=list)

    def add_member(self, row: Row) -> None:
        self.members[row["id"]] = row
        self.by_household.setdefault(row["household_id"], []).append(row["id"])
        if row["cnic"]:
            self.cnic_owner[row["cnic"]] = row["id"]

    def household_members(self, household_id: int) -> list[Row]:
        return [self.members[i] for i in self.by_household.get(household_id, [])]

    def clear_writes(self) -> None:
        for s in (
            self.dirty_households,
            self.new_households,
            self.dirty_members,
            self.new_members,
            self.rescore,
        ):
            s.clear()
        self.history.clear()


@dataclass
class Wanted:
    household_ids: set[int] = field(default_factory=set)
    member_ids: set[int] = field(default_factory=set)
    cnics: set[str] = field(default_factory=set)
    form_numbers: set[str] = field(default_factory=set)


def _household_row(record: asyncpg.Record) -> Row:
    row = dict(record)
    for col in LAND:
        row[col] = float(row[col])
    return row


async def load(conn: asyncpg.Connection, wanted: Wanted, state: State, *, lock: bool) -> None:
    """Bring the households, members and CNICs a chunk names into ``state`` (merging)."""
    found = await conn.fetch(
        "SELECT id, household_id, cnic FROM members WHERE cnic = ANY($1) OR id = ANY($2)",
        list(wanted.cnics),
        list(wanted.member_ids),
    )
    ids = set(wanted.household_ids) | {r["household_id"] for r in found}
    ids -= state.households.keys()
    if ids:
        cols = ", ".join(HOUSEHOLD_COLUMNS)
        rows = await conn.fetch(
            f"SELECT {cols} FROM households WHERE id = ANY($1) ORDER BY id"
            + (" FOR UPDATE" if lock else ""),
            sorted(ids),
        )
        fresh = [r["id"] for r in rows]
        for r in rows:
            state.households[r["id"]] = _household_row(r)
        mcols = ", ".join(MEMBER_COLUMNS)
        for m in await conn.fetch(
            f"SELECT {mcols} FROM members WHERE household_id = ANY($1) ORDER BY id",
            fresh,
        ):
            if m["id"] not in state.members:
                state.add_member(dict(m))
    for r in found:
        if r["cnic"] and r["cnic"] not in state.cnic_owner:
            state.cnic_owner[r["cnic"]] = r["id"]
        if r["id"] not in state.members:
            state.stray_members[r["id"]] = dict(r)
    if wanted.form_numbers:
        taken = await conn.fetch(
            "SELECT form_number FROM households WHERE form_number = ANY($1)",
            list(wanted.form_numbers),
        )
        state.form_numbers |= {r["form_number"] for r in taken}


async def allocate_ids(conn: asyncpg.Connection, table: str, n: int) -> list[int]:
    if n <= 0:
        return []
    rows = await conn.fetch(
        "SELECT nextval(pg_get_serial_sequence($1, 'id')) AS id FROM generate_series(1, $2)",
        table,
        n,
    )
    return [r["id"] for r in rows]


def _recordset(columns: dict[str, str]) -> str:
    return ", ".join(f'"{c}" {t}' for c, t in columns.items())


def _json(rows: Iterable[Row], columns: Iterable[str]) -> str:
    cols = list(columns)
    return orjson.dumps([{c: r.get(c) for c in cols} for r in rows]).decode()


async def write(conn: asyncpg.Connection, state: State, results: list[Row], batch_id: str) -> None:
    """Flush the chunk's writes and its results (inside the caller's transaction)."""
    hcols = [c for c in HOUSEHOLD_COLUMNS if c != "id"]
    if state.new_households:
        rows = [state.households[i] for i in sorted(state.new_households)]
        await conn.execute(
            f"""INSERT INTO households (id, {", ".join(hcols)})
                SELECT id, {", ".join(hcols)}
                  FROM jsonb_to_recordset($1::jsonb) AS v({_recordset(HOUSEHOLD_COLUMNS)})""",
            _json(rows, HOUSEHOLD_COLUMNS),
        )
    dirty = sorted(state.dirty_households - state.new_households)
    if dirty:
        sets = ", ".join(f"{c} = v.{c}" for c in hcols if c != "form_number")
        await conn.execute(
            f"""UPDATE households h SET {sets}, updated_at = now()
                  FROM jsonb_to_recordset($1::jsonb) AS v({_recordset(HOUSEHOLD_COLUMNS)})
                 WHERE h.id = v.id""",
            _json((state.households[i] for i in dirty), HOUSEHOLD_COLUMNS),
        )
    mcols = [c for c in MEMBER_COLUMNS if c != "id"]
    if state.new_members:
        await conn.execute(
            f"""INSERT INTO members (id, {", ".join(mcols)})
                SELECT id, {", ".join(mcols)}
                  FROM jsonb_to_recordset($1::jsonb) AS v({_recordset(MEMBER_COLUMNS)})""",
            _json((state.members[i] for i in sorted(state.new_members)), MEMBER_COLUMNS),
        )
    mdirty = sorted(state.dirty_members - state.new_members)
    if mdirty:
        sets = ", ".join(f"{c} = v.{c}" for c in mcols)
        await conn.execute(
            f"""UPDATE members m SET {sets}, updated_at = now()
                  FROM jsonb_to_recordset($1::jsonb) AS v({_recordset(MEMBER_COLUMNS)})
                 WHERE m.id = v.id""",
            _json((state.members[i] for i in mdirty), MEMBER_COLUMNS),
        )
    if state.history:
        hist = ", ".join(f'"{c}"' for c in HISTORY_COLUMNS)
        await conn.execute(
            f"""INSERT INTO household_history ({hist}, source)
                SELECT {hist}, 'partner_batch'
                  FROM jsonb_to_recordset($1::jsonb) AS v({_recordset(HISTORY_COLUMNS)})""",
            _json(state.history, HISTORY_COLUMNS),
        )
    if state.rescore:
        await pmt_service.rescore_households(conn, sorted(state.rescore))
    cols = ", ".join(f'"{c}"' for c in RESULT_COLUMNS)
    await conn.execute(
        f"""INSERT INTO update_results (batch_id, {cols})
            SELECT $2::uuid, {cols}
              FROM jsonb_to_recordset($1::jsonb) AS v({_recordset(RESULT_COLUMNS)})""",
        _json(results, RESULT_COLUMNS),
        batch_id,
    )
