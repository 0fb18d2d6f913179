"""Score explanation: each indicator's points, the nearest band crossings, the score's history.

The indicator values are read by the very SQL expressions that score the registry
(``SQL_FEATURES`` over ``MEMBER_AGGREGATE``), and the raw score is added up in the SQL's
order (intercept, then features by name), so the explanation reproduces the stored score
bit for bit instead of approximating it with the Python twin (which, for a household with
several living heads, reads another head's education).

Rounding, as stated in every answer: ``pmt_score = intercept + sum(points) +
bound_adjustment`` exactly, in cents. Each ``points`` is ``weight * value`` rounded to
cents by the largest-remainder method (so the rounded parts add up to the rounded whole;
each is within 0.02 of ``exact_points``, within 0.01 when the intercept is a whole number
of cents). ``bound_adjustment`` is non-zero only when the raw score falls outside 0..100
and the score is held at the bound.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import orjson

from app.auth.partner import Principal
from app.errors import NotFound
from app.services.audit import trail as audit
from app.services.pmt.features import EDUCATION_YEARS, ITEMS, MEMBER_AGGREGATE, SQL_FEATURES
from app.services.pmt.model import PmtModel, band_of, clamp
from app.services.targeting import partner_view

ROUNDING = (
    "pmt_score = intercept + sum(points) + bound_adjustment, exactly, in cents; points are "
    "weight x value rounded to cents by largest remainder (each within 0.02 of exact_points)"
)
PMT_FIELDS = ("pmt_score", "poverty_band", "pmt_version")
NEAREST = 5  # single-indicator changes shown per band edge
_CENT = Decimal("0.01")

# What values a feature can take, for the changes that would cross a band edge.
BINARY = frozenset({"has_disabled_member", "toilet_flush", "toilet_none", *ITEMS})
COUNTS: dict[str, tuple[int, int]] = {
    "household_size": (1, 60),
    "large_livestock": (0, 10_000),
    "small_livestock": (0, 10_000),
}
LEVELS: dict[str, tuple[float, ...]] = {
    "head_education_years": tuple(sorted({float(v) for v in EDUCATION_YEARS.values()})),
}
CONTINUOUS: dict[str, tuple[float, float]] = {
    "dependency_ratio": (0.0, 1.0),
    "rooms_per_member": (0.0, 50.0),
    "log_land_acres": (0.0, math.log(1 + 100_000)),
}
# A flush toilet and no toilet exclude each other: setting one to 1 sets the other to 0.
EXCLUSIVE = {"toilet_flush": "toilet_none", "toilet_none": "toilet_flush"}


def _cents(value: Decimal) -> int:
    return int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Apportioned:
    intercept: Decimal
    points: list[Decimal]
    bound_adjustment: Decimal


def apportion(intercept: float, exact_points: Sequence[float], pmt_score: float) -> Apportioned:
    """Round the intercept and each term to cents so that they add up to ``pmt_score``.

    ``pmt_score`` is the score of ``intercept + sum(exact_points)`` (bounded to 0..100,
    rounded to cents). The intercept is rounded half up; the terms get the cents left by
    the largest-remainder method; the bound, if the raw score passed it, is its own part.
    """
    raw = Decimal(intercept) + sum((Decimal(p) for p in exact_points), Decimal(0))
    bounded = min(Decimal(100), max(Decimal(0), raw))
    adjustment = _cents(bounded - raw)
    target = _cents(Decimal(repr(pmt_score))) - adjustment
    intercept_c = _cents(Decimal(repr(intercept)))
    scaled = [Decimal(p) * 100 for p in exact_points]
    floors = [int(s.to_integral_value(rounding=ROUND_FLOOR)) for s in scaled]
    left = target - intercept_c - sum(floors)
    if not floors:
        intercept_c += left  # nothing to share the cents with
        left = 0
    # Largest remainders first for a cent more; smallest first for a cent less.
    order = sorted(range(len(floors)), key=lambda i: (-(scaled[i] - floors[i]), i))
    if left < 0:
        order.reverse()
    step = 1 if left > 0 else -1
    for k in range(abs(left)):
        floors[order[k % len(order)]] += step
    return Apportioned(
        Decimal(intercept_c) / 100,
        [Decimal(f) / 100 for f in floors],
        Decimal(adjustment) / 100,
    )


def raw_score(model: PmtModel, values: Mapping[str, float]) -> float:
    """``intercept + w1 * f1 + ...`` in float8, features by name: the SQL's order and result."""
    raw = float(model.intercept)
    for name, weight in sorted(model.weights.items()):
        raw += float(weight) * values[name]
    return raw


