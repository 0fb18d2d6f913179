"""The slice of the registry one chunk of records touches: loaded in bulk, written back in bulk.

A chunk's households are locked (``FOR UPDATE``, in id order so two workers cannot
deadlock each other), the records are applied to this in-memory copy in order, and the
final state goes back with a handful of set-based statements in the same transaction as
the records' results: an applied record and its outcome commit together or not at all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import asyncpg
import orjson

from app.services.pmt import model as pmt_service
from app.services.pmt.features import MEMBER_SUMMARY_SQL, MemberSummary, member_summary

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
    "land_muraba": "float8",
    "land_acre": "float8",
    "land_kanal": "float8",
    "land_marla": "float8",
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
    "unchanged": "boolean",
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
    # Households whose members are all in ``members`` (the others were named only by
    # phone/address changes, which never look at members).
    members_loaded: set[int] = field(default_factory=set)
    # For households whose members are not loaded but whose score is wanted (surveys).
    summaries: dict[int, MemberSummary] = field(default_factory=dict)
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
    # Households named only by records that never read their members.
    bare_household_ids: set[int] = field(default_factory=set)
    # Households whose members matter only to the re-score (surveys): a summary of them.
    scored_household_ids: set[int] = field(default_factory=set)


PMT_COLUMNS = {"pmt_score": "float8", "poverty_band": "text", "pmt_version": "text"}


# Land and the score are numeric columns read as float8 (the cast and Python's float() of
# the Decimal are both the correctly rounded double), so a row is just ``dict(record)``.
_LOAD_COLUMNS = ", ".join(
    f"{c}::float8 AS {c}" if c in (*LAND, "pmt_score") else c
    for c in (*HOUSEHOLD_COLUMNS, *PMT_COLUMNS)
)


async def load(conn: asyncpg.Connection, wanted: Wanted, state: State, *, lock: bool) -> None:
    """Bring the households, members and CNICs a chunk names into ``state`` (merging)."""
    found = await conn.fetch(
        "SELECT id, household_id, cnic FROM members WHERE cnic = ANY($1) OR id = ANY($2)",
        list(wanted.cnics),
        list(wanted.member_ids),
    )
    full = set(wanted.household_ids) | {r["household_id"] for r in found}
    ids = (full | wanted.bare_household_ids | wanted.scored_household_ids) - state.households.keys()
    if ids:
        rows = await conn.fetch(
            f"SELECT {_LOAD_COLUMNS} FROM households WHERE id = ANY($1) ORDER BY id"
            + (" FOR UPDATE" if lock else ""),
            sorted(ids),
        )
        for r in rows:
            state.households[r["id"]] = dict(r)
    fresh = [i for i in sorted(full) if i in state.households and i not in state.members_loaded]
    if fresh:
        mcols = ", ".join(MEMBER_COLUMNS)
        for m in await conn.fetch(
            f"SELECT {mcols} FROM members WHERE household_id = ANY($1) ORDER BY id",
            fresh,
        ):
            if m["id"] not in state.members:
                state.add_member(dict(m))
        state.members_loaded.update(fresh)
    summarize = [
        i
        for i in sorted(wanted.scored_household_ids - full)
        if i in state.households and i not in state.members_loaded and i not in state.summaries
    ]
    if summarize:
        for r in await conn.fetch(MEMBER_SUMMARY_SQL, summarize):
            state.summaries[r["household_id"]] = MemberSummary(
                r["born"], r["heads"], r["head_education"], r["disabled"]
            )
        for i in summarize:  # no living member at all
            state.summaries.setdefault(i, MemberSummary((), 0, None, 0))
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


# Per-session staging tables (created once per connection, by ``open_connection``): a
# chunk's rows go in by binary COPY (one round trip each) and are merged by set-based
# statements; ON COMMIT DELETE ROWS empties them at every commit.
_STAGE_HOUSEHOLDS = {**HOUSEHOLD_COLUMNS, **PMT_COLUMNS, "is_new": "boolean"}
_STAGE_MEMBERS = {**MEMBER_COLUMNS, "is_new": "boolean"}


def _columns(columns: dict[str, str]) -> str:
    return ", ".join(f'"{c}" {t}' for c, t in columns.items())


_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS nser_stage_households ({_columns(_STAGE_HOUSEHOLDS)})
  ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS nser_stage_members ({_columns(_STAGE_MEMBERS)})
  ON COMMIT DELETE ROWS;
"""


