"""The differencing control's arithmetic (pure): sketches of populations and the lower bound
on how many households two populations differ by.

The households here are random 64-bit hashes, as the pass over the registry gives them
(``hashint8extended`` of the id under the secret seed); a sketch is built from the fine
groups that pass returns.
"""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from app.services.products.differencing import FINE_BITS, Sketch, lower_bounds, unpack

THRESHOLD = 10


def sketch(hashes: set[int]) -> Sketch:
    """What the pass returns for these households: per fine group, count and exact sum."""
    groups: dict[int, tuple[int, int]] = {}
    for v in hashes:
        g = v & ((1 << FINE_BITS) - 1)
        n, total = groups.get(g, (0, 0))
        groups[g] = (n + 1, total + v)
    return Sketch.of_groups((g, n, total) for g, (n, total) in groups.items())


def bound(a: set[int], b: set[int]) -> int:
    earlier = sketch(b)
    counts, sums = unpack([earlier.to_bytes()])
    return int(lower_bounds(sketch(a), counts, sums)[0])


def signed64(rng: random.Random) -> int:
    return rng.getrandbits(64) - (1 << 63)  # hashint8extended is a signed bigint


populations = st.integers(min_value=0, max_value=2**32).map(random.Random)


@given(populations, st.integers(0, 400), st.integers(0, 30), st.integers(0, 30))
def test_the_bound_never_exceeds_the_difference(
    rng: random.Random, common: int, only_a: int, only_b: int
) -> None:
    shared = {signed64(rng) for _ in range(common)}
    a = shared | {signed64(rng) for _ in range(only_a)}
    b = shared | {signed64(rng) for _ in range(only_b)}
    differ = len(a ^ b)
    found = bound(a, b)
    assert found <= differ
    assert (found == 0) == (differ == 0)
    # So every difference the control must refuse, 1 … threshold-1, is refused.
    if 0 < differ < THRESHOLD:
        assert 0 < found < THRESHOLD


def test_small_differences_are_counted_exactly_when_their_households_do_not_collide() -> None:
    rng = random.Random(5)
    shared = {signed64(rng) for _ in range(10_000)}
    for differ in range(1, 2 * THRESHOLD):
        # Distinct buckets in the first partition (low 6 bits): no two cancel.
        extra: dict[int, int] = {}
        while len(extra) < differ:
            v = signed64(rng)
            extra.setdefault(v & 63, v)
        moved = list(extra.values())
        a = shared | set(moved[: differ // 2])
        b = shared | set(moved[differ // 2 :])
        assert bound(a, b) == differ


def test_one_household_swapped_for_another_is_two() -> None:
    """Same size, different households: the sizes alone would say nothing."""
    rng = random.Random(7)
    shared = {signed64(rng) for _ in range(5_000)}
    x, y = signed64(rng), signed64(rng)
    assert bound(shared | {x}, shared | {y}) == 2


def test_populations_far_apart_are_far() -> None:
    rng = random.Random(11)
    a = {signed64(rng) for _ in range(3_000)}
    b = set(list(a)[:2_000]) | {signed64(rng) for _ in range(1_000)}
    assert bound(a, b) >= THRESHOLD


def test_many_earlier_sketches_are_compared_at_once() -> None:
    rng = random.Random(13)
    base = {signed64(rng) for _ in range(1_000)}
    earlier = [base | {signed64(rng) for _ in range(k)} for k in range(25)]
    counts, sums = unpack([sketch(p).to_bytes() for p in earlier])
    bounds = lower_bounds(sketch(base), counts, sums)
    assert bounds.shape == (25,)
    assert [int(x) for x in bounds] == [bound(base, p) for p in earlier]
    assert int(bounds[0]) == 0
    assert all(0 < int(x) <= k for k, x in enumerate(bounds) if k)


def test_a_sketch_survives_storage_and_names_its_population() -> None:
    rng = random.Random(17)
    pop = {signed64(rng) for _ in range(777)}
    s = sketch(pop)
    assert s.households == 777
    again = Sketch.from_bytes(s.to_bytes())
    assert again.households == 777
    assert np.array_equal(again.counts, s.counts)
    assert np.array_equal(again.sums, s.sums)
    assert again.digest() == s.digest() == sketch(set(pop)).digest()
    assert sketch(pop - {next(iter(pop))}).digest() != s.digest()
    assert len(s.to_bytes()) == 2048