def _candidates(name: str, value: float, rising: bool) -> list[float]:
    """Values of ``name`` beyond ``value`` in the direction asked, nearest first (a few)."""
    if name in BINARY:
        flipped = 1.0 - value if value in (0.0, 1.0) else None
        if flipped is None or (flipped > value) != rising:
            return []
        return [flipped]
    if name in LEVELS:
        levels = LEVELS[name]
        return (
            [v for v in levels if v > value] if rising else [v for v in levels if v < value][::-1]
        )
    return []


def _solve(name: str, value: float, weight: float, need: float, rising: bool) -> list[float]:
    """For counts and continuous features: the value that moves the raw score by ``need``,
    rounded outwards, then a few steps further (the checks decide)."""
    if name in COUNTS:
        count_low, count_high = COUNTS[name]
        goal = value + need / weight
        first = math.ceil(goal - 1e-9) if rising else math.floor(goal + 1e-9)
        out = [float(first + (k if rising else -k)) for k in range(3)]
        return [
            v for v in out if count_low <= v <= count_high and (v > value if rising else v < value)
        ]
    if name in CONTINUOUS:
        span_low, span_high = CONTINUOUS[name]
        goal = value + need / weight
        start = (math.ceil if rising else math.floor)(goal * 10_000) / 10_000
        out = [start + (k if rising else -k) / 10_000 for k in range(5)]
        return [
            v for v in out if span_low <= v <= span_high and (v > value if rising else v < value)
        ]
    return []


