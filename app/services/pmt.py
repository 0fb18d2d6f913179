"""Proxy Means Test: a versioned model stored as data, scoring 0-100 (lower is poorer).

One household is scored in memory with :func:`score`; the whole registry (or any set of
households) is re-scored in bulk SQL with :func:`rescore_sql`, never row by row in Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from app.services.pmt_features import (
    MEMBER_AGGREGATE,
    PY_FEATURES,
    SQL_FEATURES,
    member_facts,
)

BANDS = ("ultra_poor", "very_poor", "poor", "non_poor", "well_off")


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
        unknown = set(self.weights) - set(PY_FEATURES)
        if unknown:
            raise InvalidModel(f"unknown PMT features: {sorted(unknown)}")
        bounds = [b for _, b in self.bands]
        if not bounds or bounds[-1] is not None or any(b is None for b in bounds[:-1]):
            raise InvalidModel("every band but the last needs an upper bound")
        finite = [float(b) for b in bounds[:-1] if b is not None]
        if finite != sorted(finite) or len(set(finite)) != len(finite):
            raise InvalidModel("band cut-offs must increase")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PmtModel:
        return cls(
            version=row["version"],
            intercept=float(row["intercept"]),
            weights={k: float(v) for k, v in row["weights"].items()},
            bands=[
                (b["band"], None if b["below"] is None else float(b["below"])) for b in row["bands"]
            ],
            illustrative=bool(row.get("illustrative", True)),
            description=row.get("description", ""),
        )

    def bands_json(self) -> list[dict[str, object]]:
        return [{"band": name, "below": bound} for name, bound in self.bands]


# Shipped with the service and marked illustrative: the registry owner loads the real model.
ILLUSTRATIVE = PmtModel(
    version="illustrative-2026.1",
    description="Illustrative PMT weights for the synthetic registry; not the official model.",
    intercept=24.0,
    weights={
        "household_size": -1.6,
        "dependency_ratio": -9.0,
        "rooms_per_member": 10.0,
        "head_education_years": 0.9,
        "has_disabled_member": -2.0,
        "toilet_flush": 5.0,
        "toilet_none": -4.0,
        "refrigerator": 6.0,
        "air_conditioner": 10.0,
        "freezer": 4.0,
        "television": 3.0,
        "washing_machine": 4.0,
        "microwave_oven": 5.0,
        "air_cooler": 3.0,
        "geyser": 4.0,
        "heater": 2.5,
        "cooking_range": 4.0,
        "cooking_stove": 1.0,
        "large_livestock": 1.2,
        "small_livestock": 0.35,
        "log_land_acres": 5.0,
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
    return round(min(100.0, max(0.0, value)), 2)


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
    facts = member_facts(members, surveyed_on)
    raw = model.intercept + sum(
        weight * PY_FEATURES[name](household, facts) for name, weight in model.weights.items()
    )
    value = clamp(raw)
    return value, band_of(model, value)


def _score_expression(model: PmtModel) -> str:
    terms = " + ".join(
        f"({float(w)!r}) * ({SQL_FEATURES[name]})" for name, w in sorted(model.weights.items())
    )
    raw = f"({float(model.intercept)!r}) + {terms}" if terms else repr(float(model.intercept))
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
    member_where = where.replace("{h}", "hh")
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
     SET pmt_score = b.score, poverty_band = b.band, pmt_version = '{model.version}'
    FROM banded b
   WHERE h.id = b.id
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
