"""Programmes: the rule document, staff bodies, and the partner answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.schemas.base import UUID_RE, StrictModel
from app.schemas.geography import CODE_PATTERN

Condition = Literal[
    "has_disabled_member",
    "has_ever_married_woman",
    "has_child_under_5",
    "has_school_age_child",
    "has_child",
    "has_elderly_member",
    "has_female_head",
]  # app.services.programmes.rules.CONDITIONS (checked there)

# JSON numbers only (strict): "32" or true is not a cut-off.
Score = Annotated[float, Field(strict=True, ge=0, le=100)]
GeoCode = Annotated[str, Field(pattern=CODE_PATTERN)]
Code = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,39}$")]


class RaisedCutOff(StrictModel):
    when: Condition
    cut_off: Score


class RuleIn(StrictModel):
    """A programme's rule: eligible at or below ``cut_off``, or at or below a raised
    cut-off for households meeting its condition; within ``geography`` (codes at any
    level, empty = the whole country) and only where every ``requires`` condition holds.
    ``unit: family`` makes each ever-married woman of an eligible household a recipient."""

    unit: Literal["household", "family"] = "household"
    cut_off: Score
    raised_cut_offs: Annotated[list[RaisedCutOff], Field(max_length=10, default_factory=list)]
    geography: Annotated[list[GeoCode], Field(max_length=200, default_factory=list)]
    requires: Annotated[list[Condition], Field(max_length=10, default_factory=list)]


class ProgrammeIn(StrictModel):
    code: Code
    name: Annotated[str, Field(min_length=1, max_length=200)]
    organization_id: Annotated[
        str,
        Field(pattern=rf"^{UUID_RE}$"),
    ]
    description: Annotated[str, Field(max_length=4000)] = ""
    rule: RuleIn
    note: Annotated[str, Field(max_length=2000)] = ""


class RuleVersionIn(StrictModel):
    rule: RuleIn
    note: Annotated[str, Field(max_length=2000)] = ""


class StatusChangeIn(StrictModel):
    """``close`` / ``reopen`` (staff): why; recorded with the change and audited."""

    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class Programme(BaseModel):
    programme_id: str
    code: str
    name: str
    organization_id: str
    organization: str
    description: str
    # 'closed': eligibility and the eligible list are refused (409) from closed_at on.
    status: Literal["active", "closed"]
    closed_at: datetime | None
    version: int
    rule: dict[str, object]
    updated_at: datetime


class RuleVersion(BaseModel):
    version: int
    rule: dict[str, object]
    note: str
    created_by: str
    created_at: datetime


class StaffProgramme(Programme):
    closed_reason: str | None
    versions: list[RuleVersion]
    agreements: list[str]


class ProgrammeList(BaseModel):
    items: list[Programme]


class Eligibility(BaseModel):
    eligible: bool
    clause: str
    pmt_score: float | None
    cut_off: float | None
    programme_id: str
    rule_version: int
    unit: Literal["household", "family"]
    household_id: str
    # Family unit: whether this CNIC's holder is a recipient (an ever-married woman), and
    # how many families (recipients) the household holds. Null for household programmes.
    recipient: bool | None
    families: int | None
