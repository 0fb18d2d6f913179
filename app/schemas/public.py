"""What the public may see: a poverty level by CNIC, nothing that identifies a household."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.cnic import Cnic, mask_cnic, parse_cnic

__all__ = ["Cnic", "PublicScore", "mask_cnic", "parse_cnic"]


class PublicScore(BaseModel):
    """A public look-up answer: no name, address or household id (§4.2.4 iii)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cnic: str = Field(description="The CNIC, masked", examples=["35202-*******-3"])
    pmt_score: float | None = Field(description="PMT score, 0-100, lower is poorer")
    poverty_band: str | None = Field(examples=["ultra_poor"])
    surveyed_on: date
    pmt_version: str | None
