"""Partner data responses (documentation models; bodies are built by PostgreSQL)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel


class PartnerScore(BaseModel):
    cnic: str
    household_id: str
    pmt_score: float | None
    poverty_band: str | None
    surveyed_on: date
    pmt_version: str | None


class BeneficiaryMember(BaseModel):
    member_id: str
    cnic: str | None
    name: str
    gender: str
    age: int
    relationship: str
    marital_status: str


class Beneficiary(BaseModel):
    household_id: str
    address: str
    province: str
    division: str
    district: str
    tehsil: str
    union_council: str
    pmt_score: float | None
    poverty_band: str | None
    members: list[BeneficiaryMember]


class BeneficiaryPage(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None
    # As-of lists only: the instant read (UTC) and the snapshot id (also X-Snapshot-Id).
    as_of: datetime | None = None
    snapshot: str | None = None
