"""Published aggregates: summary tables (category i) and custom analysis (category ii).

Answers are documentation models (the bodies are built as bytes); the analysis request is
a strict body (unknown fields are 422).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.schemas.base import StrictModel
from app.schemas.geography import CODE_PATTERN

Band = Literal["ultra_poor", "very_poor", "poor", "non_poor", "well_off"]
MemberType = Literal["children", "adults", "elderly", "ever_married_women", "disabled"]
Measure = Literal["households", "members", "mean_pmt_score", "share_below"]
Code = Annotated[str, Field(pattern=CODE_PATTERN)]
DimensionName = Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")]
Codes = Annotated[list[Code], Field(max_length=200)]
DEFAULT_MEASURES: tuple[Measure, ...] = ("households", "members")

# A cell: its dimension values (null in a margin: the total over that dimension) and counts.
CellOut = dict[str, str | int | float | None]


class DisclosureOut(BaseModel):
    """What disclosure control did to the table."""

    suppressed_below: int = Field(description="Counts of fewer households are withheld")
    rounding_base: int = Field(description="Published counts are multiples of it")
    dominance: float
    suppressed_cells: int
    shares_withheld: int
    rules: dict[str, int] = Field(description="Cells withheld by each rule")
    method: str


class _SummaryBase(BaseModel):
    rows: list[CellOut] = Field(
        description="Interior cells: a value for each group_by dimension, households and "
        "members (null: withheld)"
    )
    margins: list[CellOut] = Field(
        description="Totals: null for each dimension totalled over; the grand total last"
    )
    suppressed_below: int
    disclosure: DisclosureOut
    registry_version: int = Field(description="The registry data version counted")


class PublicSummary(_SummaryBase):
    as_of: datetime = Field(
        description="The instant of the registry snapshot the worker's refresh counted (RFC 3339)"
    )


class PartnerSummary(_SummaryBase):
    query_id: int = Field(description="This query's number in the agreement's query log")


class AnalysisFilters(StrictModel):
    """The beneficiary filters (ANDed; each list ORs its values)."""

    province: Codes = Field(default_factory=list)
    division: Codes = Field(default_factory=list)
    district: Codes = Field(default_factory=list)
    tehsil: Codes = Field(default_factory=list)
    union_council: Codes = Field(default_factory=list)
    # strict: a JSON number only (false is not 0, "30" is not 30).
    score_min: float | None = Field(default=None, ge=0, le=100, strict=True)
    score_max: float | None = Field(default=None, ge=0, le=100, strict=True)
    poverty_band: list[Band] = Field(default_factory=list, max_length=5)
    member_type: list[MemberType] = Field(default_factory=list, max_length=5)


class AnalysisRequest(StrictModel):
    """A cross-tab of ``rows`` x ``columns`` dimensions with the ``measures`` asked for."""

    rows: list[DimensionName] = Field(min_length=1, max_length=4, examples=[["district"]])
    columns: list[DimensionName] = Field(
        default_factory=list, max_length=3, examples=[["poverty_band", "gender"]]
    )
    measures: list[Measure] = Field(
        default_factory=lambda: list(DEFAULT_MEASURES), min_length=1, max_length=4
    )
    cut_off: float | None = Field(
        default=None,
        ge=0,
        le=100,
        strict=True,
        description="PMT score for share_below (households with a score below it)",
        examples=[32],
    )
    filters: AnalysisFilters = Field(default_factory=AnalysisFilters)


class Analysis(BaseModel):
    analysis_id: str
    query_id: int = Field(description="Its number in the agreement's query log")
    computed_at: str
    registry_version: int
    request: AnalysisRequest
    cells: list[CellOut] = Field(description="Interior cells with the measures asked for")
    margins: list[CellOut]
    disclosure: DisclosureOut
