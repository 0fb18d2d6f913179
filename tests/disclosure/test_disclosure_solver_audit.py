"""The audit by solver: whatever protect publishes, an adversary with an LP solver (written
in disclosure_oracle, apart from the module) cannot narrow any withheld household count
to an interval narrower than the threshold."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from disclosure_oracle import adversary_ranges, key_of, narrow_cells, random_interior
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.services.disclosure import (
    Cell,
    Policy,
    Published,
    feasible_ranges,
    protect,
    violations,
    with_margins,
)


def check_protected(
    dims: tuple[str, ...], cells: list[Cell], published: list[Published], policy: Policy
) -> None:
    assert len(published) == len(cells)
    for cell, p in zip(cells, published, strict=True):
        assert p.key == cell.key
        assert (p.households is None) == (p.suppressed is not None)
        if p.suppressed is None:
            assert cell.households >= policy.threshold
            assert p.households is not None
            assert p.households >= policy.threshold  # also after rounding (10 by 5)
        else:
            assert p.members is None
            assert p.mean_pmt_score is None
            assert p.share_below is None
    assert narrow_cells(dims, cells, published, policy) == []


SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_tables_survive_the_adversary(seed: int) -> None:
    rng = random.Random(seed)
    dims, interior = random_interior(rng, n_dims=1 + seed % 3)
    cells = with_margins(dims, interior)
    policy = Policy(threshold=rng.choice([5, 10, 10, 20]))
    published, disclosure = protect(dims, cells, policy)
    check_protected(dims, cells, published, policy)
    assert violations(dims, cells, published, policy) == []
    assert disclosure.suppressed_cells == sum(p.suppressed is not None for p in published)
    assert sum(disclosure.rules.values()) == (
        disclosure.suppressed_cells + disclosure.shares_withheld
    )
    grand = published[-1]
    assert all(v is None for v in grand.key.values())
    if cells[-1].households >= policy.threshold:
        assert grand.suppressed is None, "the grand total was withheld"


@st.composite
def small_tables(draw: st.DrawFn) -> tuple[tuple[str, ...], list[Cell]]:
    n_dims = draw(st.integers(1, 2))
    dims = ("province", "poverty_band")[:n_dims]
    sizes = [draw(st.integers(2, 4)) for _ in dims]
    count = st.one_of(st.integers(0, 9), st.integers(10, 60), st.integers(100, 1000))
    interior = [
        Cell(dict(zip(dims, combo, strict=True)), draw(count))
        for combo in itertools.product(*[[f"v{i}" for i in range(n)] for n in sizes])
    ]
    return dims, interior


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=small_tables(), threshold=st.sampled_from([3, 10]))
def test_property_no_withheld_count_can_be_narrowed(
    table: tuple[tuple[str, ...], list[Cell]], threshold: int
) -> None:
    dims, interior = table
    cells = with_margins(dims, interior)
    policy = Policy(threshold=threshold, rounding_base=1)
    published, _ = protect(dims, cells, policy)
    check_protected(dims, cells, published, policy)


def test_the_audit_helper_agrees_with_the_adversary() -> None:
    rng = random.Random(99)
    dims, interior = random_interior(rng, n_dims=2, small_rate=0.3)
    cells = with_margins(dims, interior)
    published, _ = protect(dims, cells, Policy())
    ours = feasible_ranges(dims, cells, published)
    theirs = adversary_ranges(dims, cells, published, Policy())
    assert set(ours) == set(theirs)
    assert ours
    for key, (low, high) in theirs.items():
        # The adversary counts whole households: its bounds are the LP's rounded inwards.
        assert math.ceil(ours[key][0] - 1e-6) == low
        assert high == (
            ours[key][1] if math.isinf(ours[key][1]) else math.floor(ours[key][1] + 1e-6)
        )


def test_the_audit_catches_primary_suppression_alone() -> None:
    dims = ("province", "gender")
    interior = [
        Cell({"province": p, "gender": g}, n)
        for (p, g), n in {("P1", "f"): 3, ("P1", "m"): 50, ("P2", "f"): 40, ("P2", "m"): 60}.items()
    ]
    cells = with_margins(dims, interior)
    published = [
        Published(
            c.key,
            None if c.households < 10 else c.households,
            None,
            None,
            None,
            "primary" if c.households < 10 else None,
        )
        for c in cells
    ]
    ranges = feasible_ranges(dims, cells, published)
    assert ranges == {("P1", "f"): (pytest.approx(3.0), pytest.approx(3.0))}
    problems = violations(dims, cells, published, Policy())
    assert len(problems) == 1
    assert "P1" in problems[0]
    assert "less than 10 wide" in problems[0]
    leaky = [*published[:-1], Published(cells[-1].key, 153, None, None, None, None)]
    leaky[0] = Published(cells[0].key, 3, None, None, None, None)
    assert any("below the threshold" in p for p in violations(dims, cells, leaky, Policy()))


def test_a_7x5x2_table_is_protected() -> None:
    rng = random.Random(7)
    dims = ("province", "poverty_band", "gender")
    interior = [
        Cell(
            {"province": p, "poverty_band": b, "gender": g},
            rng.randint(0, 9) if rng.random() < 0.2 else rng.randint(10, 3000),
        )
        for p in ["PB", "SD", "KP", "BA", "ICT", "GB", "AJK"]
        for b in ["1", "2", "3", "4", "5"]
        for g in ["f", "m"]
    ]
    cells = with_margins(dims, interior)
    assert len(cells) == 8 * 6 * 3
    policy = Policy()
    published, disclosure = protect(dims, cells, policy)
    assert len(published) == len(cells)
    assert disclosure.rules["primary"] > 0
    assert disclosure.rules["complementary"] > 0
    assert {key_of(dims, p.key) for p in published} == {key_of(dims, c.key) for c in cells}
    # Checked by the adversary of disclosure_attack, not by protect's own audit (violations
    # runs the very solver protect used): the equations, the margins' true counts and the
    # linear programs are its own.
    ranges = adversary_ranges(dims, cells, published, policy)
    assert len(ranges) == disclosure.suppressed_cells
    assert narrow_cells(dims, cells, published, policy) == []
