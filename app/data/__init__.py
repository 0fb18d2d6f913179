"""Reference data shipped with the service (see ATTRIBUTION.md)."""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

GEOGRAPHY_CSV = Path(__file__).with_name("geography.csv")


@cache
def geography_rows() -> list[dict[str, object]]:
    """Provinces, divisions, districts and tehsils, parents before children."""
    rows: list[dict[str, object]] = []
    with GEOGRAPHY_CSV.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            rows.append(
                {
                    "code": row["code"],
                    "level": row["level"],
                    "name_en": row["name_en"],
                    "name_ur": row["name_ur"] or None,
                    "parent_code": row["parent_code"] or None,
                    "province_code": row["province_code"],
                    "lat": float(row["lat"]),
                    "lon": float(row["lon"]),
                    "geo_tagged": row["geo_tagged"] == "true",
                    "cnic_digit": row["cnic_digit"],
                }
            )
    order = {"province": 0, "division": 1, "district": 2, "tehsil": 3}
    rows.sort(key=lambda r: order[str(r["level"])])
    return rows
