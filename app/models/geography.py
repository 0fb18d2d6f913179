"""Administrative units: province > division > district > tehsil > union council > village."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

LEVELS = ("province", "division", "district", "tehsil", "union_council", "village")


class GeoUnit(Base):
    __tablename__ = "geo_units"
    __table_args__ = (
        CheckConstraint(
            "level IN ('province','division','district','tehsil','union_council','village')",
            name="level",
        ),
        Index("ix_geo_units_level_parent", "level", "parent_code"),
    )

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    level: Mapped[str] = mapped_column(String(16), nullable=False)
    name_en: Mapped[str] = mapped_column(String(120), nullable=False)
    name_ur: Mapped[str | None] = mapped_column(String(120))
    parent_code: Mapped[str | None] = mapped_column(ForeignKey("geo_units.code"))
    # Every ancestor's code, so a unit's province/division/district are one read away.
    province_code: Mapped[str] = mapped_column(String(16), nullable=False)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    # Balochistan and the 16 test-phase districts have no geo-points (§4.2.2).
    geo_tagged: Mapped[bool] = mapped_column(nullable=False, default=True)
    cnic_digit: Mapped[str | None] = mapped_column(String(1))
