"""The one error body of the API: RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ProblemError(BaseModel):
    """One invalid input of a 422: where it is and what is wrong with it."""

    loc: list[str] = Field(default_factory=list, examples=[["query", "distric"]])
    field: str = Field(examples=["distric"])
    message: str = Field(examples=["unknown query parameter 'distric'"])
    type: str = Field(examples=["extra_forbidden"])


class Problem(BaseModel):
    """Every 4xx and 5xx answer (except the token endpoint's OAuth errors) has this body."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", examples=["about:blank"])
    title: str = Field(examples=["Unprocessable Entity"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["distric: unknown query parameter 'distric'"])
    errors: list[ProblemError] | None = Field(
        default=None, description="422 only: every invalid input, with its location"
    )
