"""Proxy Means Test: a versioned model stored as data, scoring 0-100 (lower is poorer).

One household is scored in memory with :func:`score`; the whole registry (or any set of
households) is re-scored in bulk SQL with :func:`rescore_sql`, never row by row in Python.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property
from typing import Any

import asyncpg

from app.services.pmt.features import (
    MEMBER_AGGREGATE,
    PY_FEATURES,
    SQL_FEATURES,
    MemberAggregate,
    RawScore,
    compile_raw_score,
    member_aggregate,
)

BANDS = ("ultra_poor", "very_poor", "poor", "non_poor", "well_off")
_CENT = Decimal("0.01")
_WORD = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


class InvalidModel(ValueError):
    """A PMT model that names unknown features or has unordered cut-offs."""


@dataclass(frozen=True)
class PmtModel:
    version: str
    intercept: float
    weights: Mapping[str, float]
    # Ordered (band, upper bound exclusive); the last band's bound is None (no upper bound).
    bands: Sequence[tuple[str, float | None]]
    illustrative: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        # The version and band names are written into SQL text: keep them plain words.
        if not _WORD.fullmatch(self.version):
            raise InvalidModel(f"invalid model version {self.version!r}")
        unknown = set(self.weights) - set(PY_FEATURES)
        if unknown:
            raise InvalidModel(f"unknown PMT features: {sorted(unknown)}")
        numbers = [self.intercept, *self.weights.values()]
        numbers += [b for _, b in self.bands if b is not None]
        if not all(math.isfinite(x) for x in numbers):
            raise InvalidModel("intercept, weights and cut-offs must be finite numbers")
        names = [name for name, _ in self.bands]
        if len(set(names)) != len(names) or not all(_WORD.fullmatch(n) for n in names):
            raise InvalidModel("band names must be distinct plain words")
        bounds = [b for _, b in self.bands]
        if not bounds or bounds[-1] is not None or any(b is None for b in bounds[:-1]):
            raise InvalidModel("every band but the last needs an upper bound")
        finite = [float(b) for b in bounds[:-1] if b is not None]
        if finite != sorted(finite) or len(set(finite)) != len(finite):
            raise InvalidModel("band cut-offs must increase")

    @cached_property
    def raw_score(self) -> RawScore:
        """The model as one Python function, adding the terms in the SQL's order (by name)."""
        return compile_raw_score(self.intercept, sorted(self.weights.items()))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PmtModel:
        # asyncpg hands JSONB over as text unless a codec is set; SQLAlchemy decodes it.
        weights, bands = (_json(row["weights"]), _json(row["bands"]))
        return cls(
            version=row["version"],
            intercept=float(row["intercept"]),
            weights={k: float(v) for k, v in weights.items()},
            bands=[(b["band"], None if b["below"] is None else float(b["below"])) for b in bands],
            illustrative=bool(row.get("illustrative", True)),
            description=row.get("description", ""),
        )

    def bands_json(self) -> list[dict[str, object]]:
        return [{"band": name, "below": bound} for name, bound in self.bands]


# Shipped with the service and marked illustrative: the registry owner loads the real model.
ILLUSTRATIVE = PmtModel(
    version="illustrative-2026.1",
    description="Illustrative PMT weights for the synthetic registry; not the official model.",
    intercept=22.0,
    weights={
        "household_size": -1.1,
        "dependency_ratio": -6.0,
        "rooms_per_member": 7.0,
        "head_education_years": 0.6,
        "has_disabled_member": -1.5,
        "toilet_flush": 3.5,
        "toilet_none": -3.0,
        "refrigerator": 4.0,
        "air_conditioner": 7.0,
        "freezer": 2.75,
        "television": 2.0,
        "washing_machine": 2.75,
        "microwave_oven": 3.5,
        "air_cooler": 2.0,
        "geyser": 2.75,
        "heater": 1.75,
        "cooking_range": 2.75,
        "cooking_stove": 0.75,
        "large_livestock": 0.85,
        "small_livestock": 0.25,
        "log_land_acres": 3.5,
    },
    bands=[
        ("ultra_poor", 16.17),
        ("very_poor", 24.0),
        ("poor", 32.0),
        ("non_poor", 50.0),
        ("well_off", None),
    ],
)


