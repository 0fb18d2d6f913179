"""What-if targeting simulations: a candidate PMT model and/or rule against the live ones.

A simulation compares two ways of selecting households over the whole registry:

- **live**: the scores as the registry holds them (``households.pmt_score``, each under
  its own model version) and the rule in force: the named programme's current rule
  version, or a ``live_rule`` given with the request when no programme is named;
- **candidate**: the same, with a candidate PMT model version (a row of ``pmt_models``,
  usually not current) scoring every household from its indicators, and/or a candidate
  programme rule in place of the live one.

It reports households, members and families (beneficiary units) entering eligibility
(eligible under the candidate, not under the live) and leaving it (the reverse), by
province, district and live band; each side's caseload and its cost at the stated
transfer amount per family; the band moves a candidate model causes; and the inclusion and
exclusion shifts.

**Families**: under a rule of unit ``family`` the beneficiaries of an eligible household
are its ever-married women (one recipient per family, protocol §3.1, the programmes
package's ``recipient_sql``); under unit ``household`` the household is one family. The
cost of a side is its families times the transfer amount.

**Inclusion and exclusion shifts**: the reference for "poor" is the live score, so both
sides are judged by the same yardstick: a household is poor when its live band is one of
``poor_bands`` (by default the live model's bands up to and including ``poor``). The
inclusion error of a side is the number of eligible households that are not poor; the
exclusion error, the number of poor households that are not eligible. The shift is
candidate minus live. Newly included households (entering) and newly excluded households
(leaving) are split by that reference (poor or not), by live band and by geography: a poor
household entering reduces the exclusion error, a non-poor one adds to the inclusion
error, and so on.

The simulation only reads, so no score, band or history row of the registry changes: one
grouped ``SELECT`` (province x district x live band x candidate band x live/candidate
eligibility) per range of ``CHUNK_IDS`` household ids, over the households of the range
and the aggregate of their living members, both read in household id order
(:func:`simulation_sql`). Every range costs the same whatever the registry's size, so a
run grows linearly with it; the ranges are shared out among ``READERS`` connections on one
snapshot (the worker's own and a spare, each a PostgreSQL backend busy on its own core),
and the groups of all ranges are added up before the report. It runs on the worker
(:func:`process_one`), which holds the ``simulations`` row locked while it runs, logs
its progress every tenth of the ranges and publishes it (ranges read of ranges to read) to
``simulation_progress`` about once a second, for the API and the console to show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from asyncpg.transaction import Transaction

from app.auth.partner import Principal
from app.errors import NotFound, ValidationFailed
from app.services.audit import trail as audit
from app.services.pmt.features import HOUSEHOLD_COLUMNS, MEMBER_COLUMNS
from app.services.pmt.model import InvalidModel, PmtModel
from app.services.pmt.model import _band_expression as band_expression
from app.services.pmt.model import _score_expression as score_expression
from app.services.programmes import rules
from app.services.programmes import store as programmes
from app.services.registry.version import data_version

log = logging.getLogger("nser.targeting")

DEFAULT_POOR_BANDS = ("ultra_poor", "very_poor", "poor")
MAX_ATTEMPTS = 3
# A running simulation whose row is no longer locked (its worker died) is taken over after
# this grace (the claim commits before the run's transaction locks the row).
RECLAIM_SECONDS = 30
COLUMNS = ("households", "members", "families")


@dataclass(frozen=True)
class SimulationSpec:
    """A validated simulation: what is compared, and how to price it."""

    live_rule: rules.Rule
    candidate_rule: rules.Rule
    candidate_model: PmtModel | None
    transfer_amount: Decimal
    poor_bands: tuple[str, ...] = DEFAULT_POOR_BANDS


# -- the query ------------------------------------------------------------------------------

# Households per statement: a statement reads one range of household ids (the households
# by their primary key, their members by ``members.household_id``), so every statement
# costs the same whatever the registry's size, and the ranges are shared out among the
# reading connections.
CHUNK_IDS = 100_000
# Connections reading ranges at once (the worker's own and one of its spares): each keeps
# one core busy, PostgreSQL's in its backend.
READERS = 2
# What a rule can read of a household besides its score and member conditions.
_RULE_COLUMNS = (
    "province_code",
    "division_code",
    "district_code",
    "tehsil_code",
    "union_council_code",
    "village_code",
)


def _conditions(spec: SimulationSpec) -> list[str]:
    """The member conditions either rule reads."""
    both = rules.conditions_of(spec.live_rule) + rules.conditions_of(spec.candidate_rule)
    return list(dict.fromkeys(both))


def simulation_sql(spec: SimulationSpec) -> tuple[str, list[object]]:
    """The grouped ``SELECT`` of a simulation over the households with ids in ``[$1, $2)``,
    and its parameters (from ``$3``; the caller binds the range first).

    Three levels, each evaluated once per household:

    1. the households of the range, each joined to the aggregate of its living members
       (members grouped by household as the index on ``household_id`` gives them; joined
       to the households only for their survey dates, when a candidate model counts the
       dependants): a merge join of two index scans, no sort and no hash of the registry.
       The aggregate holds what the PMT features read (``features.MEMBER_COLUMNS``,
       candidate model only), the families (recipients), and one flag per member condition
       the rules read (a condition's ``EXISTS`` holds exactly when the count of the living
       members meeting it is not zero);
    2. the candidate score (``OFFSET 0`` keeps the level, so the expression is computed
       once, not copied into each test that reads it);
    3. both rules (``rules.eligible_sql``, the flags standing for the ``EXISTS``) and the
       grouping.
    """
    params: list[object] = [None, None]

    def bind(value: object) -> str:
        params.append(value)
        return f"${len(params)}"

    model = spec.candidate_model
    names = _conditions(spec)
    # (column, aggregate over members ``mb``, its value for a household without any)
    members = [
        ("size", "count(*)", "0"),
        ("recipients", f"count(*) FILTER (WHERE {rules.recipient_sql('mb')})", "0"),
        *(
            (f"c_{n}", f"count(*) FILTER (WHERE {rules.member_test(n, 'mb')}) > 0", "false")
            for n in names
        ),
    ]
    household = ["id", *_RULE_COLUMNS, "pmt_score", "poverty_band"]
    survey = ""
    if model is not None:
        members += [(name, sql, "0") for name, sql in MEMBER_COLUMNS if name != "size"]
        household += [c for c in HOUSEHOLD_COLUMNS if c not in household]
        survey = "JOIN households hh ON hh.id = mb.household_id AND hh.id >= $1 AND hh.id < $2"
    aggregate = f"""SELECT mb.household_id, {", ".join(f"{sql} AS {n}" for n, sql, _ in members)}
                    FROM members mb {survey}
                   WHERE mb.deceased_on IS NULL AND mb.household_id >= $1
                     AND mb.household_id < $2
                   GROUP BY mb.household_id"""
    # head_education stays null for a household without a living head, as the features expect.
    joined = ", ".join(
        f"a.{n}" if n == "head_education" else f"coalesce(a.{n}, {zero}) AS {n}"
        for n, _, zero in members
    )
    households = f"""SELECT {", ".join(f"hh.{c}" for c in household)}, {joined}
            FROM households hh LEFT JOIN ({aggregate}) a ON a.household_id = hh.id
           WHERE hh.id >= $1 AND hh.id < $2"""
    if model is not None:
        m_columns = ", ".join(f"h.{name}" for name, _ in MEMBER_COLUMNS)
        scored = f"""SELECT h.*, {score_expression(model)} AS score
          FROM ({households}) h CROSS JOIN LATERAL (SELECT {m_columns}) m
        OFFSET 0"""
        band = band_expression(model, "h.score")
    else:
        scored = f"SELECT h.*, h.pmt_score AS score FROM ({households}) h"
        band = "h.poverty_band"
    flag = "h.c_{}".format
    live = rules.eligible_sql(spec.live_rule, bind, flag)
    candidate = rules.eligible_sql(spec.candidate_rule, bind, flag)
    # The candidate rule reads ``h``: the household with the candidate score as its score.
    shadow = ", ".join(f"h.{c} AS {c}" for c in (*_RULE_COLUMNS, *(f"c_{n}" for n in names)))
    sql = f"""
