"""Score explanations and what-if targeting simulations: bodies and answers."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from app.schemas.base import UUID_RE, StrictModel
from app.schemas.programmes import RuleIn

Word = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]


class Contribution(BaseModel):
    indicator: str
    value: float
    weight: float
    points: float = Field(description="weight x value in cents, apportioned (see rounding)")
    exact_points: float


class BandChange(BaseModel):
    indicator: str
    from_: float = Field(alias="from")
    to: float
    points: float
    new_score: float
    new_band: str
    with_: list[dict[str, Any]] | None = Field(default=None, alias="with")


class BandCrossing(BaseModel):
    edge: float
    lower_band: str
    upper_band: str
    direction: Literal["up", "down"]
    points_needed: float
    changes: list[BandChange]


class ScoreChange(BaseModel):
    changed_at: str
    version: int
    pmt_score: float | None
    poverty_band: str | None
    pmt_version: str | None
    previous_score: float | None
    previous_band: str | None
    previous_version: str | None
    points: float | None
    model_changed: bool
    moved_by: list[dict[str, Any]]


class ScoreExplanation(BaseModel):
    household_id: str
    pmt_version: str
    illustrative: bool
    intercept: float
    contributions: list[Contribution]
    bound_adjustment: float
    raw_score: float
    pmt_score: float
    poverty_band: str
    registry_score: float | None
    registry_band: str | None
    matches_registry: bool
    rounding: str
    bands: list[dict[str, Any]]
    band_crossings: list[BandCrossing]
    history: list[ScoreChange]


class PartnerContribution(BaseModel):
    indicator: str
    dimension: str = Field(description="the sharing dimension the indicator is read from")
    value: float
    weight: float | None = Field(
        default=None, description="unlocked dimensions only (household composition)"
    )
    points: float | None = Field(
        default=None, description="weight x value, rounded half up to cents; with the weight"
    )


class PartnerScoreExplanation(BaseModel):
    """A partner's explanation: nothing that is a function of a locked weight (docs/api.md)."""

    household_id: str
    pmt_version: str
    illustrative: bool
    pmt_score: float
    poverty_band: str
    contributions: list[PartnerContribution]
    withheld_dimensions: list[str] = Field(
        description="locked dimensions the model reads that the agreement does not grant"
    )
    bands: list[dict[str, Any]]
    band_crossings: list[BandCrossing]
    history: list[ScoreChange]


Money = Annotated[Decimal, Field(ge=0, le=Decimal("1000000000"), decimal_places=2)]


class SimulationIn(StrictModel):
    """A what-if: a candidate PMT model version and/or a candidate rule, against the live
    rule (a programme's current rule, or ``live_rule``) and the registry's live scores."""

    programme_id: Annotated[
        str | None,
        Field(
            pattern=rf"^({UUID_RE}|[a-z0-9][a-z0-9_-]{{1,39}})$",
            description="the programme (id or code) whose rule in force is the live rule",
        ),
    ] = None
    live_rule: Annotated[
        RuleIn | None, Field(description="the live rule, when no programme is named")
    ] = None
    pmt_version: Annotated[Word | None, Field(description="candidate PMT model version")] = None
    rule: Annotated[RuleIn | None, Field(description="candidate rule")] = None
    transfer_amount: Annotated[
        Money, Field(description="PKR per family per payment, for the cost (JSON number or string)")
    ]
    poor_bands: Annotated[
        list[Word] | None,
        Field(max_length=10, description="live bands counted as poor (inclusion/exclusion)"),
    ] = None
    label: Annotated[str, Field(max_length=200)] = ""


class SimulationAccepted(BaseModel):
    simulation_id: str
    status: str
    status_url: str


class SimulationProgress(BaseModel):
    ranges_done: int = Field(description="ranges of household ids read so far")
    ranges: int | None = Field(description="ranges to read (null until the run starts)")
    percent: int = Field(ge=0, le=100)


class Simulation(BaseModel):
    simulation_id: str
    status: Literal["pending", "running", "done", "failed"]
    requested_by: str
    created_at: str
    finished_at: str | None
    attempts: int
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    progress: SimulationProgress