async def open_connection(conn: asyncpg.Connection) -> None:
    """Make a new connection ready to write chunks: its session's staging tables."""
    await conn.execute(_STAGING)


_HOUSEHOLD_STAGED = [*HOUSEHOLD_COLUMNS, *PMT_COLUMNS]
_HCOLS = [c for c in (*HOUSEHOLD_COLUMNS, *PMT_COLUMNS) if c != "id"]
_MCOLS = [c for c in MEMBER_COLUMNS if c != "id"]
_MERGE_HOUSEHOLDS = f"""
INSERT INTO households (id, {", ".join(_HCOLS)})
SELECT id, {", ".join(_HCOLS)} FROM nser_stage_households WHERE is_new ORDER BY id;
UPDATE households h SET {", ".join(f"{c} = v.{c}" for c in _HCOLS if c != "form_number")},
       updated_at = now()
  FROM nser_stage_households v WHERE h.id = v.id AND NOT v.is_new;
"""
_MERGE_MEMBERS = f"""
INSERT INTO members (id, {", ".join(_MCOLS)})
SELECT id, {", ".join(_MCOLS)} FROM nser_stage_members WHERE is_new ORDER BY id;
UPDATE members m SET {", ".join(f"{c} = v.{c}" for c in _MCOLS)}, updated_at = now()
  FROM nser_stage_members v WHERE m.id = v.id AND NOT v.is_new;
"""


_HOUSEHOLD_GETTER = itemgetter(*_HOUSEHOLD_STAGED)
_MEMBER_STAGED = itemgetter(*MEMBER_COLUMNS)
_RESULT_VALUES = itemgetter(*RESULT_COLUMNS)


def _staged(row: Row) -> tuple[Any, ...]:
    """A household row's staged values (a household whose score is left to the SQL may
    not have the score columns yet: those stage as NULL)."""
    try:
        values: tuple[Any, ...] = _HOUSEHOLD_GETTER(row)
    except KeyError:
        return tuple(row.get(c) for c in _HOUSEHOLD_STAGED)
    return values


