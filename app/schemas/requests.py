"""Data-sharing requests: the form (Annex I, §4.1.3 a-j) and the bodies of staff actions.

Every body is a :class:`StrictModel`: an unknown field is a 422, never dropped.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from app.models.sharing import ORGANIZATION_TYPES
from app.schemas.base import PARAGRAPHS, UUID_RE, IsoDate, StrictModel
from app.schemas.geography import CODE_PATTERN

OrganizationType = Literal[
    "government", "semi_autonomous", "academic", "local_ngo", "donor", "private"
]
assert set(OrganizationType.__args__) == set(ORGANIZATION_TYPES)  # type: ignore[attr-defined]

Category = Literal["i", "ii", "iii", "iv", "v", "vi", "vii", "viii"]
Storage = Literal["hard_copy", "soft_copy", "vpn"]
GratisCriterion = Literal["a", "b", "c", "d"]
Text = Annotated[str, Field(min_length=1, max_length=4000)]
# Free text of the form: paragraphs (line breaks kept).
Paragraph = Annotated[str, Field(min_length=1, max_length=4000), PARAGRAPHS]
OptionalParagraph = Annotated[str, Field(max_length=4000), PARAGRAPHS]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
GeoCode = Annotated[str, Field(pattern=CODE_PATTERN)]
DimensionName = Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]
# The officer's choice of the organization an agreement is signed with: the id of an
# organization the registry already has, or "new" for a new one.
OrganizationChoice = Annotated[
    str,
    Field(
        pattern=rf"^(new|{UUID_RE})$",
        description='the id of an organization the registry already has, or "new"',
        examples=["new", "7943c351-bce3-427e-9b01-5b8a646052d2"],
    ),
]


class OrganizationIn(StrictModel):
    """a, b: who asks, and how to reach them."""

    name: ShortText
    type: OrganizationType
    contact_name: ShortText
    email: Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
    phone: Annotated[str, Field(pattern=r"^\+?[0-9][0-9 -]{5,19}$")]
    address: Annotated[str, Field(min_length=1, max_length=500), PARAGRAPHS]


class Period(StrictModel):
    """e: when the data would be used."""

    start: IsoDate
    end: IsoDate

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if (self.end - self.start).days > 5 * 366:
            raise ValueError("a request covers at most five years")
        return self


class RequestForm(StrictModel):
    """``POST /v1/requests``: the data request form (Annex I, §4.1.3 a-j)."""

    organization: OrganizationIn
    purpose: Paragraph
    extent_of_use: Paragraph
    period: Period
    storage: Storage
    categories: Annotated[list[Category], Field(min_length=1, max_length=8)]
    dimensions: Annotated[list[DimensionName], Field(max_length=17, default_factory=list)]
    geography: Annotated[
        list[GeoCode],
        Field(
            max_length=200,
            description="unit codes; empty means the whole country",
            default_factory=list,
        ),
    ]
    own_surveys: OptionalParagraph = ""
    methodology: Paragraph
    security_measures: Paragraph
    gratis_criterion: GratisCriterion | None = None
    gratis_justification: OptionalParagraph = ""

    @model_validator(mode="after")
    def _gratis_is_justified(self) -> RequestForm:
        if self.gratis_criterion and not self.gratis_justification:
            raise ValueError("gratis_justification is required with a gratis_criterion")
        if self.gratis_justification and not self.gratis_criterion:
            raise ValueError("gratis_justification needs a gratis_criterion (a, b, c or d)")
        return self


class NoPayload(StrictModel):
    """Actions that carry nothing (``start_review``, ``withdraw``)."""

    notes: Annotated[str, Field(max_length=4000)] = ""


class SignIn(StrictModel):
    """``sign`` (officer). ``organization_id`` is the officer's choice of organization when
    the review made none, or replaces it: required when the form's organization matches
    one the registry already has (same name, spaces and case aside, and type)."""

    notes: Annotated[str, Field(max_length=4000)] = ""
    organization_id: OrganizationChoice | None = None


class ReviewIn(StrictModel):
    """``review`` (officer): exactly one category, and the scope that will be granted."""

    category: Category
    clearance_level: Literal["public", "restricted", "confidential"]
    conditions: Annotated[str, Field(max_length=4000)] = ""
    dimensions: Annotated[list[DimensionName], Field(max_length=17, default_factory=list)]
    geography: Annotated[list[GeoCode], Field(max_length=200, default_factory=list)]
    valid_days: Annotated[int, Field(ge=1, le=5 * 366)] = 365
    # Categories i, ii, vii and viii are priced case by case: the officer sets the amount.
    amount: Annotated[Decimal | None, Field(ge=0, le=10**12, decimal_places=2)] = None
    # Update partners (§5.2.1): what they must send back, how often, checked how.
    update_kinds: Annotated[list[DimensionName], Field(max_length=8, default_factory=list)]
    update_frequency: Literal["weekly", "monthly", "quarterly", "yearly"] | None = None
    quality_checks: Annotated[str, Field(max_length=4000)] = ""
    # Which organization the agreement will be signed with (see SignIn); may wait until sign.
    organization_id: OrganizationChoice | None = None

    @model_validator(mode="after")
    def _update_terms_together(self) -> ReviewIn:
        if bool(self.update_kinds) != (self.update_frequency is not None):
            raise ValueError("update_kinds and update_frequency go together")
        return self


class InterviewIn(StrictModel):
    """``record_interview`` (officer): the compliance interview and methodology check (§5.1.4)."""

    outcome: Literal["passed", "failed"]
    notes: Text


class RecommendIn(StrictModel):
    """``recommend`` (committee), with the gratis assessment when a criterion was claimed."""

    recommendation: Literal["approve", "reject"]
    gratis: bool = False
    notes: Text


class DecisionIn(StrictModel):
    """``approve`` / ``reject`` (Secretary): the reasons are recorded with the decision."""

    reasons: Text


class SpotCheckIn(StrictModel):
    """``POST /v1/staff/agreements/{id}/spot-checks`` (M&E)."""

    outcome: Literal["passed", "failed"]
    findings: Text
    action: Literal["none", "suspend", "revoke"] = "none"

    @model_validator(mode="after")
    def _passed_changes_nothing(self) -> SpotCheckIn:
        if self.outcome == "passed" and self.action != "none":
            raise ValueError("a passed spot check takes no action")
        return self


class ResumeIn(StrictModel):
    """``POST /v1/staff/agreements/{id}/resume`` (Secretary)."""

    reasons: Text


class SuspendIn(StrictModel):
    """``POST /v1/staff/agreements/{id}/suspend`` (Secretary)."""

    reasons: Text


class RevokeIn(StrictModel):
    """``POST /v1/staff/agreements/{id}/revoke`` (Secretary; final)."""

    reasons: Text


class ObligationMetIn(StrictModel):
    """``POST /v1/staff/obligations/{id}/met`` (officer): the deliverable received."""

    deliverable: Text


class RequestAccepted(BaseModel):
    """201 of ``POST /v1/requests``."""

    request_id: str
    reference: str = Field(examples=["DSR-2026-000123"])
    status: str = Field(examples=["submitted"])
    status_url: str = Field(examples=["/v1/requests/DSR-2026-000123?token=..."])


class TimelineStep(BaseModel):
    status: str
    at: datetime


class RequestStatus(BaseModel):
    """The requester's view: no staff notes, no staff names."""

    reference: str
    status: str
    submitted_at: datetime
    timeline: list[TimelineStep]
