"""What a partner's score explanation shows: nothing that rebuilds the PMT's locked part.

The PMT's basis is the locked dimensions (protocol §4.2.3: disability .. land, never all
granted to one agreement). A model is ``score = clamp(intercept + Σ weight_i × value_i)``
and its weights are one secret shared by every household, so any field that is a function
of a locked weight, shown for enough households, is an equation a partner can solve.
The staff explanation (:func:`explanation.build`) is full of them:

- ``weight`` and ``points`` (= weight × value) and ``exact_points`` give a weight from one
  household with a non-zero value;
- the ``intercept``, the ``raw_score`` and the ``bound_adjustment``, with the points shown,
  leave ``Σ weight_j × value_j`` over the hidden indicators exact to the float: a few
  households with known (or zero) hidden values solve for their weights;
- the apportioned cents of ``points`` move with the remainders of the hidden terms;
- a band crossing on a locked indicator moves the score by ``weight × (to - from)``; and
  one computed from the raw score tells the raw score behind a score held at 0 or 100, and
  its sub-cent part elsewhere;
- a score change in the history caused by one locked field (a disability recorded, 0 → 1)
  moves the score by that field's weight, and the field's name says which one.

So a partner sees only what is a **function of what its agreement already grants**, and
of nothing else:

- the score and band as ``GET /v1/partner/scores/{cnic}`` gives them (category iii), the
  model version and its band cut-offs (the band names' definitions);
- the **value** of each of the model's indicators whose dimension the agreement covers
  (the unlocked dimensions always; a locked one only if granted) — values it may already
  read in a beneficiary list;
- **weights and points only for indicators of unlocked dimensions** (``household_size``
  and ``dependency_ratio``: household composition), each point rounded on its own (half
  up to cents), so no share of a hidden remainder travels with it;
- band crossings over those unlocked indicators only, computed from the published score:
  the raw score lies within half a cent of it, and a change is listed only if it crosses
  the edge wherever the raw score lies in that interval; its ``new_score`` is the
  published score plus the change's points. A score held at 0 or 100 hides how far the
  raw score passed the bound, so it lists no change;
- the score's history (each new score, band and version, and the kind and source of the
  changes since the score before), with the names of changed fields of locked dimensions
  the agreement does not grant left out; staff details (member, batch, ref, actor) never.

Every field is computed from those inputs alone, never from a locked weight, the
intercept or the raw score: two models that give the household the same score and agree
on the unlocked weights give a partner the same explanation (the tests check exactly
that). A partner therefore learns from the explanation nothing about a locked weight
that the score, the values it is granted and the unlocked weights did not already tell
it. What those tell it is the agreement's business, and not nothing: the locked rule keeps
at least one locked dimension out of every agreement, so each score carries an unknown
term, but a partner granted most locked dimensions and scores can still estimate their
weights by regression over many households (exactly where the withheld term happens to be
zero). No explanation can prevent that short of withholding scores or values the
agreement grants; reviewing such agreements is the committee's part.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from app.models.registry import ELECTRICAL, GAS, KITCHEN, LAND_UNITS, LIVESTOCK
from app.services.pmt.model import PmtModel
from app.services.sharing.rules import LOCKED, UNLOCKED

_CENT = Decimal("0.01")
# Half a cent, and a little more for the float8 → numeric rounding of the stored score.
_HALF_CENT = 0.005 + 1e-9

# The sharing dimension (protocol §4.2.1) each PMT indicator is read from.
INDICATOR_DIMENSIONS: dict[str, str] = {
    "household_size": "household_composition",
    "dependency_ratio": "household_composition",
    "rooms_per_member": "room_count",
    "head_education_years": "education",
    "has_disabled_member": "disability",
    "toilet_flush": "toilet_type",
    "toilet_none": "toilet_type",
    **dict.fromkeys(ELECTRICAL, "electrical_equipment"),
    **dict.fromkeys(GAS, "gas_equipment"),
    **dict.fromkeys(KITCHEN, "kitchen_assets"),
    "large_livestock": "livestock",
    "small_livestock": "livestock",
    "log_land_acres": "land",
}
# The registry fields (as the history names them) of each locked dimension.
LOCKED_FIELDS: dict[str, str] = {
    "disabilities": "disability",
    "employment": "employment",
    "education": "education",
    "rooms": "room_count",
    "toilet_type": "toilet_type",
    "electrical": "electrical_equipment",
    "gas": "gas_equipment",
    "kitchen": "kitchen_assets",
    **dict.fromkeys(LIVESTOCK, "livestock"),
    **{f"land_{unit}": "land" for unit in LAND_UNITS},
}
assert set(LOCKED_FIELDS.values()) == LOCKED


def covered(granted: Collection[str]) -> frozenset[str]:
    """The dimensions an agreement covers: the unlocked ones, and those it grants."""
    return UNLOCKED | frozenset(granted)


def weighted(name: str) -> bool:
    """Whether a partner may see the indicator's weight: its dimension is unlocked."""
    return INDICATOR_DIMENSIONS[name] in UNLOCKED


def _points(weight: float, value: float) -> float:
    return float(Decimal(repr(weight * value)).quantize(_CENT, rounding=ROUND_HALF_UP))


def contributions(
    model: PmtModel, values: Mapping[str, float], granted: Collection[str]
) -> list[dict[str, Any]]:
    """The model's indicators of covered dimensions: value; weight and points if unlocked."""
    dims = covered(granted)
    out: list[dict[str, Any]] = []
    for name, weight in sorted(model.weights.items()):
        dimension = INDICATOR_DIMENSIONS[name]
        if dimension not in dims:
            continue
        item: dict[str, Any] = {"indicator": name, "dimension": dimension, "value": values[name]}
        if weighted(name):
            item.update(weight=float(weight), points=_points(weight, values[name]))
        out.append(item)
    return out


def withheld(model: PmtModel, granted: Collection[str]) -> list[str]:
    """The locked dimensions the model reads that the agreement does not grant."""
    dims = covered(granted)
    return sorted({INDICATOR_DIMENSIONS[n] for n in model.weights} - dims)


def disclosed(granted: Collection[str]) -> list[str]:
    """What a partner's explanation discloses, as the audit row names it: the score
    (``poverty_level``) and the indicator values of the dimensions the agreement covers."""
    dims = covered(granted)
    return ["poverty_level", *sorted({d for d in INDICATOR_DIMENSIONS.values() if d in dims})]


def raw_bounds(score: float) -> tuple[float, float]:
    """Where the raw score lies, knowing only the published (bounded, rounded) score."""
    low = -float("inf") if score <= 0 else score - _HALF_CENT
    high = float("inf") if score >= 100 else score + _HALF_CENT
    return low, high


def history(changes: Sequence[Mapping[str, Any]], granted: Collection[str]) -> list[dict[str, Any]]:
    """The partner's score history: field names of locked dimensions not granted left out."""
    dims = covered(granted)
    out = []
    for change in changes:
        moved_by = [
            {
                **cause,
                "fields": [
                    f for f in cause["fields"] if f not in LOCKED_FIELDS or LOCKED_FIELDS[f] in dims
                ],
            }
            for cause in change["moved_by"]
        ]
        out.append({**change, "moved_by": moved_by})
    return out
