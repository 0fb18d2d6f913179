"""Published aggregates: for partners, the query log, the populations the differencing
control compares, its hash key and stored analyses; for the public, the cube the worker
refreshes and the answers built from it."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

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
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

AGGREGATE_PRODUCTS = ("summaries", "analysis")


class AggregateQuery(Base):
    """Each partner aggregate query answered (summaries, analysis): who, which households
    (the normalized filters), grouped how, when. The differencing check reads it."""

    __tablename__ = "aggregate_queries"
    __table_args__ = (
        CheckConstraint("product IN ('summaries','analysis','maps')", name="product"),
        Index("ix_aggregate_queries_agreement", "agreement_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # NULL: the registry's own staff (the M&E team), one recipient (see differencing).
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agreements.id"))
    client_id: Mapped[str] = mapped_column(String(64), nullable=False)
    product: Mapped[str] = mapped_column(String(16), nullable=False)
    filters: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    dims: Mapped[list[str]] = mapped_column(ARRAY(String(32)), nullable=False)
    households: Mapped[int] = mapped_column(BigInteger, nullable=False)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class AggregateSelection(Base):
    """A population an agreement's aggregate query was answered for, as the differencing
    control compares it (app.services.products.differencing): its size and its sketch, once
    per distinct (filters, population) of the agreement, naming the latest query with both."""

    __tablename__ = "aggregate_selections"
    __table_args__ = (
        UniqueConstraint(
            "agreement_id",
            "filters_digest",
            "population_digest",
            name="uq_aggregate_selections_population",
            # The staff's populations (no agreement) are one recipient's too.
            postgresql_nulls_not_distinct=True,
        ),
        Index("ix_aggregate_selections_size", "agreement_id", "households"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # NULL: the registry's own staff (the M&E team), one recipient (see differencing).
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agreements.id"))
    query_id: Mapped[int] = mapped_column(ForeignKey("aggregate_queries.id"), nullable=False)
    filters_digest: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    population_digest: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    households: Mapped[int] = mapped_column(BigInteger, nullable=False)
    coarse: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)
    sketch: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class DifferencingKey(Base):
    """The one random seed of the differencing sketches' household hash (never changes:
    sketches made under another seed could not be compared)."""

    __tablename__ = "differencing_key"
    __table_args__ = (CheckConstraint("id = 1", name="single"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    seed: Mapped[int] = mapped_column(BigInteger, nullable=False)


class AnalysisResult(Base):
    """A custom cross-tab (category ii) as it was published, re-read by its id."""

    __tablename__ = "analysis_results"
    __table_args__ = (Index("ix_analysis_results_agreement", "agreement_id", "computed_at"),)

    id: Mapped[uuid.UUID] = mapped_column(
        UUID, primary_key=True, server_default=text("gen_random_uuid()")
    )
    # NULL: the registry's own staff (the M&E team), one recipient (see differencing).
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agreements.id"))
    client_id: Mapped[str] = mapped_column(String(64), nullable=False)
    query_id: Mapped[int] = mapped_column(ForeignKey("aggregate_queries.id"), nullable=False)
    request: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    # JSON, not JSONB: the cells come back exactly as they were published (key order kept).
    cells: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    margins: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    disclosure: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    households: Mapped[int] = mapped_column(BigInteger, nullable=False)
    members: Mapped[int] = mapped_column(BigInteger, nullable=False)
    registry_version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    computed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


# -- the public products, precomputed by the worker (app.services.products.cube) ------------


class PublicRefresh(Base):
    """One refresh of the public cube: the registry it describes (its data version and the
    instant of the snapshot it was counted from) and what it cost. The latest row is the
    one every public answer is built from."""

    __tablename__ = "public_refreshes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    registry_version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # current_date of the snapshot: age brackets move with it, so a new day rebuilds all.
    as_of_date: Mapped[date] = mapped_column(Date, nullable=False)
    full: Mapped[bool] = mapped_column(Boolean, nullable=False)
    districts: Mapped[int] = mapped_column(Integer, nullable=False)
    answers: Mapped[int] = mapped_column(Integer, nullable=False)
    seconds: Mapped[float] = mapped_column(Float, nullable=False)
    finished_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class PublicProductsDirty(Base):
    """Districts whose households or members changed since the last refresh: one row per
    statement that changed something the public products count, written by triggers;
    ``{*}`` means everything (a large statement, a TRUNCATE). A refresh deletes the rows
    its snapshot sees."""

    __tablename__ = "public_products_dirty"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    districts: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class PublicCube(Base):
    """The summaries' cube: per district (with its division and province as the households
    carry them) x poverty band x member group, the households and living members. ``gender``
    and ``age_bracket`` are ``''`` when the row does not split by them: the four member
    subsets {}, {gender}, {age_bracket}, {gender, age_bracket}."""

    __tablename__ = "public_cube"

    province_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    division_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    district_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    poverty_band: Mapped[str] = mapped_column(String(16), primary_key=True)
    gender: Mapped[str] = mapped_column(String(8), primary_key=True)
    age_bracket: Mapped[str] = mapped_column(String(8), primary_key=True)
    households: Mapped[int] = mapped_column(BigInteger, nullable=False)
    members: Mapped[int] = mapped_column(BigInteger, nullable=False)


class PublicMapCube(Base):
    """The maps' cube: per district and H3 cell at each public resolution (0-5, each
    household's own cell at that resolution), the located households, those without a
    score, the sum of the scores in hundredths, and the histogram of whole-number scores
    (101 little-endian int32: floor(score) = 0 ... 100)."""

    __tablename__ = "public_map_cube"

    province_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    division_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    district_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    resolution: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    h3: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    households: Mapped[int] = mapped_column(BigInteger, nullable=False)
    unscored: Mapped[int] = mapped_column(BigInteger, nullable=False)
    score_cents: Mapped[int] = mapped_column(BigInteger, nullable=False)
    bins: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class PublicDistrict(Base):
    """Per district: its households and those without a location (the maps count them)."""

    __tablename__ = "public_districts"

    province_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    division_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    district_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    households: Mapped[int] = mapped_column(BigInteger, nullable=False)
    unlocated: Mapped[int] = mapped_column(BigInteger, nullable=False)


class PublicAnswer(Base):
    """A finished public answer (summary or map, its exact bytes and ETag) for one refresh
    and one normalized query, shared by every process and replica."""

    __tablename__ = "public_answers"

    refresh_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    etag: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
