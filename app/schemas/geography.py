"""Geography units as the public sees them: a code, names, level, parent and centroid.

Everywhere else in the API a geography field holds a unit's ``code``; this is where a
partner or the website turns names into those codes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Every level can be listed; union councils and villages (registry-assigned, many) only
# under a parent.
Level = Literal["province", "division", "district", "tehsil", "union_council", "village"]

# Shape checks applied before any query: codes are letters and digits (PK6, PK6D01,
# PK604, PK60401, PK60401001); a name search is bounded and has no control characters
# (C0, DEL, C1), so no NUL or line break ever reaches PostgreSQL or a log line.
CODE_PATTERN = r"^[A-Za-z0-9]{1,16}$"
SEARCH_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
SEARCH_MAX_LENGTH = 100


class Centroid(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: float = Field(examples=[31.486])
    lon: float = Field(examples=[74.405])


class GeoUnitOut(BaseModel):
    """One unit; ``parent`` is the code of the unit directly above (null for a province)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(examples=["PK617"])
    name: str = Field(description="English name", examples=["Lahore"])
    name_ur: str | None = Field(description="Urdu name, where known", examples=["لاہور"])
    level: Level
    parent: str | None = Field(examples=["PK6D06"])
    centroid: Centroid | None = Field(description="Approximate centre, where known")


class GeoUnits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[GeoUnitOut]
