"""Members of one chunk of synthetic households, built role by role with numpy.

Each role (head, spouse, children, a married son with his wife and children, the head's
parents, a divorced or widowed daughter back home, siblings, other relatives) is a block
of rows generated at once for every household that has it; the blocks are then sorted
into household order. Ages are whole years at the survey date and every ever-married
member is at least 18 then (so also today).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from app.models.registry import (
    DISABILITIES,
    EDUCATION_LEVELS,
    EMPLOYMENT,
    MARITAL,
    RELATIONSHIPS,
)
from app.services.seed.geography import PROVINCES, Villages
from app.services.seed.households import HouseholdFrame, array_literals
from app.services.seed.names import (
    FAMILY_BY_PROVINCE,
    FAMILY_COMMON,
    FEMALE_FIRST,
    MALE_FIRST,
)

Ints = npt.NDArray[np.int64]
MAX_MEMBERS = 32  # per household; the CNIC key is household id * 32 + position
CNIC_MODULUS = 10**11
CNIC_A = 73_245_109_837  # coprime with 10, so key -> middle digits is a bijection
CNIC_B = 12_345_678_901
# Minimum age for a first CNIC is 18; a B-form child may carry one earlier.
CHILD_CNIC_SHARE = 0.4

REL = {name: i for i, name in enumerate(RELATIONSHIPS)}
MAR = {name: i for i, name in enumerate(MARITAL)}
EMP = {name: i for i, name in enumerate(EMPLOYMENT)}
_MIN_AGE_FOR_LEVEL = np.array([0, 10, 13, 15, 17, 20, 23])
_DISABILITY_LITERALS = array_literals(DISABILITIES)
_FAMILY_POOLS = [np.array(FAMILY_BY_PROVINCE[p] + FAMILY_COMMON, dtype=object) for p in PROVINCES]


class _Blocks:
    """Accumulates role blocks: household index, order, relationship, gender, age, marital."""

    def __init__(self) -> None:
        self.parts: list[tuple[Ints, ...]] = []

    def add(
        self,
        hh: Ints,
        order: int,
        rel: Ints | int,
        female: Ints | int,
        age: Ints,
        marital: Ints | int,
    ) -> None:
        n = len(hh)

        def full(x: Ints | int) -> Ints:
            return np.full(n, x, dtype=np.int64) if isinstance(x, int) else x.astype(np.int64)

        self.parts.append(
            (
                hh.astype(np.int64),
                np.full(n, order, dtype=np.int64),
                full(rel),
                full(female),
                age.astype(np.int64),
                full(marital),
            )
        )

    def stack(self) -> tuple[Ints, ...]:
        cols = [np.concatenate([p[i] for p in self.parts]) for i in range(6)]
        order = np.lexsort((cols[1], cols[0]))
        return tuple(c[order] for c in cols)


def _ages_between(rng: np.random.Generator, low: Ints, high: Ints) -> Ints:
    """Uniform whole ages in [low, high] (high >= low assumed after clipping)."""
    high = np.maximum(high, low)
    return low + np.floor(rng.random(len(low)) * (high - low + 1)).astype(np.int64)


def _roles(rng: np.random.Generator, hh: HouseholdFrame) -> tuple[Ints, ...]:
    n = len(hh.ids)
    idx = np.arange(n, dtype=np.int64)
    b = _Blocks()
    female_head = rng.random(n) < 0.09
    head_age = np.where(female_head, 28 + rng.gamma(3.0, 7.0, n), 21 + rng.gamma(3.0, 7.0, n))
    head_age = np.clip(head_age, 20, 90).astype(np.int64)
    has_spouse = ~female_head & (rng.random(n) < np.where(head_age < 65, 0.93, 0.7))
    r = rng.random(n)
    head_marital = np.where(
        has_spouse,
        MAR["married"],
        np.where(
            female_head,
            np.select(
                [r < 0.65, r < 0.85, r < 0.95],
                [MAR["widowed"], MAR["married"], MAR["divorced"]],
                MAR["separated"],
            ),
            np.where(
                head_age < 30,
                MAR["never_married"],
                np.where(r < 0.6, MAR["widowed"], MAR["divorced"]),
            ),
        ),
    )
    b.add(idx, 0, REL["head"], female_head.astype(np.int64), head_age, head_marital)

    spouse_age = np.clip(head_age - 1 - rng.gamma(2.0, 2.5, n).astype(np.int64), 18, 90)
    s = idx[has_spouse]
    b.add(s, 1, REL["spouse"], 1, spouse_age[s], MAR["married"])

    # Children of the head: fertility by the mother's age, fewer in richer households.
    mother_age = np.where(has_spouse, spouse_age, np.where(female_head, head_age, head_age - 5))
    fertile = np.clip((mother_age - 18) / 13.0, 0, 1) * np.clip((68 - mother_age) / 16.0, 0.15, 1)
    lam = 4.8 * fertile * np.exp(-0.12 * np.clip(hh.wealth, -2, 3))
    lam = np.where(has_spouse | female_head, lam, lam * 0.3)
    kids = np.minimum(rng.poisson(lam), 12)
    k = np.repeat(idx, kids)
    span = np.clip(mother_age[k] - 17, 1, 27)
    kid_age = np.floor(rng.random(len(k)) * span).astype(np.int64)
    kid_female = rng.random(len(k)) >= 0.53
    b.add(
        k,
        4,
        np.where(kid_female, REL["daughter"], REL["son"]),
        kid_female.astype(np.int64),
        kid_age,
        MAR["never_married"],
    )

    # Joint family: a married son with his wife and their children.
    joint = idx[(head_age >= 44) & (rng.random(n) < 0.42)]
    son_age = _ages_between(rng, np.full(len(joint), 20), np.minimum(head_age[joint] - 18, 40))
    dil_age = np.maximum(son_age - rng.integers(0, 7, len(joint)), 18)
    b.add(joint, 5, REL["son"], 0, son_age, MAR["married"])
    b.add(joint, 6, REL["daughter_in_law"], 1, dil_age, MAR["married"])
    grand = np.minimum(rng.poisson(2.2 * np.clip((dil_age - 18) / 7.0, 0, 1)), 6)
    g = np.repeat(np.arange(len(joint)), grand)
    g_age = np.floor(rng.random(len(g)) * np.clip(dil_age[g] - 17, 1, 14)).astype(np.int64)
    g_female = rng.random(len(g)) >= 0.51
    b.add(
        joint[g],
        7,
        np.where(g_female, REL["granddaughter"], REL["grandson"]),
        g_female.astype(np.int64),
        g_age,
        MAR["never_married"],
    )

    # The head's elderly parents.
    young = head_age < 50
    father = idx[young & (rng.random(n) < 0.12)]
    mother = idx[young & (rng.random(n) < 0.22)]
    both = np.intersect1d(father, mother)
    f_age = np.minimum(head_age[father] + 22 + rng.gamma(2.0, 3.0, len(father)), 98)
    m_age = np.minimum(head_age[mother] + 19 + rng.gamma(2.0, 3.0, len(mother)), 98)
    b.add(
        father,
        2,
        REL["father"],
        0,
        f_age,
        np.where(np.isin(father, both), MAR["married"], MAR["widowed"]),
    )
    b.add(
        mother,
        3,
        REL["mother"],
        1,
        m_age,
        np.where(np.isin(mother, both), MAR["married"], MAR["widowed"]),
    )

    # A divorced, separated or widowed daughter living with her parents (a second family).
    back = idx[(head_age >= 42) & (rng.random(n) < 0.07)]
    back_age = _ages_between(rng, np.full(len(back), 20), np.minimum(head_age[back] - 18, 45))
    r = rng.random(len(back))
    back_status = np.select(
        [r < 0.45, r < 0.8], [MAR["divorced"], MAR["widowed"]], MAR["separated"]
    )
    b.add(back, 4, REL["daughter"], 1, back_age, back_status)

    # Unmarried younger siblings and the odd other relative or lodger.
    sib = idx[(head_age < 40) & (rng.random(n) < 0.12)]
    sib_age = np.maximum(head_age[sib] - rng.integers(1, 12, len(sib)), 10)
    sib_female = rng.random(len(sib)) < 0.45
    b.add(
        sib,
        8,
        np.where(sib_female, REL["sister"], REL["brother"]),
        sib_female.astype(np.int64),
        sib_age,
        MAR["never_married"],
    )
    other = idx[rng.random(n) < 0.04]
    o_age = rng.integers(18, 80, len(other))
    o_female = rng.random(len(other)) < 0.5
    b.add(
        other,
        9,
        np.where(rng.random(len(other)) < 0.8, REL["other_relative"], REL["non_relative"]),
        o_female.astype(np.int64),
        o_age,
        np.where(o_age >= 55, MAR["widowed"], MAR["never_married"]),
    )
    return b.stack()


def _dates_of_birth(
    rng: np.random.Generator, surveyed: npt.NDArray[np.datetime64], age: Ints
) -> npt.NDArray[np.datetime64]:
    # floor(age * 365.25) + 1 .. + 364 days before the survey is always exactly ``age`` years.
    days = np.floor(age * 365.25).astype(np.int64) + 1 + rng.integers(0, 364, len(age))
    born: npt.NDArray[np.datetime64] = surveyed - days.astype("timedelta64[D]")
    return born


def _education(
    rng: np.random.Generator,
    age: Ints,
    female: Ints,
    wealth: npt.NDArray[np.float64],
    urban: npt.NDArray[np.bool_],
) -> Ints:
    older = np.clip((age - 30) / 40.0, 0, 1)
    latent = 0.9 * wealth + 0.5 * urban - 0.5 * female - 1.1 * older + rng.normal(0, 1, len(age))
    level = np.searchsorted(np.array([-0.6, 0.0, 0.5, 1.1, 1.7, 2.4]), latent)
    cap = np.searchsorted(_MIN_AGE_FOR_LEVEL, age, side="right") - 1
    capped: Ints = np.minimum(level, cap).astype(np.int64)
    return capped


def _employment(rng: np.random.Generator, age: Ints, female: Ints, edu: Ints) -> Ints:
    r = rng.random(len(age))
    adult_m = np.select(
        [r < 0.45, r < 0.8, r < 0.93],
        [EMP["employed"], EMP["self_employed"], EMP["unemployed"]],
        EMP["unable_to_work"],
    )
    adult_f = np.select(
        [r < 0.8, r < 0.88, r < 0.94],
        [EMP["homemaker"], EMP["employed"], EMP["self_employed"]],
        EMP["unemployed"],
    )
    youth = np.where(r < 0.35 + 0.1 * edu, EMP["student"], np.where(female == 1, adult_f, adult_m))
    old = np.select(
        [r < 0.4, r < 0.6],
        [EMP["retired"], EMP["unable_to_work"]],
        np.where(female == 1, EMP["homemaker"], EMP["self_employed"]),
    )
    return np.select(
        [age < 5, age < 15, age < 24, age < 60],
        [
            EMP["child"],
            np.where(edu > 0, EMP["student"], EMP["child"]),
            youth,
            np.where(female == 1, adult_f, adult_m),
        ],
        old,
    ).astype(np.int64)


def _cnic(rng: np.random.Generator, key: Ints, first: Ints, female: Ints) -> Ints:
    hi, lo = key // 1_000_000, key % 1_000_000
    middle = ((CNIC_A * hi) % CNIC_MODULUS * 1_000_000 + CNIC_A * lo + CNIC_B) % CNIC_MODULUS
    last = 2 * rng.integers(0, 5, len(key)) + (1 - female)
    number: Ints = first * 10**12 + middle * 10 + last
    return number


def _unless(missing: npt.NDArray[np.bool_], values: pa.Array) -> pa.Array:
    return pc.if_else(pa.array(missing), pa.scalar(None, values.type), values)


@dataclass(frozen=True)
class LivingTotals:
    """Per household of the chunk, its living members as the PMT counts them (the twin of
    ``pmt.features.MEMBER_AGGREGATE``): ages are whole years at the survey date by
    construction, so "dependent" is simply under 15 or 65 and over."""

    size: Ints
    dependents: Ints
    head_education: Ints  # index into EDUCATION_LEVELS of the (one, living) head
    disabled: Ints


def members(
    rng: np.random.Generator, hh: HouseholdFrame, villages: Villages, today: date
) -> tuple[pa.Table, LivingTotals]:
    h, _order, rel, female, age, marital = _roles(rng, hh)
    m = len(h)
    starts = np.searchsorted(h, np.arange(len(hh.ids)))
    position = np.arange(m) - starts[h]
    surveyed = hh.surveyed_on[h]
    dob = _dates_of_birth(rng, surveyed, age)
    is_head = rel == REL["head"]
    untagged = hh.untagged[h] & ~is_head

    first_digit = villages.cnic_digit[hh.village[h]]
    elsewhere = rng.random(m) < 0.05
    first_digit = np.where(elsewhere, rng.integers(1, 8, m), first_digit)
    cnic = _cnic(rng, hh.ids[h] * MAX_MEMBERS + position, first_digit, female)
    has_cnic = (age >= 18) | (rng.random(m) < CHILD_CNIC_SHARE)

    male_first = pa.array(MALE_FIRST).take(pa.array(rng.integers(0, len(MALE_FIRST), m)))
    female_first = pa.array(FEMALE_FIRST).take(pa.array(rng.integers(0, len(FEMALE_FIRST), m)))
    family = np.empty(len(hh.ids), dtype=object)
    for p, pool in enumerate(_FAMILY_POOLS):
        mask = hh.province == p
        family[mask] = pool[rng.integers(0, len(pool), int(mask.sum()))]
    member_family = family[h]
    married_in = (rel == REL["spouse"]) | (rel == REL["daughter_in_law"])
    own = married_in & (rng.random(m) < 0.4)
    member_family[own] = family[rng.integers(0, len(hh.ids), int(own.sum()))]
    name = pc.binary_join_element_wise(
        pc.if_else(pa.array(female == 1), female_first, male_first),
        pa.array(member_family, pa.string()),
        " ",
    )

    disabled = rng.random(m) < 0.012 + 0.0007 * age
    kinds = (1 << rng.integers(0, len(DISABILITIES), m)) | np.where(
        rng.random(m) < 0.15, 1 << rng.integers(0, len(DISABILITIES), m), 0
    )
    disability_mask = np.where(disabled, kinds, 0)
    edu = _education(rng, age, female, hh.wealth[h], hh.urban[h])
    employment = _employment(rng, age, female, edu)

    # About 1% died after the survey (never a head, so every household keeps its head).
    elderly = (rel == REL["father"]) | (rel == REL["mother"])
    dies = ~is_head & (rng.random(m) < np.where(elderly, 0.1, 0.0075))
    today_d = np.datetime64(today.isoformat(), "D")
    span = (today_d - surveyed).astype(np.int64)
    died = surveyed + (1 + np.floor(rng.random(m) * np.maximum(span - 1, 1))).astype(
        "timedelta64[D]"
    )
    died = np.minimum(died, today_d - np.timedelta64(1, "D"))

    n = len(hh.ids)
    living = ~dies
    heads = np.flatnonzero(is_head)  # one per household, never untagged, never dead
    head_education = np.zeros(n, dtype=np.int64)
    head_education[h[heads]] = edu[heads]
    totals = LivingTotals(
        size=np.bincount(h[living], minlength=n),
        dependents=np.bincount(h[living & ((age < 15) | (age >= 65))], minlength=n),
        head_education=head_education,
        disabled=np.bincount(h[living & ~untagged & (disability_mask != 0)], minlength=n),
    )
    table = pa.table(
        {
            "household_id": hh.ids[h],
            "cnic": _unless(~has_cnic, pc.cast(pa.array(cnic), pa.string())),
            "name": name,
            "gender": pa.array(["male", "female"]).take(pa.array(female)),
            "date_of_birth": pa.array(dob),
            "relationship": pa.array(RELATIONSHIPS).take(pa.array(rel)),
            "marital_status": pa.array(MARITAL).take(pa.array(marital)),
            "disabilities": _unless(untagged, _DISABILITY_LITERALS.take(pa.array(disability_mask))),
            "education": _unless(untagged, pa.array(EDUCATION_LEVELS).take(pa.array(edu))),
            "employment": pa.array(EMPLOYMENT).take(pa.array(employment)),
            "deceased_on": pa.array(died, mask=~dies),
        }
    )
    return table, totals
