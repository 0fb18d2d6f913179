"""The PMT's features: each is a named quantity computed from a household and its members.

A model (stored as data) gives a weight per feature name. Each feature exists twice, on
purpose and side by side: a Python function for scoring one household in memory and an SQL
expression for re-scoring millions in bulk. ``tests/test_pmt.py`` checks both agree on
seeded data, so they cannot drift apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from app.models.registry import ELECTRICAL, GAS, KITCHEN

EDUCATION_YEARS = {
    "none": 0,
    "primary": 5,
    "middle": 8,
    "matric": 10,
    "intermediate": 12,
    "graduate": 14,
    "postgraduate": 16,
}

# Each household item is a feature of its own: item -> the array column that lists it.
ITEMS = {
    **dict.fromkeys(ELECTRICAL, "electrical"),
    **dict.fromkeys(GAS, "gas"),
    **dict.fromkeys(KITCHEN, "kitchen"),
}

# Acres per unit of the local land measures (§4.2.1 xvii).
LAND_ACRES = {"muraba": 25.0, "acre": 1.0, "kanal": 1 / 8, "marla": 1 / 160}


def age_on(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


@dataclass(frozen=True, slots=True)
class MemberAggregate:
    """The living members, as the features see them: the Python twin of
    ``MEMBER_AGGREGATE`` (one pass over the members, however many features use them)."""

    size: int
    dependents: int
    head_education: str | None  # the first living head's
    disabled: int


@dataclass(frozen=True, slots=True)
class MemberSummary:
    """A household's living members as the PMT needs them: their birth dates (the
    dependants are counted at whatever survey date the household ends up with), heads,
    the first head's education and the disabled. Built from member rows
    (:func:`member_summary`) or read as one row per household (``MEMBER_SUMMARY_SQL``)."""

    born: Sequence[date]
    heads: int
    head_education: str | None
    disabled: int

    def aggregate(self, surveyed_on: date) -> MemberAggregate:
        year, month_day = surveyed_on.year, (surveyed_on.month, surveyed_on.day)
        dependents = 0
        for born in self.born:
            age = year - born.year - (month_day < (born.month, born.day))  # age_on, inlined
            if age < 15 or age >= 65:
                dependents += 1
        return MemberAggregate(len(self.born), dependents, self.head_education, self.disabled)


def member_summary(members: Sequence[Mapping[str, Any]]) -> MemberSummary:
    born: list[date] = []
    heads = disabled = 0
    head_education: str | None = None
    for m in members:
        if m.get("deceased_on") is not None:
            continue
        born.append(m["date_of_birth"])
        if m["relationship"] == "head":
            if not heads:
                head_education = m.get("education")
            heads += 1
        if m.get("disabilities"):
            disabled += 1
    return MemberSummary(born, heads, head_education, disabled)


def member_aggregate(members: Sequence[Mapping[str, Any]], surveyed_on: date) -> MemberAggregate:
    return member_summary(members).aggregate(surveyed_on)


# The SQL that reads a MemberSummary per household (member ids order "first").
MEMBER_SUMMARY_SQL = """
SELECT household_id,
       array_agg(date_of_birth) AS born,
       count(*) FILTER (WHERE relationship = 'head') AS heads,
       (array_agg(education ORDER BY id) FILTER (WHERE relationship = 'head'))[1]
         AS head_education,
       count(*) FILTER (WHERE cardinality(disabilities) > 0) AS disabled
  FROM members
 WHERE household_id = ANY($1) AND deceased_on IS NULL
 GROUP BY household_id