def clamp(value: float) -> float:
    """0..100 rounded to cents exactly as PostgreSQL's ``round(x::numeric, 2)`` does it.

    The float8 -> numeric cast keeps 15 significant digits and numeric rounds half away
    from zero; Python's ``round`` works on the exact binary value, which differs at ties.
    So the rounding is done on those 15 digits, as text (a Decimal does the same, slower).
    """
    bounded = min(100.0, max(0.0, value))
    text = f"{bounded:.15g}"
    if "e" in text or not math.isfinite(bounded):
        # Exponent form only below 1e-4 (which rounds to 0.00); NaN stays NaN.
        return float(Decimal(text).quantize(_CENT, rounding=ROUND_HALF_UP))
    whole, _, fraction = text.partition(".")
    cents = int(whole) * 100 + int((fraction + "00")[:2])
    if fraction[2:3] >= "5":
        cents += 1  # half away from zero (the value is not negative)
    return cents / 100  # correctly rounded: the double nearest to the decimal


def band_of(model: PmtModel, score_value: float) -> str:
    for name, bound in model.bands:
        if bound is None or score_value < bound:
            return name
    raise AssertionError("unreachable: the last band has no bound")


def score(
    model: PmtModel, household: Mapping[str, Any], members: Sequence[Mapping[str, Any]]
) -> tuple[float, str]:
    """Score one household (indicators + member rows) under ``model``."""
    surveyed_on: date = household["surveyed_on"]
    return score_aggregate(model, household, member_aggregate(members, surveyed_on))


def score_aggregate(
    model: PmtModel, household: Mapping[str, Any], aggregate: MemberAggregate
) -> tuple[float, str]:
    """Score one household from its indicators and its living members' aggregate."""
    value = clamp(model.raw_score(household, aggregate))
    return value, band_of(model, value)


def _score_expression(model: PmtModel) -> str:
    terms = " + ".join(
        f"{float(w)!r}::float8 * ({SQL_FEATURES[name]})"
        for name, w in sorted(model.weights.items())
    )
    # float8 throughout, like the Python score (numeric arithmetic is slower and rounds
    # differently); the result is rounded to numeric(5,2) once, as the column stores it.
    intercept = f"{float(model.intercept)!r}::float8"
    raw = f"{intercept} + {terms}" if terms else intercept
    return f"round(least(100, greatest(0, {raw}))::numeric, 2)"


def _band_expression(model: PmtModel, column: str) -> str:
    cases = " ".join(
        f"WHEN {column} < {float(b)!r} THEN '{name}'" for name, b in model.bands if b is not None
    )
    return f"CASE {cases} ELSE '{model.bands[-1][0]}' END"


