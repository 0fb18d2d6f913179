"""Households and their members (§3.1); families are derived (see the ``families`` view)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Numeric,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamps

TOILET_TYPES = ("none", "open_pit", "covered_pit", "flush_septic", "flush_sewer")
EDUCATION_LEVELS = (
    "none",
    "primary",
    "middle",
    "matric",
    "intermediate",
    "graduate",
    "postgraduate",
)
EMPLOYMENT = (
    "employed",
    "self_employed",
    "unemployed",
    "student",
    "homemaker",
    "retired",
    "unable_to_work",
    "child",
)
MARITAL = ("never_married", "married", "divorced", "separated", "widowed")
RELATIONSHIPS = (
    "head",
    "spouse",
    "son",
    "daughter",
    "father",
    "mother",
    "brother",
    "sister",
    "son_in_law",
    "daughter_in_law",
    "grandson",
    "granddaughter",
    "other_relative",
    "non_relative",
)
DISABILITIES = ("hearing", "visual", "speech", "mental", "lower_limb", "upper_limb")

# Indicator columns on the household (dimensions xi-xvii); PMT features are built from these.
ELECTRICAL = (
    "refrigerator",
    "air_conditioner",
    "freezer",
    "television",
    "washing_machine",
    "microwave_oven",
    "air_cooler",
)
GAS = ("geyser", "heater")
KITCHEN = ("cooking_stove", "cooking_range")
LIVESTOCK = ("cows", "goats", "buffaloes", "bullocks", "lambs")
LAND_UNITS = ("muraba", "acre", "kanal", "marla")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Household(Timestamps, Base):
    __tablename__ = "households"
    __table_args__ = (
        CheckConstraint(
            "pmt_score IS NULL OR (pmt_score >= 0 AND pmt_score <= 100)", name="pmt_range"
        ),
        CheckConstraint("rooms IS NULL OR rooms BETWEEN 0 AND 50", name="rooms_range"),
        CheckConstraint(
            "toilet_type IS NULL OR " + _in("toilet_type", TOILET_TYPES), name="toilet_type"
        ),
        CheckConstraint("version >= 1", name="version_positive"),
        Index("ix_households_province_id", "province_code", "id"),
        Index("ix_households_division_id", "division_code", "id"),
        Index("ix_households_district_id", "district_code", "id"),
        Index("ix_households_tehsil_id", "tehsil_code", "id"),
        Index("ix_households_uc_id", "union_council_code", "id"),
        # An agreement's geography (codes at any level) is read through indexes (0018).
        Index("ix_households_village", "village_code"),
        # Free space per page for HOT updates (migration 0004).
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(start=1), primary_key=True)
    form_number: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    province_code: Mapped[str] = mapped_column(String(16), nullable=False)
    division_code: Mapped[str] = mapped_column(String(16), nullable=False)
    district_code: Mapped[str] = mapped_column(String(16), nullable=False)
    tehsil_code: Mapped[str] = mapped_column(String(16), nullable=False)
    union_council_code: Mapped[str] = mapped_column(String(16), nullable=False)
    village_code: Mapped[str] = mapped_column(ForeignKey("geo_units.code"), nullable=False)
    address: Mapped[str] = mapped_column(Text, nullable=False)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    phone: Mapped[str | None] = mapped_column(String(16))
    surveyed_on: Mapped[date] = mapped_column(Date, nullable=False)

    # PMT indicators (§4.2.1 xi-xvii).
    rooms: Mapped[int | None] = mapped_column(SmallInteger)
    toilet_type: Mapped[str | None] = mapped_column(String(16))
    electrical: Mapped[list[str]] = mapped_column(
        ARRAY(String(24)), nullable=False, server_default=text("'{}'")
    )
    gas: Mapped[list[str]] = mapped_column(
        ARRAY(String(24)), nullable=False, server_default=text("'{}'")
    )
    kitchen: Mapped[list[str]] = mapped_column(
        ARRAY(String(24)), nullable=False, server_default=text("'{}'")
    )
    cows: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    goats: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    buffaloes: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    bullocks: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    lambs: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    land_muraba: Mapped[Decimal] = mapped_column(Numeric(8, 2), nullable=False, server_default="0")
    land_acre: Mapped[Decimal] = mapped_column(Numeric(8, 2), nullable=False, server_default="0")
    land_kanal: Mapped[Decimal] = mapped_column(Numeric(8, 2), nullable=False, server_default="0")
    land_marla: Mapped[Decimal] = mapped_column(Numeric(8, 2), nullable=False, server_default="0")

    pmt_score: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    poverty_band: Mapped[str | None] = mapped_column(String(16))
    pmt_version: Mapped[str | None] = mapped_column(ForeignKey("pmt_models.version"))
    version: Mapped[int] = mapped_column(nullable=False, server_default="1")


class Member(Timestamps, Base):
    __tablename__ = "members"
    __table_args__ = (
        CheckConstraint("cnic IS NULL OR cnic ~ '^[0-9]{13}$'", name="cnic_format"),
        CheckConstraint("gender IN ('male','female')", name="gender"),
        CheckConstraint(_in("relationship", RELATIONSHIPS), name="relationship"),
        CheckConstraint(_in("marital_status", MARITAL), name="marital_status"),
        CheckConstraint(
            "education IS NULL OR " + _in("education", EDUCATION_LEVELS), name="education"
        ),
        CheckConstraint(
            "employment IS NULL OR " + _in("employment", EMPLOYMENT), name="employment"
        ),
        CheckConstraint(
            "deceased_on IS NULL OR deceased_on >= date_of_birth", name="death_after_birth"
        ),
        Index("uq_members_cnic", "cnic", unique=True, postgresql_where=text("cnic IS NOT NULL")),
        Index("ix_members_household_id", "household_id"),
        {"postgresql_with": {"fillfactor": 90}},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(start=1), primary_key=True)
    household_id: Mapped[int] = mapped_column(
        ForeignKey("households.id", ondelete="CASCADE"), nullable=False
    )
    cnic: Mapped[str | None] = mapped_column(String(13))
    name: Mapped[str] = mapped_column(String(120), nullable=False)
    gender: Mapped[str] = mapped_column(String(8), nullable=False)
    date_of_birth: Mapped[date] = mapped_column(Date, nullable=False)
    relationship: Mapped[str] = mapped_column(String(20), nullable=False)
    marital_status: Mapped[str] = mapped_column(String(16), nullable=False)
    # NULL where the survey did not collect it (Balochistan / test-phase districts, §4.2.2).
    disabilities: Mapped[list[str] | None] = mapped_column(ARRAY(String(16)))
    education: Mapped[str | None] = mapped_column(String(16))
    employment: Mapped[str | None] = mapped_column(String(16))
    deceased_on: Mapped[date | None] = mapped_column(Date)


class HouseholdHistory(Base):
    """The state before and after every change, with where it came from."""

    __tablename__ = "household_history"
    __table_args__ = (
        CheckConstraint(
            "source IN ('survey','partner_batch','staff','pmt_recompute')", name="source"
        ),
        Index("ix_household_history_household", "household_id", "id"),
        # As-of lists (migration 0012): rows after an instant, and a member's rows.
        Index("ix_household_history_changed", "changed_at", "id"),
        Index(
            "ix_household_history_member",
            "member_id",
            "id",
            postgresql_where=text("member_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    household_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    member_id: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(nullable=False)
    change: Mapped[str] = mapped_column(String(32), nullable=False)
    before: Mapped[dict[str, object] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, object] | None] = mapped_column(JSONB)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    batch_id: Mapped[str | None] = mapped_column(String(40))
    ref: Mapped[str | None] = mapped_column(String(120))
    actor: Mapped[str | None] = mapped_column(String(120))
    changed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class PmtModel(Base):
    """A versioned PMT model stored as data: intercept, weights per feature, band cut-offs."""

    __tablename__ = "pmt_models"
    __table_args__ = (
        Index(
            "uq_pmt_models_current", "is_current", unique=True, postgresql_where=text("is_current")
        ),
    )

    version: Mapped[str] = mapped_column(String(40), primary_key=True)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    intercept: Mapped[float] = mapped_column(Float, nullable=False)
    weights: Mapped[dict[str, float]] = mapped_column(JSONB, nullable=False)
    # [{"band": "ultra_poor", "below": 16.17}, ..., {"band": "well_off", "below": null}]
    bands: Mapped[list[dict[str, object]]] = mapped_column(JSONB, nullable=False)
    illustrative: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    is_current: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