SELECT h.province_code, h.district_code,
       coalesce(h.poverty_band, 'unscored') AS live_band,
       coalesce({band}, 'unscored') AS cand_band,
       coalesce({live}, false) AS live_e,
       coalesce(ce.eligible, false) AS cand_e,
       count(*) AS households,
       sum(h.size)::bigint AS members,
       sum(h.recipients)::bigint AS recipients
  FROM ({scored}) h
  CROSS JOIN LATERAL (SELECT {candidate} AS eligible
                        FROM (SELECT {shadow}, h.score AS pmt_score) h) ce
 GROUP BY 1, 2, 3, 4, 5, 6
"""
    return _compact(sql, params)


def _compact(sql: str, params: list[object]) -> tuple[str, list[object]]:
    """Drop the parameters the text never uses and renumber the rest: PostgreSQL cannot
    type a parameter no expression reads (a rule may bind a value it then leaves out)."""
    used = sorted({int(n) for n in re.findall(r"\$(\d+)", sql)})
    number = {old: new for new, old in enumerate(used, 1)}
    text = re.sub(r"\$(\d+)", lambda m: f"${number[int(m.group(1))]}", sql)
    return text, [params[old - 1] for old in used]


# -- the report (pure) ----------------------------------------------------------------------


def _zero() -> dict[str, int]:
    return dict.fromkeys(COLUMNS, 0)


def _add(into: dict[str, int], households: int, members: int, families: int) -> None:
    into["households"] += households
    into["members"] += members
    into["families"] += families


def _families(unit: str, households: int, recipients: int) -> int:
    return households if unit == "household" else recipients


def _money(amount: Decimal, families: int) -> str:
    return str((amount * families).quantize(Decimal("0.01")))


def _change(new: Mapping[str, int], old: Mapping[str, int]) -> dict[str, int]:
    return {k: new[k] - old[k] for k in COLUMNS}


class _Tally:
    """Live, candidate, entering and leaving counts of one group."""

    def __init__(self) -> None:
        self.live, self.candidate = _zero(), _zero()
        self.entering, self.leaving = _zero(), _zero()

    def view(self) -> dict[str, Any]:
        return {
            "entering": self.entering,
            "leaving": self.leaving,
            "live": self.live,
            "candidate": self.candidate,
            "change": _change(self.candidate, self.live),
        }


def summarize(
    spec: SimulationSpec,
    rows: Iterable[Mapping[str, Any]],
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The report of a simulation from the grouped rows of :func:`simulation_sql`."""
    names = names or {}
    live_unit, cand_unit = spec.live_rule.unit, spec.candidate_rule.unit
    poor = set(spec.poor_bands)
    total = _Tally()
    provinces: dict[str, _Tally] = defaultdict(_Tally)
    districts: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    bands: dict[str, _Tally] = defaultdict(_Tally)
    moves: dict[tuple[str, str], dict[str, int]] = defaultdict(_zero)
    errors = {side: {"inclusion": 0, "exclusion": 0} for side in ("live", "candidate")}
    shifts: dict[str, dict[str, int]] = {
        "newly_included": {"poor": 0, "not_poor": 0},
        "newly_excluded": {"poor": 0, "not_poor": 0},
    }
    households_total = 0
    for r in rows:
        hh, members, recipients = r["households"], r["members"], r["recipients"]
        households_total += hh
        is_poor = r["live_band"] in poor
        tallies = (
            total,
            provinces[r["province_code"]],
            bands[r["live_band"]],
            districts[(r["province_code"], r["district_code"])],
        )
        for t in tallies:
            if r["live_e"]:
                _add(t.live, hh, members, _families(live_unit, hh, recipients))
            if r["cand_e"]:
                _add(t.candidate, hh, members, _families(cand_unit, hh, recipients))
            if r["cand_e"] and not r["live_e"]:
                _add(t.entering, hh, members, _families(cand_unit, hh, recipients))
            if r["live_e"] and not r["cand_e"]:
                _add(t.leaving, hh, members, _families(live_unit, hh, recipients))
        if r["live_band"] != r["cand_band"]:
            _add(moves[(r["live_band"], r["cand_band"])], hh, members, recipients)
        for side, eligible in (("live", r["live_e"]), ("candidate", r["cand_e"])):
            if eligible and not is_poor:
                errors[side]["inclusion"] += hh
            if is_poor and not eligible:
                errors[side]["exclusion"] += hh
        kind = "poor" if is_poor else "not_poor"
        if r["cand_e"] and not r["live_e"]:
            shifts["newly_included"][kind] += hh
        if r["live_e"] and not r["cand_e"]:
            shifts["newly_excluded"][kind] += hh
    amount = spec.transfer_amount
    live_cost = _money(amount, total.live["families"])
    cand_cost = _money(amount, total.candidate["families"])
    return {
        "households_total": households_total,
        "caseload": {
            "live": total.live,
            "candidate": total.candidate,
            "change": _change(total.candidate, total.live),
        },
        "cost": {
            "currency": "PKR",
            "transfer_amount": str(amount),
            "per": "family",
            "live": live_cost,
            "candidate": cand_cost,
            "change": str(Decimal(cand_cost) - Decimal(live_cost)),
        },
        "entering": total.entering,
        "leaving": total.leaving,
        "by_province": [
            {"province_code": code, "name": names.get(code), **t.view()}
            for code, t in sorted(provinces.items())
        ],
        "by_district": [
            {"province_code": p, "district_code": d, "name": names.get(d), **t.view()}
            for (p, d), t in sorted(districts.items())
        ],
        "by_band": [{"band": b, **t.view()} for b, t in sorted(bands.items())],
        "band_moves": [
            {"from": f, "to": t, "households": v["households"], "members": v["members"]}
            for (f, t), v in sorted(moves.items())
        ],
        "inclusion_exclusion": {
            "poor_bands": sorted(poor),
            "reference": "live band",
            "inclusion_error": {
                "live": errors["live"]["inclusion"],
                "candidate": errors["candidate"]["inclusion"],
                "shift": errors["candidate"]["inclusion"] - errors["live"]["inclusion"],
            },
            "exclusion_error": {
                "live": errors["live"]["exclusion"],
                "candidate": errors["candidate"]["exclusion"],
                "shift": errors["candidate"]["exclusion"] - errors["live"]["exclusion"],
            },
            **shifts,
        },
    }