def rescore_sql(model: PmtModel, where: str) -> str:
    """An UPDATE that re-scores the households matching ``where`` (over ``hh``/``h``).

    ``where`` is trusted SQL written by this package (an id range or ``= ANY($n)``); model
    values are numbers formatted by ``repr`` and band names come from a validated model.
    It writes history for every household whose score or band changes and returns how many
    households it re-scored.
    """
    # Conditions on the id go straight to members.household_id: the planner does not carry
    # a range across the join, and without it each chunk would read every member.
    member_where = (
        f"({where.replace('{h}.id', 'mb.household_id').replace('{h}', 'hh')})"
        f" AND ({where.replace('{h}', 'hh')})"
    )
    household_where = where.replace("{h}", "h")
    aggregate = MEMBER_AGGREGATE.format(where=member_where)
    return f"""
WITH scored AS (
  SELECT h.id, h.pmt_score AS old_score, h.poverty_band AS old_band,
         h.pmt_version AS old_version, {_score_expression(model)} AS score
    FROM households h
    LEFT JOIN ({aggregate}) m0 ON m0.household_id = h.id
    CROSS JOIN LATERAL (SELECT coalesce(m0.size, 0) AS size,
                               coalesce(m0.dependents, 0) AS dependents,
                               m0.head_education,
                               coalesce(m0.disabled, 0) AS disabled) m
   WHERE {household_where}
), banded AS (
  SELECT *, {_band_expression(model, "score")} AS band FROM scored
), updated AS (
  UPDATE households h
     SET pmt_score = b.score, poverty_band = b.band, pmt_version = '{model.version}',
         updated_at = now()
    FROM banded b
   WHERE h.id = b.id AND {household_where}
     AND (h.pmt_score IS DISTINCT FROM b.score OR h.poverty_band IS DISTINCT FROM b.band
          OR h.pmt_version IS DISTINCT FROM '{model.version}')
  RETURNING h.id, h.version, b.old_score, b.old_band, b.old_version, b.score, b.band
), logged AS (
  INSERT INTO household_history (household_id, version, change, before, after, source, actor)
  SELECT id, version, 'pmt_rescore',
         jsonb_build_object('pmt_score', old_score, 'poverty_band', old_band,
                            'pmt_version', old_version),
         jsonb_build_object('pmt_score', score, 'poverty_band', band,
                            'pmt_version', '{model.version}'),
         'pmt_recompute', 'pmt'
    FROM updated WHERE old_score IS NOT NULL
)
SELECT count(*) FROM updated
"""


CURRENT_MODEL_SQL = """
SELECT version, description, intercept, weights, bands, illustrative
  FROM pmt_models WHERE is_current
"""
_RANGE = "{h}.id BETWEEN $1 AND $2"
_IDS = "{h}.id = ANY($1::bigint[])"


async def current_model(conn: asyncpg.Connection) -> PmtModel:
    row = await conn.fetchrow(CURRENT_MODEL_SQL)
    if row is None:
        raise InvalidModel("no current PMT model (pmt_models.is_current)")
    return PmtModel.from_row(row)


async def rescore_range(conn: asyncpg.Connection, model: PmtModel, low: int, high: int) -> int:
    """Re-score households ``low..high`` (ids, inclusive); returns how many changed."""
    changed: int = await conn.fetchval(rescore_sql(model, _RANGE), low, high)
    return changed


async def rescore_households(conn: asyncpg.Connection, household_ids: Sequence[int]) -> int:
    """Re-score just these households under the current model, in the caller's transaction.

    For code that changes indicators or members (ingestion, staff edits); returns how many
    households' score, band or model version changed (history is written for those).
    """
    if not household_ids:
        return 0
    model = await current_model(conn)
    # Each household's score computed once (the band CASE would otherwise repeat the whole
    # expression per cut-off); households already scored right are only read.
    sql = rescore_sql(model, _IDS).replace("WITH scored AS (", "WITH scored AS MATERIALIZED (", 1)
    changed: int = await conn.fetchval(sql, list(household_ids))
    return changed


async def recompute(
    conn: asyncpg.Connection,
    chunk: int = 50_000,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[PmtModel, int]:
    """Re-score every household under the current model, committing per id-range chunk.

    Returns the model and how many households changed; ``on_progress(done, total)`` is
    called after each chunk with the id span covered so far.
    """
    model = await current_model(conn)
    low, high = await conn.fetchrow("SELECT min(id), max(id) FROM households")
    if low is None:
        return model, 0
    total = high - low + 1
    changed = 0
    for start in range(low, high + 1, chunk):
        end = min(start + chunk - 1, high)
        async with conn.transaction():
            changed += await rescore_range(conn, model, start, end)
        if on_progress is not None:
            on_progress(end - low + 1, total)
    return model, changed