def band_crossings(
    model: PmtModel,
    values: Mapping[str, float],
    pmt_score: float,
    *,
    indicators: Collection[str] | None = None,
    raw_bounds: tuple[float, float] | None = None,
) -> list[dict[str, Any]]:
    """For each band edge of the model, the nearest single-indicator changes across it.

    One indicator at a time, every other held as it is (a flush toilet and no toilet
    excluding each other). Up to ``NEAREST`` changes per edge, smallest move of the score
    first; an edge no single change reaches lists none.

    ``indicators`` limits the changes to those indicators. ``raw_bounds`` replaces the raw
    score by an interval known to hold it (a partner's view works from the published
    score, not the raw one): a change is then listed only if it crosses the edge wherever
    the raw score lies in the interval, and its ``new_score`` is ``pmt_score`` moved by the
    change's own points. Without it, the raw score is computed from ``values``.
    """
    if raw_bounds is None:
        raw = raw_score(model, values)
        low = high = base = raw
    else:
        (low, high), base = raw_bounds, pmt_score
    names = [name for name, _ in model.bands]
    out = []
    for i, (below_band, edge) in enumerate(model.bands[:-1]):
        assert edge is not None
        up = pmt_score < edge
        # The raw score a change starts from: the one least favourable to crossing.
        start = low if up else high
        # Raw score the change must reach: rounding half up to cents, edge - 0.005 scores edge.
        need = (edge - 0.005) - start if up else (edge - 0.005) - start - 1e-9

        def crosses(new_raw: float, up: bool = up, edge: float = edge) -> bool:
            new = clamp(new_raw)
            return new >= edge if up else new < edge

        changes = []
        for name, weight in sorted(model.weights.items()):
            if weight == 0 or (indicators is not None and name not in indicators):
                continue
            if not math.isfinite(start):  # the score is held at a bound: the raw is unknown
                break
            value = values[name]
            rising = (weight > 0) == up
            options = _candidates(name, value, rising) or _solve(name, value, weight, need, rising)
            for new_value in options:
                delta = weight * (new_value - value)
                also: list[dict[str, Any]] = []
                other = EXCLUSIVE.get(name, "")
                if other in model.weights and new_value == 1.0 and values[other] == 1.0:
                    delta -= model.weights[other]
                    also.append({"indicator": other, "from": 1.0, "to": 0.0})
                if not crosses(start + delta):
                    continue
                new_score = clamp(base + delta)
                change: dict[str, Any] = {
                    "indicator": name,
                    "from": value,
                    "to": new_value,
                    "points": float(Decimal(repr(new_score - pmt_score)).quantize(_CENT)),
                    "new_score": new_score,
                    "new_band": band_of(model, new_score),
                }
                if also:
                    change["with"] = also
                changes.append(change)
                break
        changes.sort(key=lambda c: (abs(c["points"]), c["indicator"]))
        out.append(
            {
                "edge": edge,
                "lower_band": below_band,
                "upper_band": names[i + 1],
                "direction": "up" if up else "down",
                "points_needed": float(
                    Decimal(repr(edge - pmt_score if up else pmt_score - edge + 0.01)).quantize(
                        _CENT
                    )
                ),
                "changes": changes[:NEAREST],
            }
        )
    return out


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def score_history(rows: Sequence[Mapping[str, Any]], *, staff: bool) -> list[dict[str, Any]]:
    """Each change of score, band or model (oldest first) with what moved it: every change
    recorded since the score before (the change that carries the new score included).

    ``rows``: the household's history rows in order. Partners see what changed (the kind
    of change, its source, the fields); staff also see who, which batch and reference.
    """
    out: list[dict[str, Any]] = []
    causes: list[dict[str, Any]] = []
    for row in rows:
        before = _json(row["before"]) or {}
        after = _json(row["after"]) or {}
        fields = sorted((set(before) | set(after)) - set(PMT_FIELDS))
        cause: dict[str, Any] = {
            "change": row["change"],
            "source": row["source"],
            "fields": fields,
            "changed_at": row["changed_at"].isoformat(),
        }
        if staff:
            cause.update({k: row[k] for k in ("member_id", "batch_id", "ref", "actor")})
        rescore_only = not fields and row["change"] == "pmt_rescore"
        if "pmt_score" not in after:
            if not rescore_only:
                causes.append(cause)
            continue
        if not rescore_only or not causes:
            causes.append(cause)  # a re-score alone was moved by the model (or by nothing)
        previous_version = before.get("pmt_version")
        new_score = after.get("pmt_score")
        old_score = before.get("pmt_score")
        moved = (
            float(Decimal(repr(float(new_score) - float(old_score))).quantize(_CENT))
            if new_score is not None and old_score is not None
            else None
        )
        model_changed = previous_version is not None and previous_version != after.get(
            "pmt_version"
        )
        out.append(
            {
                "changed_at": row["changed_at"].isoformat(),
                "version": row["version"],
                "pmt_score": new_score,
                "poverty_band": after.get("poverty_band"),
                "pmt_version": after.get("pmt_version"),
                "previous_score": old_score,
                "previous_band": before.get("poverty_band"),
                "previous_version": previous_version,
                "points": moved,
                "model_changed": model_changed,
                "moved_by": causes,
            }
        )
        causes = []
    return out


_GEO = (
    "cardinality($2::text[]) = 0 OR h.province_code = ANY($2) OR h.division_code = ANY($2)"
    " OR h.district_code = ANY($2) OR h.tehsil_code = ANY($2)"
    " OR h.union_council_code = ANY($2) OR h.village_code = ANY($2)"
)
_FEATURES = ",\n       ".join(
    f"({expression})::float8 AS {name}" for name, expression in sorted(SQL_FEATURES.items())
)
HOUSEHOLD_SQL = f"""
SELECT h.id, h.pmt_score::float8 AS pmt_score, h.poverty_band, h.pmt_version, h.version,
       m.size, {_FEATURES}
  FROM households h
  LEFT JOIN ({MEMBER_AGGREGATE.format(where="hh.id = $1")}) m0 ON m0.household_id = h.id
  CROSS JOIN LATERAL (SELECT coalesce(m0.size, 0) AS size,
                             coalesce(m0.dependents, 0) AS dependents,
                             m0.head_education,
                             coalesce(m0.disabled, 0) AS disabled) m
 WHERE h.id = $1 AND ({_GEO})
"""
MODEL_SQL = """
SELECT version, description, intercept, weights, bands, illustrative
  FROM pmt_models
 WHERE version = coalesce($1, (SELECT version FROM pmt_models WHERE is_current))
"""
HISTORY_SQL = """
SELECT version, change, member_id, source, batch_id, ref, actor, changed_at,
       before::text AS before, after::text AS after
  FROM household_history WHERE household_id = $1 ORDER BY id
"""