"""


def _land(h: Mapping[str, Any], unit: str) -> float:
    return float(h.get(f"land_{unit}") or 0)


def _log_land_acres(h: Mapping[str, Any]) -> float:
    # Same operations in the same order as the SQL expression, so both give the same float.
    return math.log(
        1
        + _land(h, "muraba") * 25
        + _land(h, "acre")
        + _land(h, "kanal") / 8
        + _land(h, "marla") / 160
    )


def _has(column: str, item: str) -> str:
    return f"(1.0 if {item!r} in (h.get({column!r}) or ()) else 0.0)"


# Python over ``h`` (the household row) and ``m`` (its MemberAggregate): expressions, so a
# model compiles into one function (see ``compile_raw_score``), as the SQL ones compile
# into one statement.
PY_FEATURES: dict[str, str] = {
    "household_size": "float(m.size)",
    "dependency_ratio": "m.dependents / max(m.size, 1)",
    "rooms_per_member": "float(h.get('rooms') or 0) / max(m.size, 1)",
    "head_education_years": "float(EDUCATION_YEARS.get(m.head_education or 'none', 0))",
    "has_disabled_member": "(1.0 if m.disabled else 0.0)",
    "toilet_flush": "(1.0 if h.get('toilet_type') in ('flush_septic', 'flush_sewer') else 0.0)",
    "toilet_none": "(1.0 if h.get('toilet_type') in (None, 'none') else 0.0)",
    **{item: _has(column, item) for item, column in ITEMS.items()},
    "large_livestock": (
        "float((h.get('cows') or 0) + (h.get('buffaloes') or 0) + (h.get('bullocks') or 0))"
    ),
    "small_livestock": "float((h.get('goats') or 0) + (h.get('lambs') or 0))",
    "log_land_acres": "_log_land_acres(h)",
}

RawScore = Callable[[Mapping[str, Any], MemberAggregate], float]


def compile_raw_score(intercept: float, terms: Sequence[tuple[str, float]]) -> RawScore:
    """One Python function computing ``intercept + w1 * f1 + w2 * f2 ...`` in that order.

    Built from this module's own expressions and the model's weights written by ``repr``
    (exact for floats) — the way dataclasses and namedtuple build code — so scoring a
    household is one call instead of a call per feature.
    """
    lines = ["def raw_score(h, m):", f"    raw = {float(intercept)!r}"]
    for name, weight in terms:
        lines.append(f"    raw += {float(weight)!r} * {PY_FEATURES[name]}")
    lines.append("    return raw")
    namespace: dict[str, Any] = {
        "EDUCATION_YEARS": EDUCATION_YEARS,
        "_log_land_acres": _log_land_acres,
    }
    exec(compile("\n".join(lines), "<pmt model>", "exec"), namespace)  # noqa: S102
    function: RawScore = namespace["raw_score"]
    return function


# SQL over ``h`` (households) and ``m`` (the member aggregate of ``MEMBER_AGGREGATE``).
SQL_FEATURES: dict[str, str] = {
    "household_size": "m.size",
    "dependency_ratio": "m.dependents::float8 / greatest(m.size, 1)",
    "rooms_per_member": "coalesce(h.rooms, 0)::float8 / greatest(m.size, 1)",
    "head_education_years": "coalesce(m.head_education, 0)",
    "has_disabled_member": "(m.disabled > 0)::int",
    "toilet_flush": "(coalesce(h.toilet_type IN ('flush_septic','flush_sewer'), false))::int",
    "toilet_none": "(coalesce(h.toilet_type, 'none') = 'none')::int",
    **{item: f"('{item}' = ANY(h.{column}))::int" for item, column in ITEMS.items()},
    "large_livestock": "(h.cows + h.buffaloes + h.bullocks)",
    "small_livestock": "(h.goats + h.lambs)",
    "log_land_acres": "ln(1 + h.land_muraba::float8 * 25 + h.land_acre::float8"
    " + h.land_kanal::float8 / 8 + h.land_marla::float8 / 160)",
}

_EDU_CASE = (
    "CASE mb.education "
    + " ".join(f"WHEN '{k}' THEN {v}" for k, v in EDUCATION_YEARS.items())
    + " ELSE 0 END"
)

# Age counts at the survey date, so a re-score does not drift with the calendar. "Under 15"
# is written as a date comparison (born after the survey date minus 15 years), which is the
# same test as ``age_on`` (Feb 29 included) and far cheaper than age() per member.
# Each column of the living members' aggregate: SQL over members ``mb`` of household ``hh``
# (``count(mb.id)``, not ``count(*)``: zero for a household joined to no member).
MEMBER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("size", "count(mb.id)"),
    (
        "dependents",
        "count(*) FILTER (WHERE mb.date_of_birth > hh.surveyed_on - interval '15 years'\n"
        "                   OR mb.date_of_birth <= hh.surveyed_on - interval '65 years')",
    ),
    ("head_education", f"max({_EDU_CASE}) FILTER (WHERE mb.relationship = 'head')"),
    ("disabled", "count(*) FILTER (WHERE cardinality(mb.disabilities) > 0)"),
)
_MEMBER_SELECT = ",\n       ".join(f"{sql} AS {name}" for name, sql in MEMBER_COLUMNS)
MEMBER_AGGREGATE = f"""
SELECT mb.household_id,
       {_MEMBER_SELECT}
  FROM members mb JOIN households hh ON hh.id = mb.household_id
 WHERE mb.deceased_on IS NULL AND {{where}}
 GROUP BY mb.household_id
"""
# The households' columns the SQL features read.
HOUSEHOLD_COLUMNS = tuple(
    sorted({c for sql in SQL_FEATURES.values() for c in re.findall(r"\bh\.(\w+)", sql)})
)

assert set(PY_FEATURES) == set(SQL_FEATURES)
