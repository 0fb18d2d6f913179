"""Eligibility rules: a JSON document, validated, compiled to SQL over ``households``.

A rule document (stored as given by ``normalize``, one row per version)::

    {
      "unit": "household" | "family",
      "cut_off": 32,
      "raised_cut_offs": [{"when": "has_disabled_member", "cut_off": 37}],
      "geography": ["PK6", "PK617"],
      "requires": ["has_school_age_child"]
    }

``cut_off`` applies to every household (a PMT score strictly below it is eligible: the
protocol's "below the chosen cut off score"); a raised cut-off applies to households
meeting its condition; ``geography`` (codes at any level, empty = the whole country) and
``requires`` (member conditions, all must hold) narrow the population first. ``unit``
"family" makes the families of an eligible household the beneficiaries: one per ever-
married woman, the recipient (protocol §3.1); a household without one has no recipient
and is not eligible.

Conditions are a closed vocabulary (``CONDITIONS``), each an ``EXISTS`` over the living
members, so a rule can only ever produce package-owned SQL text: request values (cut-offs,
geography codes) travel as bind parameters through the caller's ``Binder``.

Public API (also used by score simulations):

- ``parse_rule(doc) -> Rule`` validates (raises ``RuleError``); ``normalize(rule)`` is the
  canonical document to store.
- ``eligible_sql(rule, bind)``: a boolean expression over households ``h``, for a WHERE.
- ``clause_sql(rule, bind)``: a text expression naming the clause that decides (see
  ``CLAUSES``); ``cut_off_sql(rule, bind)``: the cut-off that applies to the household.
- ``compile_where(rule)``: ``(sql, params)`` standalone, parameters ``$1..$n``.

``bind(value) -> "$n"`` appends ``value`` to the caller's parameter list (the beneficiaries
``Query.param`` is one). The evaluation order of ``clause_sql`` and ``eligible_sql`` is the
same, so the clause always agrees with the verdict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from app.schemas.geography import CODE_PATTERN

Binder = Callable[[object], str]
# A member condition by name as SQL over ``h``: ``condition_sql`` (an ``EXISTS``), or a
# column of a member aggregate already read (the simulations, app.services.targeting).
Condition = Callable[[str], str]

UNITS = ("household", "family")
# Living members only; ages as at today, like the beneficiary member types.
_LIVING = "m.household_id = h.id AND m.deceased_on IS NULL"
_EVER_MARRIED_WOMAN = (
    "m.gender = 'female' AND m.marital_status IN ('married','divorced','separated','widowed') "
    "AND m.date_of_birth <= current_date - interval '18 years'"
)
CONDITIONS: dict[str, str] = {
    "has_disabled_member": "coalesce(cardinality(m.disabilities), 0) > 0",
    "has_ever_married_woman": _EVER_MARRIED_WOMAN,
    "has_child_under_5": "m.date_of_birth > current_date - interval '5 years'",
    # Article 25-A: free and compulsory education for children aged 5 to 16.
    "has_school_age_child": (
        "m.date_of_birth <= current_date - interval '5 years' "
        "AND m.date_of_birth > current_date - interval '17 years'"
    ),
    "has_child": "m.date_of_birth > current_date - interval '18 years'",
    "has_elderly_member": "m.date_of_birth <= current_date - interval '65 years'",
    "has_female_head": "m.relationship = 'head' AND m.gender = 'female'",
}
# The clause names ``clause_sql`` answers with.
CLAUSES = (
    "geography",  # outside the programme's geography
    "requires:<condition>",  # a required member condition is not met
    "no_recipient",  # family unit: no ever-married woman to receive the benefit
    "no_score",  # the household has no PMT score
    "cut_off",  # below the base cut-off: eligible
    "raised_cut_off:<condition>",  # below a raised cut-off it qualifies for: eligible
    "above_cut_off",  # above every cut-off that applies
)
_GEO_COLUMNS = (
    "province_code",
    "division_code",
    "district_code",
    "tehsil_code",
    "union_council_code",
    "village_code",
)
_KEYS = {"unit", "cut_off", "raised_cut_offs", "geography", "requires"}
MAX_GEOGRAPHY = 200
_CODE = re.compile(CODE_PATTERN)
MAX_RAISED = 10


class RuleError(ValueError):
    """The rule document is invalid; the message says where."""


@dataclass(frozen=True)
class Raised:
    when: str
    cut_off: Decimal


@dataclass(frozen=True)
class Rule:
    cut_off: Decimal
    unit: str = "household"
    raised_cut_offs: tuple[Raised, ...] = ()
    geography: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()


def _score(value: Any, where: str) -> Decimal:
    # JSON numbers only: true is not 1, "32" is not 32.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(f"{where} must be a number")
    try:
        score = Decimal(str(value))
    except InvalidOperation as exc:  # pragma: no cover - floats always convert
        raise RuleError(f"{where} must be a number") from exc
    if not score.is_finite() or not Decimal(0) <= score <= Decimal(100):
        raise RuleError(f"{where} must be between 0 and 100")
    if score != score.quantize(Decimal("0.01")):
        raise RuleError(f"{where} has more than two decimals (scores have two)")
    return score


def _condition(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in CONDITIONS:
        raise RuleError(f"{where} must be one of {', '.join(CONDITIONS)}")
    return value


def parse_rule(doc: Any) -> Rule:
    """Validate a rule document; ``RuleError`` names the first problem."""
    if not isinstance(doc, Mapping):
        raise RuleError("rule must be an object")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise RuleError(f"unknown rule field {unknown[0]!r}")
    if "cut_off" not in doc:
        raise RuleError("rule.cut_off is required")
    cut_off = _score(doc["cut_off"], "rule.cut_off")
    unit = doc.get("unit", "household")
    if unit not in UNITS:
        raise RuleError(f"rule.unit must be one of {', '.join(UNITS)}")
    raised_doc = doc.get("raised_cut_offs", [])
    if not isinstance(raised_doc, list) or len(raised_doc) > MAX_RAISED:
        raise RuleError(f"rule.raised_cut_offs must be a list of at most {MAX_RAISED}")
    raised: list[Raised] = []
    for i, item in enumerate(raised_doc):
        where = f"rule.raised_cut_offs[{i}]"
        if not isinstance(item, Mapping) or set(item) != {"when", "cut_off"}:
            raise RuleError(f"{where} must be an object with exactly 'when' and 'cut_off'")
        entry = Raised(
            _condition(item["when"], f"{where}.when"), _score(item["cut_off"], f"{where}.cut_off")
        )
        if entry.cut_off <= cut_off:
            raise RuleError(f"{where}.cut_off must be above rule.cut_off ({cut_off})")
        if any(r.when == entry.when for r in raised):
            raise RuleError(f"{where}.when repeats {entry.when!r}")
        raised.append(entry)
    geography = doc.get("geography", [])
    if not isinstance(geography, list) or len(geography) > MAX_GEOGRAPHY:
        raise RuleError(f"rule.geography must be a list of at most {MAX_GEOGRAPHY} codes")
    for i, code in enumerate(geography):
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            raise RuleError(f"rule.geography[{i}] is not a geography code")
    requires_doc = doc.get("requires", [])
    if not isinstance(requires_doc, list):
        raise RuleError("rule.requires must be a list of conditions")
    requires = [_condition(c, f"rule.requires[{i}]") for i, c in enumerate(requires_doc)]
    return Rule(
        cut_off=cut_off,
        unit=unit,
        # Highest first: a household meeting several conditions gets its best cut-off,
        # and the clause names the first that admits it.
        raised_cut_offs=tuple(sorted(raised, key=lambda r: (-r.cut_off, r.when))),
        geography=tuple(dict.fromkeys(geography)),
        requires=tuple(dict.fromkeys(requires)),
    )


def normalize(rule: Rule) -> dict[str, Any]:
    """The canonical JSON document of a rule (what is stored and shown)."""
    return {
        "unit": rule.unit,
        "cut_off": float(rule.cut_off),
        "raised_cut_offs": [
            {"when": r.when, "cut_off": float(r.cut_off)} for r in rule.raised_cut_offs
        ],
        "geography": list(rule.geography),
        "requires": list(rule.requires),
    }


def condition_sql(name: str) -> str:
    """``EXISTS`` a living member of household ``h`` meeting the named condition."""
    return f"EXISTS (SELECT 1 FROM members m WHERE {_LIVING} AND {CONDITIONS[name]})"


def member_test(name: str, alias: str) -> str:
    """The named condition over one member ``alias`` (its ``EXISTS`` asks it of each living
    member): a member aggregate counting the members meeting it gives the same answer."""
    return re.sub(r"\bm\.", f"{alias}.", CONDITIONS[name])


def _geography_sql(rule: Rule, bind: Binder) -> str:
    codes = bind(list(rule.geography))
    return "(" + " OR ".join(f"h.{c} = ANY({codes}::text[])" for c in _GEO_COLUMNS) + ")"


def _gates(rule: Rule, bind: Binder, condition: Condition) -> list[tuple[str, str]]:
    """(clause, condition that must hold) in evaluation order, before the cut-offs."""
    gates: list[tuple[str, str]] = []
    if rule.geography:
        gates.append(("geography", _geography_sql(rule, bind)))
    gates += [(f"requires:{name}", condition(name)) for name in rule.requires]
    if rule.unit == "family" and "has_ever_married_woman" not in rule.requires:
        gates.append(("no_recipient", condition("has_ever_married_woman")))
    return gates


def _admits(rule: Rule, bind: Binder, condition: Condition) -> list[tuple[str, str, str]]:
    """(clause, cut-off placeholder, extra condition or '') of each way to be eligible."""
    out = [("cut_off", bind(rule.cut_off), "")]
    out += [
        (f"raised_cut_off:{r.when}", bind(r.cut_off), condition(r.when))
        for r in rule.raised_cut_offs
    ]
    return out


def conditions_of(rule: Rule) -> list[str]:
    """The member conditions the rule reads (in the order ``eligible_sql`` reads them)."""
    names = list(rule.requires)
    if rule.unit == "family":
        names.append("has_ever_married_woman")
    names += [r.when for r in rule.raised_cut_offs]
    return list(dict.fromkeys(names))


def eligible_sql(rule: Rule, bind: Binder, condition: Condition = condition_sql) -> str:
    """A boolean expression over households ``h``: true exactly for eligible households.

    Evaluated per household, cheapest first: the score against the highest cut-off and the
    geography (plain column tests, indexable), then the cut-offs (a raised cut-off's member
    ``EXISTS`` only runs between the base and the raised cut-off), then the member
    conditions, inside a ``CASE`` so that PostgreSQL keeps that order and does not turn them
    into semi-joins over every member of the registry (which would also force a sort of
    the whole result before the first row of an id-ordered stream). ``condition`` gives
    each member condition's SQL (by default its ``EXISTS``).
    """
    top = max([rule.cut_off, *(r.cut_off for r in rule.raised_cut_offs)])
    parts = [f"h.pmt_score < {bind(top)}::numeric"]
    gates = _gates(rule, bind, condition)
    if rule.geography:
        parts.append(gates[0][1])
        gates = gates[1:]
    if not gates and not rule.raised_cut_offs:
        # The first test is the whole rule: bind nothing more (a parameter the statement
        # does not use is refused by the server).
        return "(" + " AND ".join(parts) + ")"
    admits = []
    for _, placeholder, cond in _admits(rule, bind, condition):
        test = f"h.pmt_score < {placeholder}::numeric"
        admits.append(f"({test} AND {cond})" if cond else test)
    admitted = "(" + " OR ".join(admits) + ")"
    if gates:
        checks = " AND ".join(cond for _, cond in gates)
        parts.append(f"(CASE WHEN {admitted} THEN {checks} ELSE false END)")
    else:
        parts.append(admitted)
    return "(" + " AND ".join(parts) + ")"


def clause_sql(rule: Rule, bind: Binder) -> str:
    """A text expression over households ``h``: the clause that decides (``CLAUSES``)."""
    whens = [
        f"WHEN NOT {cond} THEN '{clause}'" for clause, cond in _gates(rule, bind, condition_sql)
    ]
    whens.append("WHEN h.pmt_score IS NULL THEN 'no_score'")
    for clause, placeholder, cond in _admits(rule, bind, condition_sql):
        test = f"h.pmt_score < {placeholder}::numeric"
        whens.append(f"WHEN {test}{' AND ' + cond if cond else ''} THEN '{clause}'")
    return "(CASE " + " ".join(whens) + " ELSE 'above_cut_off' END)"


def cut_off_sql(rule: Rule, bind: Binder) -> str:
    """The cut-off that applies to household ``h``: the highest raised one it qualifies
    for, else the base cut-off (numeric)."""
    whens = [
        f"WHEN {condition_sql(r.when)} THEN {bind(r.cut_off)}::numeric"
        for r in rule.raised_cut_offs
    ]
    base = f"{bind(rule.cut_off)}::numeric"
    return f"(CASE {' '.join(whens)} ELSE {base} END)" if whens else base


def compile_where(rule: Rule, start: int = 1) -> tuple[str, list[object]]:
    """``eligible_sql`` with its own parameters, numbered from ``$start``."""
    params: list[object] = []

    def bind(value: object) -> str:
        params.append(value)
        return f"${start + len(params) - 1}"

    return eligible_sql(rule, bind), params


def recipient_sql(alias: str = "m") -> str:
    """The §3.1 recipient test over a member (an ever-married woman, living)."""
    return f"({alias}.deceased_on IS NULL AND {member_test('has_ever_married_woman', alias)})"


__all__ = [
    "CLAUSES",
    "CONDITIONS",
    "UNITS",
    "Binder",
    "Condition",
    "Raised",
    "Rule",
    "RuleError",
    "clause_sql",
    "compile_where",
    "condition_sql",
    "conditions_of",
    "cut_off_sql",
    "eligible_sql",
    "member_test",
    "normalize",
    "parse_rule",
    "recipient_sql",
]
