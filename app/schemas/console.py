"""``GET /v1/staff/my-work``: what waits on the caller (app.services.console.queues)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field


class WaitingRequest(BaseModel):
    request_id: str
    reference: str
    status: str
    organization: str | None
    organization_type: str
    submitted_at: datetime
    waiting_since: datetime = Field(description="When the request entered its status")
    waited_days: float
    actions: list[str] = Field(description="What the caller's roles may do to it now")


class RequestQueue(BaseModel):
    count: int
    counts: dict[str, int] = Field(description="Per status waiting on the caller's roles")
    items: list[WaitingRequest] = Field(description="Waiting longest first")


class WaitingGrievance(BaseModel):
    grievance_id: str
    reference: str
    status: str
    reason: str
    filed_at: datetime
    days_open: float
    due_at: datetime = Field(description="The target it is held to next, or has missed")
    overdue: Literal["triage", "resolve"] | None


class GrievanceCounts(BaseModel):
    new: int
    overdue: int


class GrievanceQueue(BaseModel):
    count: int = Field(description="New (received) or overdue")
    counts: GrievanceCounts
    items: list[WaitingGrievance] = Field(description="Filed longest ago first")


class DueObligation(BaseModel):
    obligation_id: str
    kind: str
    description: str
    due_on: date
    status: Literal["open", "overdue"]
    met_at: None
    deliverable: None
    agreement_id: str | None
    request: str
    organization: str | None
    days_past_due: int = Field(description="Days since it fell due; negative: days left")


class ObligationCounts(BaseModel):
    overdue: int
    due_soon: int


class ObligationQueue(BaseModel):
    count: int
    counts: ObligationCounts
    items: list[DueObligation] = Field(description="Soonest due (most overdue) first")


class DueSpotCheck(BaseModel):
    agreement_id: str
    organization_id: str
    organization: str
    categories: list[str]
    valid_from: datetime
    valid_to: datetime
    last_check_at: datetime | None
    last_outcome: Literal["passed", "failed"] | None
    due_at: datetime
    days_overdue: float


class SpotCheckCounts(BaseModel):
    never_checked: int


class SpotCheckQueue(BaseModel):
    count: int
    counts: SpotCheckCounts
    items: list[DueSpotCheck] = Field(description="Longest due first")


class MyWork(BaseModel):
    staff_id: str
    roles: list[str]
    as_of: datetime
    limit: int
    # Null: not a section of the caller's roles (or its token lacks the scope that reads it).
    requests: RequestQueue | None = Field(description="Roles officer, committee, secretary")
    grievances: GrievanceQueue | None = Field(description="Role officer")
    obligations: ObligationQueue | None = Field(description="Role officer")
    spot_checks: SpotCheckQueue | None = Field(description="Role me")
