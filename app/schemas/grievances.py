"""Grievances: the public filing and status, and the bodies of staff actions.

Every body is a :class:`StrictModel`: an unknown field is a 422, never dropped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from app.schemas.base import PARAGRAPHS, IsoDate, StrictModel
from app.schemas.cnic import Cnic
from app.schemas.updates import Indicators

Reason = Literal["wrong_members", "wrong_assets", "resurvey", "deceased_listed", "other"]
REASONS: tuple[str, ...] = Reason.__args__  # type: ignore[attr-defined]
Text = Annotated[str, Field(min_length=1, max_length=4000)]
Notes = Annotated[str, Field(max_length=4000)]


class GrievanceForm(StrictModel):
    """``POST /v1/public/grievances``: a household member's grievance about the score."""

    cnic: Cnic
    reason: Reason = Field(
        description="wrong_members, wrong_assets, resurvey (a re-survey request), "
        "deceased_listed (a deceased member still listed) or other"
    )
    details: Annotated[str, Field(max_length=2000), PARAGRAPHS] = ""
    # At most 20 characters, as the column holds.
    contact_phone: (
        Annotated[str, Field(max_length=20, pattern=r"^\+?[0-9][0-9 -]{5,19}$")] | None
    ) = None

    @model_validator(mode="after")
    def _other_is_explained(self) -> GrievanceForm:
        if self.reason == "other" and not self.details:
            raise ValueError("details are required when the reason is 'other'")
        return self


class GrievanceAccepted(BaseModel):
    reference: str = Field(examples=["GRV-2026-000123"])
    status_url: str = Field(
        description="Shown once: its token is the only way to follow the grievance"
    )


class TimelineStep(BaseModel):
    status: str
    at: datetime


class PublicResolution(BaseModel):
    outcome: Literal["score_changed", "score_unchanged", "rejected"]
    reasons: str
    at: datetime


class GrievanceStatus(BaseModel):
    """The filer's view: no names, no score, no staff, the CNIC masked."""

    reference: str
    status: str
    reason: str
    cnic: str = Field(description="masked", examples=["35202-*******-3"])
    filed_at: datetime
    timeline: list[TimelineStep]
    resolution: PublicResolution | None


class NoteIn(StrictModel):
    """``triage``, ``order_resurvey``: an internal note (never shown to the filer)."""

    notes: Notes = ""


class ReasonsIn(StrictModel):
    """``resolve``, ``reject``: the reasons, shown to the filer (write no personal data)."""

    reasons: Text
    notes: Notes = ""


class ResurveyIn(StrictModel):
    """``POST /v1/staff/grievances/{grievance_id}/resurvey``: the re-survey's result, as
    a ``household_survey`` record's fields (the household is the grievance's)."""

    indicators: Indicators
    surveyed_on: IsoDate | None = None
    expected_version: Annotated[int, Field(ge=1)] | None = None
    notes: Notes = ""
