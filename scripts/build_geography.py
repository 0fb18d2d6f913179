"""Build app/data/geography.csv from the shared reference file (run once; output committed).

Keeps the facts the registry needs (codes, names, centroids) and adds the division level,
which the reference lacks: divisions follow the real ones, with registry-assigned codes
``PK<province digit>D<nn>``. Districts hang under their division; tehsils under districts.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

DIVISIONS: dict[str, list[tuple[str, list[int]]]] = {
    "PK1": [
        ("Muzaffarabad", [103, 107, 108]),
        ("Poonch", [101, 104, 109, 110]),
        ("Mirpur", [102, 105, 106]),
    ],
    "PK2": [
        ("Quetta", [214, 225, 226, 235]),
        ("Kalat", [201, 210, 213, 217, 220, 233]),
        ("Makran", [205, 211, 224]),
        ("Naseerabad", [207, 208, 209, 222, 229]),
        ("Sibi", [204, 206, 216, 218, 228, 232]),
        ("Zhob", [215, 227, 231]),
        ("Loralai", [202, 219, 221, 234]),
        ("Rakhshan", [203, 212, 223, 230]),
    ],
    "PK3": [
        ("Gilgit", [304, 305, 306, 308, 313]),
        ("Baltistan", [303, 307, 309, 310, 314]),
        ("Diamer", [301, 302, 311, 312]),
    ],
    "PK4": [("Islamabad", [401])],
    "PK5": [
        ("Peshawar", [506, 513, 524, 526, 528]),
        ("Mardan", [523, 531]),
        ("Malakand", [502, 505, 507, 508, 520, 521, 529, 532, 535]),
        ("Hazara", [501, 504, 511, 515, 516, 517, 522, 534]),
        ("Kohat", [510, 512, 514, 518, 527]),
        ("Bannu", [503, 519, 525]),
        ("Dera Ismail Khan", [509, 530, 533]),
    ],
    "PK6": [
        ("Bahawalpur", [602, 603, 628]),
        ("Dera Ghazi Khan", [607, 618, 623, 629]),
        ("Faisalabad", [606, 608, 612, 635]),
        ("Gujranwala", [609, 611, 625, 634]),
        ("Gujrat", [610, 620]),
        ("Lahore", [614, 617, 624, 633]),
        ("Multan", [615, 619, 622, 636]),
        ("Rawalpindi", [601, 605, 613, 630]),
        ("Sahiwal", [626, 627, 631]),
        ("Sargodha", [604, 616, 621, 632]),
    ],
    "PK7": [
        ("Karachi", [702, 704, 712, 714, 721, 729]),
        ("Hyderabad", [701, 703, 706, 708, 715, 722, 724, 725, 727]),
        ("Mirpur Khas", [716, 726, 728]),
        ("Larkana", [707, 709, 710, 713, 720]),
        ("Sukkur", [705, 711, 723]),
        ("Shaheed Benazirabad", [717, 718, 719]),
    ],
}

# CNIC's first digit per province; Azad Kashmir's CNICs begin with 8.
CNIC_DIGIT = {"PK1": "8", "PK2": "5", "PK3": "7", "PK4": "6", "PK5": "1", "PK6": "3", "PK7": "4"}
# Former FATA agencies (now KP districts) carry the FATA digit 2.
FATA_DISTRICTS = {"PK502", "PK513", "PK518", "PK524", "PK525", "PK527", "PK530"}
# The registry's 16 test-phase districts (§4.2.2). The protocol does not name them; this
# illustrative list spreads them over every province but Balochistan (itself untagged).
TEST_PHASE = {
    "PK602",
    "PK605",
    "PK613",
    "PK619",
    "PK628",
    "PK636",
    "PK703",
    "PK707",
    "PK716",
    "PK726",
    "PK501",
    "PK514",
    "PK532",
    "PK305",
    "PK107",
    "PK401",
}


def build(source: Path, target: Path) -> None:
    rows = list(csv.DictReader(source.open(encoding="utf-8")))
    district_division: dict[str, str] = {}
    out: list[list[str]] = []
    header = [
        "code",
        "level",
        "name_en",
        "name_ur",
        "parent_code",
        "province_code",
        "lat",
        "lon",
        "geo_tagged",
        "cnic_digit",
    ]
    for row in rows:
        if row["level"] == "province":
            code = row["code"]
            out.append(
                [
                    code,
                    "province",
                    row["name_en"],
                    row["name_ur"],
                    "",
                    code,
                    row["lat"],
                    row["lon"],
                    str(code != "PK2").lower(),
                    CNIC_DIGIT[code],
                ]
            )
            for n, (name, districts) in enumerate(DIVISIONS[code], start=1):
                dcode = f"{code}D{n:02d}"
                members = [r for r in rows if r["code"] in {f"PK{d}" for d in districts}]
                lat = sum(float(r["lat"]) for r in members) / len(members)
                lon = sum(float(r["lon"]) for r in members) / len(members)
                out.append(
                    [
                        dcode,
                        "division",
                        f"{name} Division",
                        "",
                        code,
                        code,
                        f"{lat:.3f}",
                        f"{lon:.3f}",
                        str(code != "PK2").lower(),
                        CNIC_DIGIT[code],
                    ]
                )
                for d in districts:
                    district_division[f"PK{d}"] = dcode
    for row in rows:
        if row["level"] == "province":
            continue
        code, province = row["code"], row["code"][:3]
        district = code[:5]
        tagged = province != "PK2" and district not in TEST_PHASE
        digit = "2" if district in FATA_DISTRICTS else CNIC_DIGIT[province]
        parent = district_division[code] if row["level"] == "district" else row["parent_code"]
        out.append(
            [
                code,
                row["level"],
                row["name_en"],
                row["name_ur"],
                parent,
                province,
                row["lat"],
                row["lon"],
                str(tagged).lower(),
                digit,
            ]
        )
    missing = {r["code"] for r in rows if r["level"] == "district"} - set(district_division)
    if missing:
        raise SystemExit(f"districts without a division: {sorted(missing)}")
    with target.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(out)


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
