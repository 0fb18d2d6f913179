"""PMT scores of a generated chunk, computed as it is generated (before its COPY).

The seed used to load unscored households and re-score them in SQL afterwards, which read
the whole members table again once the load was done. Here each household is scored in the
generating thread by the model's own Python twin (``PmtModel.raw_score``, ``pmt.clamp``,
``pmt.band_of``), from its indicators and its living members' totals, so the score arrives
with the row and loading stays one pass. ``tests/seed`` checks that ``nser pmt recompute``
(the SQL) then changes nothing: the two computations agree to the cent.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from app.models.registry import EDUCATION_LEVELS
from app.services.pmt import model as pmt
from app.services.pmt.features import MemberAggregate
from app.services.seed.members import LivingTotals

# What the PMT's Python features read of a household row.
_INDICATORS = (
    "rooms",
    "toilet_type",
    "electrical",
    "gas",
    "kitchen",
    "cows",
    "goats",
    "buffaloes",
    "bullocks",
    "lambs",
    "land_muraba",
    "land_acre",
    "land_kanal",
    "land_marla",
)
_ARRAYS = ("electrical", "gas", "kitchen")


def _items(literal: str) -> tuple[str, ...]:
    """``{a,b}`` (a PostgreSQL array literal of plain words) as ``("a", "b")``."""
    inner = literal[1:-1]
    return tuple(inner.split(",")) if inner else ()


def scored(model: pmt.PmtModel, households: pa.Table, totals: LivingTotals) -> pa.Table:
    """``households`` with ``pmt_score`` (text, two decimals), ``poverty_band`` and
    ``pmt_version`` columns: the values ``pmt.rescore_sql`` would write for them."""
    columns: dict[str, list[Any]] = households.select(list(_INDICATORS)).to_pydict()
    for name in _ARRAYS:
        parsed: dict[str, tuple[str, ...]] = {}
        columns[name] = [parsed.get(v) or parsed.setdefault(v, _items(v)) for v in columns[name]]
    raw, clamp, band_of = model.raw_score, pmt.clamp, pmt.band_of
    education = [EDUCATION_LEVELS[i] for i in totals.head_education.tolist()]
    size, dependents, disabled = (
        totals.size.tolist(),
        totals.dependents.tolist(),
        totals.disabled.tolist(),
    )
    scores: list[str] = []
    bands: list[str] = []
    row: dict[str, Any] = {}
    rows = zip(*(columns[name] for name in _INDICATORS), strict=True)
    for i, values in enumerate(rows):
        row.update(zip(_INDICATORS, values, strict=True))
        aggregate = MemberAggregate(size[i], dependents[i], education[i], disabled[i])
        value = clamp(raw(row, aggregate))
        scores.append(f"{value:.2f}")
        bands.append(band_of(model, value))
    return (
        households.append_column("pmt_score", pa.array(scores, pa.string()))
        .append_column("poverty_band", pa.array(bands, pa.string()))
        .append_column("pmt_version", pa.array([model.version] * len(bands), pa.string()))
    )
