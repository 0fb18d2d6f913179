"""The sharing rules of DESIGN §4: dimensions, categories, the locked-dimensions rule."""

from __future__ import annotations

from collections.abc import Iterable

from app.models.sharing import ORGANIZATION_TYPES
from app.schemas.updates import UPDATE_KINDS

# §4.2.1 i..xvii, by their API names.
DIMENSIONS = (
    "poverty_level",
    "area_location",
    "household_composition",
    "gender",
    "relationship",
    "age_bracket",
    "marital_status",
    "disability",
    "employment",
    "education",
    "room_count",
    "toilet_type",
    "electrical_equipment",
    "gas_equipment",
    "kitchen_assets",
    "livestock",
    "land",
)
UNLOCKED = frozenset(DIMENSIONS[:7])
# viii..xvii, the PMT's basis: locked unless an agreement grants them (never all of them).
LOCKED = frozenset(DIMENSIONS[7:])
CATEGORIES = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii")
EXTRACT_GEO_LEVELS = ("province", "division", "district", "tehsil")


class RuleViolation(ValueError):
    """An agreement that the sharing rules do not allow; the message says which rule."""


def split_list(value: str | None) -> list[str]:
    if not value:
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def check_organization_type(value: str) -> None:
    if value not in ORGANIZATION_TYPES:
        raise RuleViolation(
            f"unknown organization type {value!r} (one of {', '.join(ORGANIZATION_TYPES)})"
        )


def check_categories(values: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(values))
    if not out:
        raise RuleViolation("at least one category is required")
    for value in out:
        if value not in CATEGORIES:
            raise RuleViolation(f"unknown category {value!r} (one of i..viii)")
    return out


def check_dimensions(values: Iterable[str]) -> list[str]:
    """Known names only, and never every locked dimension (§4.2.3)."""
    out = list(dict.fromkeys(values))
    for value in out:
        if value not in DIMENSIONS:
            raise RuleViolation(f"unknown dimension {value!r}")
    if LOCKED <= set(out):
        raise RuleViolation(
            "an agreement may never grant all of the locked dimensions viii-xvii "
            "(disability .. land)"
        )
    return out


def check_update_kinds(values: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(values))
    for value in out:
        if value not in UPDATE_KINDS:
            raise RuleViolation(f"unknown update kind {value!r} (one of {', '.join(UPDATE_KINDS)})")
    return out


def denied_dimensions(requested: Iterable[str], granted: Iterable[str]) -> list[str]:
    """Requested dimensions an agreement does not cover (unlocked ones are always covered)."""
    allowed = UNLOCKED | set(granted)
    return [name for name in requested if name not in allowed]
