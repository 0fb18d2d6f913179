"""Updates sent back by partners (docs/api.md "Updates back into the registry", protocol §5.2).

The envelope is checked when the batch is received; each record is validated by the worker
against these models, so one bad record is rejected with its reasons and never sinks the
others. Models forbid unknown fields; fields the registry derives get their own reason
(see ``app.services.ingest.rules``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from app.models.registry import (
    DISABILITIES,
    EDUCATION_LEVELS,
    ELECTRICAL,
    EMPLOYMENT,
    GAS,
    KITCHEN,
    MARITAL,
    RELATIONSHIPS,
    TOILET_TYPES,
)
from app.schemas.base import BodyModel, IsoDate
from app.schemas.cnic import Cnic

UPDATE_KINDS = (
    "member_birth",
    "member_death",
    "member_update",
    "address_change",
    "phone_change",
    "household_survey",
    "new_household",
    "member_move",
)
OUTCOMES = ("applied", "rejected", "conflict", "unchanged")


def one_of(values: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return value

    return check


Relationship = Annotated[str, AfterValidator(one_of(RELATIONSHIPS))]
Marital = Annotated[str, AfterValidator(one_of(MARITAL))]
Education = Annotated[str, AfterValidator(one_of(EDUCATION_LEVELS))]
Employment = Annotated[str, AfterValidator(one_of(EMPLOYMENT))]
Disability = Annotated[str, AfterValidator(one_of(DISABILITIES))]
Toilet = Annotated[str, AfterValidator(one_of(TOILET_TYPES))]
Electrical = Annotated[str, AfterValidator(one_of(ELECTRICAL))]
Gas = Annotated[str, AfterValidator(one_of(GAS))]
Kitchen = Annotated[str, AfterValidator(one_of(KITCHEN))]
Gender = Literal["male", "female"]
Name = Annotated[str, Field(min_length=1, max_length=120)]
GeoCode = Annotated[str, Field(min_length=1, max_length=16)]
RegistryId = Annotated[int, Field(ge=1, le=2**63 - 1)]
Count = Annotated[int, Field(ge=0, le=1000)]
Land = Annotated[float, Field(ge=0, le=100_000)]


class _Strict(BodyModel):
    """Unknown fields refused; ``null`` for an optional field is the field left out."""


class Indicators(_Strict):
    """PMT indicators (§4.2.1 xi-xvii); omitted ones keep their registry value."""

    rooms: Annotated[int, Field(ge=0, le=50)] | None = None
    toilet_type: Toilet | None = None
    electrical: list[Electrical] | None = None
    gas: list[Gas] | None = None
    kitchen: list[Kitchen] | None = None
    cows: Count | None = None
    goats: Count | None = None
    buffaloes: Count | None = None
    bullocks: Count | None = None
    lambs: Count | None = None
    land_muraba: Land | None = None
    land_acre: Land | None = None
    land_kanal: Land | None = None
    land_marla: Land | None = None


class MemberIn(_Strict):
    """A person joining the registry (a newborn, or a member of a new household)."""

    name: Name
    gender: Gender
    date_of_birth: IsoDate
    relationship: Relationship
    marital_status: Marital = "never_married"
    cnic: Cnic | None = None
    education: Education | None = None
    employment: Employment | None = None
    disabilities: list[Disability] | None = None


class _Target(_Strict):
    ref: Annotated[str, Field(min_length=1, max_length=120)]
    household_id: RegistryId | None = None
    cnic: Cnic | None = None
    expected_version: Annotated[int, Field(ge=1)] | None = None


class _MemberTarget(_Target):
    # A member without a CNIC (a child) is named by household_id + member_id.
    member_id: RegistryId | None = None


class MemberBirth(_Target):
    kind: Literal["member_birth"]
    member: MemberIn
    mother_cnic: Cnic | None = None
    mother_member_id: RegistryId | None = None


class MemberDeath(_MemberTarget):
    kind: Literal["member_death"]
    date_of_death: IsoDate


class MemberUpdate(_MemberTarget):
    kind: Literal["member_update"]
    marital_status: Marital | None = None
    education: Education | None = None
    employment: Employment | None = None
    disabilities: list[Disability] | None = None
    # A CNIC issued to a member who had none (a child turning 18).
    new_cnic: Cnic | None = None


class _Placement(_Strict):
    """Where a household lives: an address and its geography codes (checked for nesting)."""

    address: Annotated[str, Field(min_length=1, max_length=500)]
    province: GeoCode | None = None
    division: GeoCode | None = None
    district: GeoCode
    tehsil: GeoCode
    union_council: GeoCode
    village: GeoCode | None = None


class AddressChange(_Target, _Placement):
    kind: Literal["address_change"]


class PhoneChange(_Target):
    kind: Literal["phone_change"]
    phone: Annotated[str, Field(min_length=1, max_length=20)]


class HouseholdSurvey(_Target):
    kind: Literal["household_survey"]
    indicators: Indicators
    surveyed_on: IsoDate | None = None


class NewHouseholdIn(Indicators, _Placement):
    form_number: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    phone: Annotated[str, Field(min_length=1, max_length=20)] | None = None
    surveyed_on: IsoDate
    members: Annotated[list[MemberIn], Field(min_length=1, max_length=60)]


class NewHousehold(_Strict):
    ref: Annotated[str, Field(min_length=1, max_length=120)]
    kind: Literal["new_household"]
    household: NewHouseholdIn


class MemberMove(_MemberTarget):
    kind: Literal["member_move"]
    to_household_id: RegistryId
    # The member's relationship to the head of the receiving household.
    relationship: Relationship = "other_relative"


UpdateRecord = Annotated[
    MemberBirth
    | MemberDeath
    | MemberUpdate
    | AddressChange
    | PhoneChange
    | HouseholdSurvey
    | NewHousehold
    | MemberMove,
    Field(discriminator="kind"),
]


class UpdateBatchIn(BodyModel):
    """The request body (documentation; the envelope is checked while it streams in, by
    ``app.services.ingest.store.check_envelope``, to the same rules)."""

    dry_run: bool = False
    records: list[dict[str, Any]] = Field(
        min_length=1,
        description="Records of the kinds in docs/api.md; each has a partner-chosen `ref`.",
    )


class BatchAccepted(BaseModel):
    batch_id: uuid.UUID
    status: str
    records: int


class Counts(BaseModel):
    applied: int = 0
    rejected: int = 0
    conflict: int = 0
    unchanged: int = 0


class RecordResult(BaseModel):
    ref: str | None
    outcome: str
    reasons: list[str]
    household_id: int | None
    member_id: int | None


class BatchStatus(BaseModel):
    batch_id: uuid.UUID
    status: str
    dry_run: bool
    records: int
    received_at: str
    finished_at: str | None
    stopped: str | None = Field(
        default=None,
        description="Why the batch was stopped before all of it was applied (its agreement "
        "was suspended, revoked or expired); null for a batch that ran to its end",
    )
    counts: Counts
    results: list[RecordResult]


class HistoryEntry(BaseModel):
    version: int
    change: str
    member_id: int | None
    source: str
    batch_id: str | None
    ref: str | None
    actor: str | None
    changed_at: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class HouseholdHistory(BaseModel):
    household_id: int
    current_version: int
    items: list[HistoryEntry]
