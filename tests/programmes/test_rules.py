"""The rule compiler as pure logic: validation and the SQL it produces."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from app.services.programmes.rules import (
    RuleError,
    clause_sql,
    compile_where,
    normalize,
    parse_rule,
)

CASH = {
    "unit": "family",
    "cut_off": 32,
    "raised_cut_offs": [{"when": "has_disabled_member", "cut_off": 37}],
}


def test_a_valid_rule_normalizes_and_compiles_with_bind_parameters() -> None:
    rule = parse_rule({**CASH, "geography": ["PK6", "PK6"]})
    assert rule.cut_off == Decimal(32)
    assert rule.geography == ("PK6",)
    assert normalize(rule)["raised_cut_offs"] == [{"when": "has_disabled_member", "cut_off": 37.0}]
    sql, params = compile_where(rule, start=3)
    assert params == [Decimal(37), ["PK6"], Decimal(32), Decimal(37)]
    assert "$4::text[]" in sql
    assert "$6::numeric" in sql
    assert "32" not in sql
    clauses: list[object] = []
    text = clause_sql(rule, lambda v: clauses.append(v) or f"${len(clauses)}")
    assert "'raised_cut_off:has_disabled_member'" in text
    assert "'no_recipient'" in text


@pytest.mark.parametrize(
    "doc",
    [
        {"cut_off": 100},
        {"cut_off": 30, "geography": ["PK6"]},
        {"cut_off": 30, "requires": ["has_child"]},
        CASH,
    ],
)
def test_the_compiled_rule_uses_every_parameter_it_binds(doc: dict[str, object]) -> None:
    """PostgreSQL refuses a statement given a parameter it does not use (a plain cut-off
    once bound its cut-off twice, and the programme's list answered 503)."""
    sql, params = compile_where(parse_rule(doc), start=2)
    used = {int(n) for n in re.findall(r"\$(\d+)", sql)}
    assert used == set(range(2, 2 + len(params)))


@pytest.mark.parametrize(
    "doc",
    [
        None,
        {},
        {"cut_off": True},
        {"cut_off": 101},
        {"cut_off": 32, "raised_cut_offs": [{"when": "has_disabled_member"}]},
        {"cut_off": 32, "raised_cut_offs": [{"when": "has_disabled_member", "cut_off": 32}]},
        {"cut_off": 32, "geography": ["PK 6"]},
        {"cut_off": 32, "requires": "has_child"},
        {"cut_off": 32, "where": "1=1"},
    ],
)
def test_invalid_rules_are_refused(doc: object) -> None:
    with pytest.raises(RuleError):
        parse_rule(doc)
