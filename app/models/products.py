"""Published aggregates for partners: the query log, the populations the differencing
control compares, its hash key, stored analyses."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
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
    agreement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agreements.id"), nullable=False)
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
        ),
        Index("ix_aggregate_selections_size", "agreement_id", "households"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    agreement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agreements.id"), nullable=False)
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
    agreement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agreements.id"), nullable=False)
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
