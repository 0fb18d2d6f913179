"""One chunk of synthetic households: geography, survey details and PMT indicators.

Everything is vectorised over the chunk. A latent wealth factor per household (province,
tehsil and urban/rural shifts plus noise) drives the indicators, so PMT scores spread over
every band; the scores themselves are computed afterwards in SQL (``pmt.rescore_sql``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from app.models.registry import ELECTRICAL, GAS, KITCHEN, TOILET_TYPES
from app.services.seed.geography import PROVINCES, Villages

SURVEY_START = np.datetime64("2019-01-01")
SURVEY_DAYS = 1096  # 2019-01-01 .. 2021-12-31

# Mean latent wealth by province (Islamabad richest, Balochistan poorest).
PROVINCE_WEALTH = {
    "PK1": 0.15,
    "PK2": -0.55,
    "PK3": -0.1,
    "PK4": 0.9,
    "PK5": -0.1,
    "PK6": 0.1,
    "PK7": -0.1,
}
_PROV_SHIFT = np.array([PROVINCE_WEALTH[p] for p in PROVINCES])

# Ownership odds per item: sigmoid(a + b * wealth + c * urban).
_ELECTRICAL_ODDS = {
    "refrigerator": (-0.4, 1.6, 0.5),
    "air_conditioner": (-3.6, 1.7, 0.8),
    "freezer": (-2.6, 1.2, 0.3),
    "television": (0.2, 1.3, 0.8),
    "washing_machine": (-0.4, 1.5, 0.5),
    "microwave_oven": (-3.3, 1.6, 0.7),
    "air_cooler": (-0.9, 1.2, 0.4),
}
_GAS_ODDS = {"geyser": (-2.0, 1.4, 1.0), "heater": (-2.2, 1.1, 0.6)}
_KITCHEN_ODDS = {"cooking_stove": (0.3, 1.0, 0.6), "cooking_range": (-2.6, 1.4, 0.7)}


def array_literals(items: tuple[str, ...]) -> pa.Array:
    """PostgreSQL array literals for every subset of ``items``, indexed by bitmask."""
    return pa.array(
        [
            "{" + ",".join(x for i, x in enumerate(items) if mask >> i & 1) + "}"
            for mask in range(1 << len(items))
        ]
    )


_LITERALS = {
    name: array_literals(items)
    for name, items in (("electrical", ELECTRICAL), ("gas", GAS), ("kitchen", KITCHEN))
}


@dataclass(frozen=True)
class HouseholdFrame:
    """What member generation needs to know about each household of the chunk."""

    ids: npt.NDArray[np.int64]
    village: npt.NDArray[np.int64]
    province: npt.NDArray[np.int64]
    untagged: npt.NDArray[np.bool_]
    urban: npt.NDArray[np.bool_]
    wealth: npt.NDArray[np.float64]
    surveyed_on: npt.NDArray[np.datetime64]


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-x))


def _owned(
    rng: np.random.Generator,
    odds: dict[str, tuple[float, float, float]],
    items: tuple[str, ...],
    wealth: npt.NDArray[np.float64],
    urban: npt.NDArray[np.float64],
) -> npt.NDArray[np.int64]:
    mask = np.zeros(len(wealth), dtype=np.int64)
    for bit, item in enumerate(items):
        a, b, c = odds[item]
        has = rng.random(len(wealth)) < _sigmoid(a + b * wealth + c * urban)
        mask |= has.astype(np.int64) << bit
    return mask


def _text(values: npt.NDArray[np.int64]) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def households(
    rng: np.random.Generator, villages: Villages, first_id: int, n: int
) -> tuple[HouseholdFrame, pa.Table]:
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    cum = np.cumsum(villages.weight)
    # In village order (the villages are sorted by code: province, district, tehsil, union
    # council), so a chunk writes each district's households, and their members, together:
    # the heap is clustered by geography, as a registry surveyed district by district is,
    # and a district's products read a few runs of pages instead of one page a household.
    # The draws are independent, so sorting them changes nothing else.
    v = np.sort(np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1]), len(cum) - 1))
    province = villages.province[v]
    untagged = villages.untagged[v]
    urban = rng.random(n) < villages.urban_share[v]
    u = urban.astype(np.float64)
    wealth = _PROV_SHIFT[province] + villages.wealth_shift[v] + 0.6 * u + rng.normal(0, 1, n)
    surveyed_on = SURVEY_START + rng.integers(0, SURVEY_DAYS, n).astype("timedelta64[D]")

    rooms = np.clip(1 + rng.poisson(np.exp(0.25 + 0.45 * wealth)), 1, 20)
    toilet_latent = wealth + 0.9 * u + rng.normal(0, 0.8, n)
    toilet = np.searchsorted(np.array([-1.2, -0.4, 0.4, 1.5]), toilet_latent)
    toilet = np.where((toilet == 4) & ~urban, 3, toilet)  # sewers are urban
    electrical = _owned(rng, _ELECTRICAL_ODDS, ELECTRICAL, wealth, u)
    gas = _owned(rng, _GAS_ODDS, GAS, wealth, u)
    kitchen = _owned(rng, _KITCHEN_ODDS, KITCHEN, wealth, u)

    rural = 1.0 - u
    keeps = rural * (rng.random(n) < 0.55)
    herd = np.exp(0.2 * np.clip(wealth, -2, 3))
    cows = rng.poisson(0.9 * herd) * keeps
    buffaloes = rng.poisson(0.8 * herd) * keeps
    bullocks = rng.poisson(0.3 * herd) * keeps
    goats = rng.poisson(1.8) * keeps
    lambs = rng.poisson(0.8) * keeps * (province != PROVINCES.index("PK7"))
    landed = (rng.random(n) < rural * _sigmoid(-0.9 + 1.1 * wealth)).astype(np.float64)
    acres = landed * rng.lognormal(0.6 + 0.5 * np.clip(wealth, -1, 3), 0.9)
    muraba = np.floor(acres / 25.0) * (acres >= 25)
    rest = acres - muraba * 25
    acre = np.floor(rest)
    kanal = np.floor((rest - acre) * 8)
    plot = urban & (rng.random(n) < _sigmoid(-0.5 + wealth))
    marla = np.where(plot, rng.choice(np.array([3.0, 5.0, 7.0, 10.0, 20.0]), n), 0.0)

    no_point = untagged
    jitter = rng.normal(0, 0.004, (n, 2))
    lat = pa.array(np.round(villages.lat[v] + jitter[:, 0], 6), mask=no_point)
    lon = pa.array(np.round(villages.lon[v] + jitter[:, 1], 6), mask=no_point)
    has_phone = ~untagged & (rng.random(n) < 0.9)
    phone_digits = pc.utf8_lpad(_text(rng.integers(0, 500_000_000, n)), 9, "0")
    phone = pc.if_else(
        pa.array(has_phone),
        pc.binary_join_element_wise("+923", phone_digits, ""),
        pa.scalar(None, pa.string()),
    )
    house_no = _text(rng.integers(1, 900, n))
    names = villages.names[v]
    address = pc.binary_join_element_wise(
        "House ", house_no, ", ", pa.array(names[:, 0]), ", Tehsil ", pa.array(names[:, 1]), ""
    )
    years = surveyed_on.astype("datetime64[Y]").astype(np.int64) + 1970
    form = pc.binary_join_element_wise(
        "NSER-", _text(years), "-", pc.utf8_lpad(_text(ids), 10, "0"), ""
    )
    codes = villages.codes[v]
    table = pa.table(
        {
            "id": ids,
            "form_number": form,
            "province_code": pa.array(codes[:, 5], pa.string()),
            "division_code": pa.array(codes[:, 4], pa.string()),
            "district_code": pa.array(codes[:, 3], pa.string()),
            "tehsil_code": pa.array(codes[:, 2], pa.string()),
            "union_council_code": pa.array(codes[:, 1], pa.string()),
            "village_code": pa.array(codes[:, 0], pa.string()),
            "address": address,
            "lat": lat,
            "lon": lon,
            "phone": phone,
            "surveyed_on": pa.array(surveyed_on),
            "rooms": rooms,
            "toilet_type": pa.array(TOILET_TYPES).take(pa.array(toilet)),
            "electrical": _LITERALS["electrical"].take(pa.array(electrical)),
            "gas": _LITERALS["gas"].take(pa.array(gas)),
            "kitchen": _LITERALS["kitchen"].take(pa.array(kitchen)),
            "cows": cows.astype(np.int64),
            "goats": goats.astype(np.int64),
            "buffaloes": buffaloes.astype(np.int64),
            "bullocks": bullocks.astype(np.int64),
            "lambs": lambs.astype(np.int64),
            "land_muraba": muraba,
            "land_acre": acre,
            "land_kanal": kanal,
            "land_marla": marla,
        }
    )
    frame = HouseholdFrame(ids, v, province, untagged, urban, wealth, surveyed_on)
    return frame, table