# -- requests -------------------------------------------------------------------------------


async def _model(conn: asyncpg.Connection, version: str) -> PmtModel:
    row = await conn.fetchrow(
        """SELECT version, description, intercept, weights, bands, illustrative
             FROM pmt_models WHERE version = $1""",
        version,
    )
    if row is None:
        raise ValidationFailed(f"pmt_version: no PMT model version {version!r}")
    try:
        return PmtModel.from_row(row)
    except InvalidModel as exc:  # pragma: no cover - stored models were validated
        raise ValidationFailed(f"pmt_version: {exc}") from exc


async def resolve(conn: asyncpg.Connection, request: Mapping[str, Any]) -> SimulationSpec:
    """The spec of a stored request (``prepare``'s output), read again by the worker."""
    live = rules.parse_rule(request["live"]["rule"])
    candidate = rules.parse_rule(request["candidate"]["rule"])
    version = request["candidate"]["pmt_version"]
    model = await _model(conn, version) if version else None
    return SimulationSpec(
        live, candidate, model, Decimal(request["transfer_amount"]), tuple(request["poor_bands"])
    )


async def prepare(conn: asyncpg.Connection, body: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a request body (``app.schemas.targeting.SimulationIn`` as a dict) into the
    document stored with the simulation: the live rule resolved (the programme's current
    version), rules normalized, the candidate model checked to exist. 422 otherwise."""
    if body.get("pmt_version") is None and body.get("rule") is None:
        raise ValidationFailed("give a candidate pmt_version, a candidate rule, or both")
    programme = body.get("programme_id")
    if (programme is None) == (body.get("live_rule") is None):
        raise ValidationFailed("give either programme_id (its rule is the live rule) or live_rule")
    live_doc: dict[str, Any]
    programme_view: dict[str, Any] | None = None
    if programme is not None:
        current = await programmes.get(conn, str(programme))
        if current is None:
            raise ValidationFailed(f"programme_id: no programme {programme}")
        live_doc = rules.normalize(current.rule)
        programme_view = {"id": str(current.id), "code": current.code, "version": current.version}
    else:
        live_doc = rules.normalize(await programmes.validate_rule(conn, body["live_rule"]))
    cand_doc = (
        rules.normalize(await programmes.validate_rule(conn, body["rule"]))
        if body.get("rule") is not None
        else live_doc
    )
    version = body.get("pmt_version")
    bands: list[str] = []
    if version is not None:
        bands = [name for name, _ in (await _model(conn, version)).bands]
    live_version = await conn.fetchval("SELECT version FROM pmt_models WHERE is_current")
    poor = body.get("poor_bands")
    if poor is None:
        poor = list(DEFAULT_POOR_BANDS)
    return {
        "label": body.get("label") or "",
        "programme": programme_view,
        "live": {"rule": live_doc, "pmt_version": live_version, "scores": "registry"},
        "candidate": {
            "rule": cand_doc,
            "rule_changed": body.get("rule") is not None,
            "pmt_version": version,
            "bands": bands,
        },
        "transfer_amount": str(Decimal(str(body["transfer_amount"])).quantize(Decimal("0.01"))),
        "poor_bands": list(dict.fromkeys(poor)),
    }


async def submit(pool: asyncpg.Pool, staff: Principal, body: Mapping[str, Any]) -> str:
    """Queue a simulation for the worker; returns its id (audited as a staff action)."""
    async with pool.acquire() as conn, conn.transaction():
        request = await prepare(conn, body)
        sim_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO simulations (request, requested_by) VALUES ($1::jsonb, $2) RETURNING id",
            orjson.dumps(request).decode(),
            staff.client_id,
        )
        await audit.append_action(
            conn, staff, "/v1/staff/simulations", {"simulation_id": str(sim_id)}
        )
    return str(sim_id)


async def get(pool: asyncpg.Pool, staff: Principal, simulation_id: uuid.UUID) -> dict[str, Any]:
    row = await pool.fetchrow(
        """SELECT s.id, s.status, s.request::text AS request, s.requested_by, s.attempts,
                  s.created_at, s.finished_at, s.result::text AS result, s.error,
                  p.ranges_done, p.ranges
             FROM simulations s LEFT JOIN simulation_progress p ON p.simulation_id = s.id
            WHERE s.id = $1""",
        simulation_id,
    )
    if row is None:
        raise NotFound(f"no simulation {simulation_id}")
    return {
        "simulation_id": str(row["id"]),
        "status": row["status"],
        "requested_by": row["requested_by"],
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
        "attempts": row["attempts"],
        "request": orjson.loads(row["request"]),
        "result": orjson.loads(row["result"]) if row["result"] else None,
        "error": row["error"],
        "progress": _progress(row["status"], row["ranges_done"], row["ranges"]),
    }


def _progress(status: str, done: int | None, total: int | None) -> dict[str, Any]:
    """How far the run has got: ranges of household ids read of those to read (0 while
    waiting, all once done), and that as a percentage."""
    if status == "done":
        done = total = total or 1
    if not total or done is None:
        return {"ranges_done": 0, "ranges": None, "percent": 0}
    return {"ranges_done": done, "ranges": total, "percent": int(100 * done / total)}


# -- the worker -----------------------------------------------------------------------------

_CLAIM = f"""
UPDATE simulations s
   SET status = 'running', claimed_by = $1, claimed_at = now(), attempts = s.attempts + 1
 WHERE s.id = (SELECT id FROM simulations
                WHERE status = 'pending'
                   OR (status = 'running'
                       AND claimed_at < now() - interval '{RECLAIM_SECONDS} seconds')
                ORDER BY created_at, id
                LIMIT 1
                FOR UPDATE SKIP LOCKED)
RETURNING s.id, s.request::text AS request, s.attempts
"""
_FAIL = """
UPDATE simulations SET status = 'failed', error = $2, finished_at = now()
 WHERE id = $1 AND claimed_by = $3
"""


Progress = Callable[[int, int], None]
_PLAN = """SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off;
SET LOCAL enable_hashjoin = off; SET LOCAL max_parallel_workers_per_gather = 0;
SET LOCAL jit = off"""
_GROUP = ("province_code", "district_code", "live_band", "cand_band", "live_e", "cand_e")


async def read_groups(
    conns: Sequence[asyncpg.Connection],
    spec: SimulationSpec,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """The grouped rows of :func:`simulation_sql` over the whole registry: its id ranges
    shared out among ``conns`` (each already in a transaction on one snapshot), each range's
    groups added into the others'. ``progress(ranges done, ranges)`` after each range."""
    low, high = await conns[0].fetchrow("SELECT min(id), max(id) FROM households")
    if low is None:
        return []
    ranges = [(lo, min(lo + CHUNK_IDS, high + 1)) for lo in range(low, high + 1, CHUNK_IDS)]
    pending = iter(ranges)
    sql, params = simulation_sql(spec)
    totals: dict[tuple[Any, ...], list[int]] = {}
    done = 0

    async def reader(conn: asyncpg.Connection) -> None:
        nonlocal done
        statement = await conn.prepare(sql)
        for lo, hi in pending:  # shared: each range is read by one connection
            for r in await statement.fetch(lo, hi, *params[2:]):
                into = totals.setdefault(tuple(r[k] for k in _GROUP), [0, 0, 0])
                into[0] += r["households"]
                into[1] += r["members"]
                into[2] += r["recipients"]
            done += 1
            if progress is not None:
                progress(done, len(ranges))

    tasks = [asyncio.ensure_future(reader(c)) for c in conns]
    try:
        await asyncio.gather(*tasks)
    finally:  # one reader failed (or the run was cancelled): stop the others' statements
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    return [
        {**dict(zip(_GROUP, key, strict=True)), "households": h, "members": m, "recipients": r}
        for key, (h, m, r) in totals.items()
    ]


async def run(
    conn: asyncpg.Connection,
    spec: SimulationSpec,
    readers: Sequence[asyncpg.Connection] = (),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run one simulation on ``conn`` (inside the caller's transaction, which should be
    ``REPEATABLE READ``): the report. ``readers``: more connections, idle, to read ranges
    of the registry at the same time, each on the snapshot of ``conn``'s transaction."""
    if not conn.is_in_transaction():
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await run(conn, spec, readers, progress)
    started = time.monotonic()
    opened: list[Transaction] = []
    try:
        snapshot = await conn.fetchval("SELECT pg_export_snapshot()") if readers else None
        for reader in readers:
            tx = reader.transaction(isolation="repeatable_read", readonly=True)
            await tx.start()
            opened.append(tx)
            await reader.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        for c in (conn, *readers):
            await c.execute(_PLAN)
        rows = await read_groups([conn, *readers], spec, progress)
    finally:
        for tx in opened:
            await tx.rollback()
    codes = sorted({r["province_code"] for r in rows} | {r["district_code"] for r in rows})
    names = {
        r["code"]: r["name_en"]
        for r in await conn.fetch(
            "SELECT code, name_en FROM geo_units WHERE code = ANY($1::text[])", codes
        )
    }
    report = summarize(spec, rows, names)
    report["registry_version"] = await data_version(conn)
    report["computed_at"] = datetime.now(UTC).isoformat()
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def _progress_log(sim_id: uuid.UUID) -> Progress:
    """Log a long run's progress, every tenth of its ranges."""
    step = 0

    def report(done: int, total: int) -> None:
        nonlocal step
        if done * 10 // total > step or done == total:
            step = done * 10 // total
            log.info(
                "simulation progress",
                extra={"simulation_id": str(sim_id), "ranges_done": done, "ranges": total},
            )

    return report


_PROGRESS = """
INSERT INTO simulation_progress (simulation_id, ranges_done, ranges) VALUES ($1, $2, $3)
ON CONFLICT (simulation_id) DO UPDATE
   SET ranges_done = excluded.ranges_done, ranges = excluded.ranges, updated_at = now()
"""


# A progress write waits at most this long (the run never waits on its progress).
WRITE_TIMEOUT = 5.0


class ProgressWriter:
    """Publishes a run's progress to ``simulation_progress`` from ``conn``, a connection
    outside the run's transaction (the run holds its ``simulations`` row locked, so others
    could not read progress written there): at most every ``every`` seconds while ranges
    complete, and once at the end. Best effort: a failed write is logged and never fails
    the simulation."""

    def __init__(self, conn: asyncpg.Connection, sim_id: uuid.UUID, every: float = 1.0):
        self.conn, self.sim_id, self.every = conn, sim_id, every
        self.latest: tuple[int, int] | None = None
        self.written: tuple[int, int] | None = None
        self.changed = asyncio.Event()
        self.log = _progress_log(sim_id)

    def __call__(self, done: int, total: int) -> None:
        self.log(done, total)
        self.latest = (done, total)
        self.changed.set()

    async def _write(self) -> None:
        if self.latest is None or self.latest == self.written:
            return
        latest = self.latest
        try:
            await self.conn.execute(_PROGRESS, self.sim_id, *latest, timeout=WRITE_TIMEOUT)
            self.written = latest
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning(
                "simulation progress not written",
                extra={"simulation_id": str(self.sim_id), "error": str(exc)},
            )

    async def publish(self) -> None:
        """Run alongside the simulation until cancelled; then :meth:`flush`."""
        while True:
            await self.changed.wait()
            self.changed.clear()
            await self._write()
            await asyncio.sleep(self.every)

    async def flush(self) -> None:
        await self._write()


async def _run_reported(
    conn: asyncpg.Connection,
    spec: SimulationSpec,
    readers: Sequence[asyncpg.Connection],
    sim_id: uuid.UUID,
    reporter: asyncpg.Connection | None,
) -> dict[str, Any]:
    if reporter is None:
        return await run(conn, spec, readers, _progress_log(sim_id))
    writer = ProgressWriter(reporter, sim_id)
    publishing = asyncio.ensure_future(writer.publish())
    try:
        return await run(conn, spec, readers, writer)
    finally:
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        await writer.flush()


async def process_one(
    conn: asyncpg.Connection,
    worker: str,
    readers: Sequence[asyncpg.Connection] = (),
    reporter: asyncpg.Connection | None = None,
) -> bool:
    """Claim and run one simulation; False when none is waiting.

    The claim commits ``running``; the run's transaction (``REPEATABLE READ``: one
    snapshot for every statement of the run, shared with ``readers``, idle connections
    that read part of the registry at the same time) then holds the row locked until it
    stores the result, so no other worker takes it over while this one lives (``FOR NO KEY
    UPDATE``: the progress rows' foreign key, checked from the reporter's connection, only
    shares the key and must not wait for the run). A database
    error fails the simulation with its reason; a lost connection leaves it to be
    reclaimed (up to ``MAX_ATTEMPTS`` runs). ``reporter``: an idle connection outside the
    run's transaction that publishes its progress (:class:`ProgressWriter`).
    """
    row = await conn.fetchrow(_CLAIM, worker)
    if row is None:
        return False
    sim_id = row["id"]
    if row["attempts"] > MAX_ATTEMPTS:
        await conn.execute(_FAIL, sim_id, f"gave up after {MAX_ATTEMPTS} attempts", worker)
        return True
    log.info("simulation claimed", extra={"simulation_id": str(sim_id)})
    try:
        async with conn.transaction(isolation="repeatable_read"):
            owned = await conn.fetchval(
                "SELECT id FROM simulations WHERE id = $1 AND claimed_by = $2"
                " FOR NO KEY UPDATE NOWAIT",
                sim_id,
                worker,
            )
            if owned is None:
                return True
            spec = await resolve(conn, orjson.loads(row["request"]))
            report = await _run_reported(conn, spec, readers, sim_id, reporter)
            await conn.execute(
                """UPDATE simulations SET status = 'done', result = $2::json, finished_at = now()
                    WHERE id = $1""",
                sim_id,
                orjson.dumps(report).decode(),
            )
    except (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.AdminShutdownError,
        OSError,
    ):
        raise
    except (asyncpg.PostgresError, rules.RuleError, ValidationFailed) as exc:
        log.warning("simulation failed", extra={"simulation_id": str(sim_id), "error": str(exc)})
        await conn.execute(_FAIL, sim_id, str(exc)[:2000], worker)
        return True
    log.info("simulation done", extra={"simulation_id": str(sim_id), "seconds": report["seconds"]})
    return True