def build(
    model: PmtModel,
    household: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    *,
    staff: bool,
) -> dict[str, Any]:
    """The explanation of one household read by ``HOUSEHOLD_SQL`` under ``model`` (pure)."""
    values = {name: float(household[name]) for name in model.weights}
    terms = sorted(model.weights.items())
    exact = [float(weight) * values[name] for name, weight in terms]
    raw = raw_score(model, values)
    score = clamp(raw)
    parts = apportion(model.intercept, exact, score)
    registry_score = household["pmt_score"]
    return {
        "household_id": str(household["id"]),
        "pmt_version": model.version,
        "illustrative": model.illustrative,
        "intercept": float(parts.intercept),
        "contributions": [
            {
                "indicator": name,
                "value": values[name],
                "weight": float(weight),
                "points": float(points),
                "exact_points": product,
            }
            for (name, weight), points, product in zip(terms, parts.points, exact, strict=True)
        ],
        "bound_adjustment": float(parts.bound_adjustment),
        "raw_score": raw,
        "pmt_score": score,
        "poverty_band": band_of(model, score),
        "registry_score": registry_score,
        "registry_band": household["poverty_band"],
        "matches_registry": registry_score == score
        and household["pmt_version"] in (None, model.version),
        "rounding": ROUNDING,
        "bands": model.bands_json(),
        "band_crossings": band_crossings(model, values, score),
        "history": score_history(history, staff=staff),
    }


def build_for_partner(
    model: PmtModel,
    household: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    granted: Collection[str],
) -> dict[str, Any]:
    """A partner's explanation (pure): what ``partner_view`` allows an agreement granting
    the dimensions ``granted``, from the registry's score and never from a locked weight."""
    values = {name: float(household[name]) for name in model.weights}
    score = float(household["pmt_score"])
    unlocked = [name for name in model.weights if partner_view.weighted(name)]
    return {
        "household_id": str(household["id"]),
        "pmt_version": model.version,
        "illustrative": model.illustrative,
        "pmt_score": score,
        "poverty_band": household["poverty_band"],
        "contributions": partner_view.contributions(model, values, granted),
        "withheld_dimensions": partner_view.withheld(model, granted),
        "bands": model.bands_json(),
        "band_crossings": band_crossings(
            model,
            values,
            score,
            indicators=unlocked,
            raw_bounds=partner_view.raw_bounds(score),
        ),
        "history": partner_view.history(score_history(history, staff=False), granted),
    }


async def explain(pool: asyncpg.Pool, caller: Principal, household_id: int) -> dict[str, Any]:
    """The explanation of one household for ``caller``, audited as a disclosure of one
    household and its living members. Staff get the full explanation (:func:`build`); a
    partner, within its agreement's geography (404 outside it, as for an unknown id), only
    what :mod:`partner_view` allows (:func:`build_for_partner`). Read from one snapshot,
    then audited in a READ COMMITTED transaction of its own (the snapshot's could miss the
    head of the audit chain it appends to), before anything is returned."""
    staff = caller.kind == "staff"
    geo = [] if staff else list(caller.geo_codes)
    endpoint = (
        "/v1/staff/households/{household_id}/score-explanation"
        if staff
        else "/v1/partner/households/{household_id}/score-explanation"
    )
    async with pool.acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            household = await conn.fetchrow(HOUSEHOLD_SQL, household_id, geo)
            # A partner explains the registry's score: an unscored household has none.
            if household is not None and not staff and household["pmt_score"] is None:
                household = None
            model_row = (
                await conn.fetchrow(MODEL_SQL, household["pmt_version"]) if household else None
            )
            history = await conn.fetch(HISTORY_SQL, household_id) if model_row else []
        await audit.append(
            conn,
            audit.AuditRecord.of(
                caller,
                endpoint=endpoint,
                filters={"household_id": str(household_id)},
                dimensions=["pmt_indicators"]
                if staff
                else partner_view.disclosed(caller.dimensions),
                households=1 if model_row else 0,
                members=int(household["size"]) if model_row and household else 0,
            ),
        )
    if household is None or model_row is None:
        where = "" if staff else " within the agreement's geography"
        raise NotFound(f"no scored household {household_id}{where}")
    model = PmtModel.from_row(model_row)
    if staff:
        return build(model, household, history, staff=True)
    return build_for_partner(model, household, history, caller.dimensions)