def _jsonb(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _summary(state: State, hid: int) -> MemberSummary | None:
    """The household's living members as the PMT needs them, if the chunk holds them: all
    its member rows, or the summary read for a survey; else None."""
    if hid in state.members_loaded or hid in state.new_households:
        return member_summary(state.household_members(hid))
    return state.summaries.get(hid)


def prescore(
    state: State,
    model: pmt_service.PmtModel,
    ids: Sequence[int] | None = None,
    last_rows: dict[int, Row] | None = None,
) -> list[int]:
    """Score the households to re-score in memory, so each is written once per chunk.

    ``pmt.score`` is the Python twin of the SQL re-score (tests/test_pmt.py keeps them
    equal, tests/test_updates_api.py checks a batch leaves nothing for the SQL to change),
    so its result is final: no second, SQL pass re-reads these households and their
    members. A change of score, band or model is written into the history row of the
    chunk's last change to that household (the change that led to it, so the staff view
    shows cause and effect in one version); with no such row, a ``pmt_rescore`` row of its
    own, as the SQL re-score writes it. Returns the ids left to ``pmt.rescore_households``
    (see :func:`_summary`; normally none). ``ids``: only these (of ``state.rescore``);
    ``last_rows``: household id -> its last history row (built here if not given).
    """
    if last_rows is None:
        last_rows = last_history_rows(state)
    left: list[int] = []
    for hid in sorted(state.rescore) if ids is None else ids:
        summary = _summary(state, hid)
        if summary is None or summary.heads > 1:
            # Left to the SQL: members not in the chunk, or several living heads (the
            # Python takes the first head's education, the SQL the highest).
            left.append(hid)
            continue
        hh = state.households[hid]
        value, band = pmt_service.score_aggregate(model, hh, summary.aggregate(hh["surveyed_on"]))
        old = (hh.get("pmt_score"), hh.get("poverty_band"), hh.get("pmt_version"))
        new = (value, band, model.version)
        if old == new:
            continue
        hh["pmt_score"], hh["poverty_band"], hh["pmt_version"] = new
        state.dirty_households.add(hid)
        before = dict(zip(PMT_COLUMNS, old, strict=True)) if old[0] is not None else None
        after = dict(zip(PMT_COLUMNS, new, strict=True))
        row = last_rows.get(hid)
        if row is not None:
            # Copies: a move's two rows share their before/after dicts.
            if before is not None:
                row["before"] = {**(row["before"] or {}), **before}
            row["after"] = {**(row["after"] or {}), **after}
        elif before is not None:
            state.history.append(
                {
                    "household_id": hid,
                    "member_id": None,
                    "version": hh["version"],
                    "change": "pmt_rescore",
                    "before": before,
                    "after": after,
                    "batch_id": None,
                    "ref": None,
                    "actor": "pmt",
                    "source": "pmt_recompute",
                }
            )
    return left


def last_history_rows(state: State) -> dict[int, Row]:
    """Household id -> the chunk's last history row for it."""
    return {h["household_id"]: h for h in state.history}


@dataclass
class Flush:
    """A chunk's writes as rows ready to send: built in Python by :func:`prepare`, sent by
    :func:`flush` without any more Python work in between (so that, in a pipeline, Python
    prepares the next chunk while PostgreSQL stores this one)."""

    results: list[tuple[Any, ...]]
    households: list[tuple[Any, ...]]
    members: list[tuple[Any, ...]]
    history: list[tuple[Any, ...]]
    # Households the in-memory score cannot vouch for (see prescore; normally none).
    rescore: list[int]


# Records or households handled between two turns of the event loop: a few milliseconds of
# CPU, so that in a pipeline the other chunk's statements are sent as soon as PostgreSQL
# has answered the previous one, not when a long stretch of Python work ends.
SLICE = 128


async def prepare(
    state: State, results: list[Row], batch_id: str, model: pmt_service.PmtModel | None
) -> Flush:
    """Score the households to re-score (``model``: the current one) and build every row.

    Every household and member row is written once: new and changed rows go to the
    staging tables and are merged with one INSERT and one UPDATE per table.
    """
    bid = uuid.UUID(batch_id)
    rescore: list[int] = []
    if model is not None and state.rescore:
        ids = sorted(state.rescore)
        last_rows = last_history_rows(state)
        for start in range(0, len(ids), SLICE):
            rescore += prescore(state, model, ids[start : start + SLICE], last_rows)
            await asyncio.sleep(0)
    new_households, new_members = state.new_households, state.new_members
    member = _MEMBER_STAGED
    households = [
        (*_staged(state.households[i]), i in new_households)
        for i in sorted(state.dirty_households | new_households)
    ]
    members = [
        (*member(state.members[i]), i in new_members)
        for i in sorted(state.dirty_members | new_members)
    ]
    await asyncio.sleep(0)
    history = [
        (
            h["household_id"],
            h["member_id"],
            h["version"],
            h["change"],
            _jsonb(h["before"]),
            _jsonb(h["after"]),
            h["batch_id"],
            h["ref"],
            h["actor"],
            h.get("source", "partner_batch"),
        )
        for h in state.history
    ]
    await asyncio.sleep(0)
    return Flush(
        results=[(bid, *_RESULT_VALUES(r)) for r in results],
        households=households,
        members=members,
        history=history,
        rescore=rescore,
    )


async def flush(conn: asyncpg.Connection, rows: Flush) -> None:
    """Send a prepared chunk (inside the caller's transaction): binary COPYs and one merge."""
    await conn.copy_records_to_table(
        "update_results", columns=["batch_id", *RESULT_COLUMNS], records=rows.results
    )
    if rows.households:
        await conn.copy_records_to_table(
            "nser_stage_households", columns=list(_STAGE_HOUSEHOLDS), records=rows.households
        )
    if rows.members:
        await conn.copy_records_to_table(
            "nser_stage_members", columns=list(_STAGE_MEMBERS), records=rows.members
        )
    merge = (_MERGE_HOUSEHOLDS if rows.households else "") + (
        _MERGE_MEMBERS if rows.members else ""
    )
    if merge:
        await conn.execute(merge)
    if rows.history:
        await conn.copy_records_to_table(
            "household_history", columns=[*HISTORY_COLUMNS, "source"], records=rows.history
        )
    if rows.rescore:
        await pmt_service.rescore_households(conn, rows.rescore)


async def write(conn: asyncpg.Connection, state: State, results: list[Row], batch_id: str) -> None:
    """Prepare and flush in one go (inside the caller's transaction)."""
    model = await pmt_service.current_model(conn) if state.rescore else None
    await flush(conn, await prepare(state, results, batch_id, model))
