"""Synthetic union councils and villages under the real tehsils, and the village table.

The real units (province > division > district > tehsil) come from the migration. Union
councils (tehsil code + 3 digits) and villages (UC code + 2 digits) are registry-assigned:
generated here once, from an rng keyed by the tehsil code alone, so every database gets the
same ones whatever seed the households use.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import asyncpg
import numpy as np
import numpy.typing as npt

from app.services.seed.names import PLACE_ROOTS, VILLAGE_PREFIX

# Share of households per province (census-like; Azad Kashmir, GB, Islamabad are small).
PROVINCE_SHARE = {
    "PK6": 0.530,  # Punjab
    "PK7": 0.230,  # Sindh
    "PK5": 0.150,  # Khyber Pakhtunkhwa
    "PK2": 0.060,  # Balochistan
    "PK1": 0.016,  # Azad Kashmir
    "PK4": 0.009,  # Islamabad
    "PK3": 0.005,  # Gilgit-Baltistan
}


def _tehsil_rng(code: str) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(code.encode()), 2026])


def subunit_rows(tehsils: list[asyncpg.Record]) -> list[tuple[object, ...]]:
    """(code, level, name_en, parent, province, lat, lon, geo_tagged, cnic_digit) rows."""
    rows: list[tuple[object, ...]] = []
    for t in tehsils:
        rng = _tehsil_rng(t["code"])
        prefixes = VILLAGE_PREFIX.get(t["province_code"], ("Mohalla",))
        lat0 = float(t["lat"] if t["lat"] is not None else 30.0)
        lon0 = float(t["lon"] if t["lon"] is not None else 70.0)
        for u in range(1, int(rng.integers(8, 13)) + 1):
            uc = f"{t['code']}{u:03d}"
            root = PLACE_ROOTS[int(rng.integers(len(PLACE_ROOTS)))]
            ulat, ulon = lat0 + rng.normal(0, 0.06), lon0 + rng.normal(0, 0.06)
            common = (t["province_code"], t["geo_tagged"], t["cnic_digit"])
            rows.append(
                (
                    uc,
                    "union_council",
                    f"UC-{u} {root}",
                    t["code"],
                    common[0],
                    round(ulat, 5),
                    round(ulon, 5),
                    common[1],
                    common[2],
                )
            )
            for v in range(1, int(rng.integers(4, 7)) + 1):
                prefix = prefixes[int(rng.integers(len(prefixes)))]
                vroot = PLACE_ROOTS[int(rng.integers(len(PLACE_ROOTS)))]
                name = f"{prefix} {vroot} {int(rng.integers(1, 400))}"
                vlat, vlon = ulat + rng.normal(0, 0.02), ulon + rng.normal(0, 0.02)
                rows.append(
                    (
                        f"{uc}{v:02d}",
                        "village",
                        name,
                        uc,
                        common[0],
                        round(vlat, 5),
                        round(vlon, 5),
                        common[1],
                        common[2],
                    )
                )
    return rows


async def ensure_subunits(conn: asyncpg.Connection) -> int:
    """Create the union councils and villages of every tehsil that has none; returns how many."""
    tehsils = await conn.fetch(
        """SELECT t.code, t.province_code, t.lat, t.lon, t.geo_tagged, t.cnic_digit
             FROM geo_units t
            WHERE t.level = 'tehsil'
              AND NOT EXISTS (SELECT 1 FROM geo_units u
                               WHERE u.parent_code = t.code AND u.level = 'union_council')
            ORDER BY t.code"""
    )
    rows = subunit_rows(list(tehsils))
    if rows:
        await conn.copy_records_to_table(
            "geo_units",
            records=rows,
            columns=[
                "code",
                "level",
                "name_en",
                "parent_code",
                "province_code",
                "lat",
                "lon",
                "geo_tagged",
                "cnic_digit",
            ],
        )
    return len(rows)


@dataclass(frozen=True)
class Villages:
    """Every village with its ancestors, as parallel arrays indexed by village number."""

    codes: npt.NDArray[np.object_]  # village, UC, tehsil, district, division, province (n, 6)
    names: npt.NDArray[np.object_]  # village name, tehsil name (n, 2)
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    province: npt.NDArray[np.int64]  # index into PROVINCES
    untagged: npt.NDArray[np.bool_]  # no geo-point / reduced member fields (§4.2.2)
    cnic_digit: npt.NDArray[np.int64]
    urban_share: npt.NDArray[np.float64]
    wealth_shift: npt.NDArray[np.float64]
    weight: npt.NDArray[np.float64]  # probability that a household lives here


PROVINCES = tuple(sorted(PROVINCE_SHARE))


async def load_villages(conn: asyncpg.Connection) -> Villages:
    rows = await conn.fetch(
        """SELECT v.code AS village, u.code AS uc, t.code AS tehsil, d.code AS district,
                  d.parent_code AS division, v.province_code AS province,
                  v.name_en AS village_name, t.name_en AS tehsil_name, v.lat, v.lon,
                  (v.province_code = 'PK2' OR NOT d.geo_tagged OR NOT t.geo_tagged
                   OR NOT v.geo_tagged) AS untagged,
                  coalesce(d.cnic_digit, p.cnic_digit, '3') AS cnic_digit
             FROM geo_units v
             JOIN geo_units u ON u.code = v.parent_code AND u.level = 'union_council'
             JOIN geo_units t ON t.code = u.parent_code AND t.level = 'tehsil'
             JOIN geo_units d ON d.code = t.parent_code AND d.level = 'district'
             JOIN geo_units p ON p.code = v.province_code
            WHERE v.level = 'village'
            ORDER BY v.code"""
    )
    if not rows:
        raise RuntimeError("no villages in geo_units: run `nser db upgrade` first")
    codes = np.array(
        [
            [r["village"], r["uc"], r["tehsil"], r["district"], r["division"], r["province"]]
            for r in rows
        ],
        dtype=object,
    )
    province = np.array([PROVINCES.index(r["province"]) for r in rows], dtype=np.int64)
    tehsils, tehsil_of = np.unique(codes[:, 2].astype(str), return_inverse=True)
    # Per-tehsil character (size, urbanisation, prosperity), fixed by the tehsil code.
    t_weight = np.empty(len(tehsils))
    t_urban = np.empty(len(tehsils))
    t_wealth = np.empty(len(tehsils))
    for i, code in enumerate(tehsils):
        rng = _tehsil_rng(str(code) + "/character")
        t_weight[i] = rng.lognormal(0.0, 0.6)
        t_urban[i] = rng.beta(2.0, 3.5)
        t_wealth[i] = rng.normal(0.0, 0.3)
    weight = t_weight[tehsil_of] / np.bincount(tehsil_of)[tehsil_of]
    for p, code in enumerate(PROVINCES):
        mask = province == p
        weight[mask] *= PROVINCE_SHARE[code] / weight[mask].sum()
    weight /= weight.sum()
    urban = t_urban[tehsil_of]
    urban[province == PROVINCES.index("PK4")] = 0.85
    return Villages(
        codes=codes,
        names=np.array([[r["village_name"], r["tehsil_name"]] for r in rows], dtype=object),
        lat=np.array([r["lat"] for r in rows], dtype=np.float64),
        lon=np.array([r["lon"] for r in rows], dtype=np.float64),
        province=province,
        untagged=np.array([r["untagged"] for r in rows], dtype=bool),
        cnic_digit=np.array([int(r["cnic_digit"]) for r in rows], dtype=np.int64),
        urban_share=urban,
        wealth_shift=t_wealth[tehsil_of],
        weight=weight,
    )
