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

The simulation only reads: one ``SELECT`` over households and their living members,
grouped in SQL (province x district x live band x candidate band x live/candidate
eligibility), so no score, band or history row of the registry changes. It runs on the
worker (:func:`process_one`), which holds the ``simulations`` row locked while it runs.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from app.auth.partner import Principal
from app.errors import NotFound, ValidationFailed
from app.services.audit import trail as audit
from app.services.pmt.features import MEMBER_AGGREGATE
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

_AGGREGATE = MEMBER_AGGREGATE.format(where="true").replace(
    "count(*) AS size,",
    "count(*) AS size,\n       count(*) FILTER (WHERE "
    + re.sub(r"\bm\.", "mb.", rules.recipient_sql())
    + ") AS recipients,",
    1,
)
assert "AS recipients" in _AGGREGATE
# What a rule can read of a household: its id (member conditions), geography and score.
_RULE_COLUMNS = (
    "id",
    "province_code",
    "division_code",
    "district_code",
    "tehsil_code",
    "union_council_code",
    "village_code",
)


def simulation_sql(spec: SimulationSpec) -> tuple[str, list[object]]:
    """The one grouped ``SELECT`` of a simulation and its parameters."""
    params: list[object] = []

    def bind(value: object) -> str:
        params.append(value)
        return f"${len(params)}"

    live = rules.eligible_sql(spec.live_rule, bind)
    candidate = rules.eligible_sql(spec.candidate_rule, bind)
    model = spec.candidate_model
    if model is None:
        score, band = "h.pmt_score", "h.poverty_band"
    else:
        score = score_expression(model)
        band = band_expression(model, "c.score")
    # The candidate rule reads ``h``: the household with the candidate score as its score.
    shadow = ", ".join(f"h.{c} AS {c}" for c in _RULE_COLUMNS)
    sql = f"""
SELECT h.province_code, h.district_code,
       coalesce(h.poverty_band, 'unscored') AS live_band,
       coalesce({band}, 'unscored') AS cand_band,
       coalesce({live}, false) AS live_e,
       coalesce(ce.eligible, false) AS cand_e,
       count(*) AS households,
       sum(m.size)::bigint AS members,
       sum(m.recipients)::bigint AS recipients
  FROM households h
  LEFT JOIN ({_AGGREGATE}) m0 ON m0.household_id = h.id
  CROSS JOIN LATERAL (SELECT coalesce(m0.size, 0) AS size,
                             coalesce(m0.dependents, 0) AS dependents,
                             m0.head_education,
                             coalesce(m0.disabled, 0) AS disabled,
                             coalesce(m0.recipients, 0) AS recipients) m
  CROSS JOIN LATERAL (SELECT {score} AS score) c
  CROSS JOIN LATERAL (SELECT {candidate} AS eligible
                        FROM (SELECT {shadow}, c.score AS pmt_score) h) ce
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
        """SELECT id, status, request::text AS request, requested_by, attempts, created_at,
                  finished_at, result::text AS result, error
             FROM simulations WHERE id = $1""",
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
    }


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


async def run(conn: asyncpg.Connection, spec: SimulationSpec) -> dict[str, Any]:
    """Run one simulation on ``conn`` (inside the caller's transaction): the report."""
    started = time.monotonic()
    sql, params = simulation_sql(spec)
    rows = await conn.fetch(sql, *params)
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


async def process_one(conn: asyncpg.Connection, worker: str) -> bool:
    """Claim and run one simulation; False when none is waiting.

    The claim commits ``running``; the run's transaction then holds the row locked until
    it stores the result, so no other worker takes it over while this one lives. A
    database error fails the simulation with its reason; a lost connection leaves it to be
    reclaimed (up to ``MAX_ATTEMPTS`` runs).
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
        async with conn.transaction():
            owned = await conn.fetchval(
                "SELECT id FROM simulations WHERE id = $1 AND claimed_by = $2 FOR UPDATE NOWAIT",
                sim_id,
                worker,
            )
            if owned is None:
                return True
            spec = await resolve(conn, orjson.loads(row["request"]))
            report = await run(conn, spec)
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
