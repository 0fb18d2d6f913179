"""The sharing rules (protocol §4.2): dimensions, categories, the locked-dimensions rule."""

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


def _distinct_known(values: Iterable[str], known: Iterable[str], what: str, hint: str) -> list[str]:
    """The values without repeats, each one of ``known`` (else "unknown <what> ...")."""
    out = list(dict.fromkeys(values))
    allowed = set(known)
    for value in out:
        if value not in allowed:
            raise RuleViolation(f"unknown {what} {value!r}{hint}")
    return out


def check_categories(values: Iterable[str]) -> list[str]:
    out = _distinct_known(values, CATEGORIES, "category", " (one of i..viii)")
    if not out:
        raise RuleViolation("at least one category is required")
    return out


def check_dimensions(values: Iterable[str]) -> list[str]:
    """Known names only, and never every locked dimension (§4.2.3)."""
    out = _distinct_known(values, DIMENSIONS, "dimension", "")
    if LOCKED <= set(out):
        raise RuleViolation(
            "an agreement may never grant all of the locked dimensions viii-xvii "
            "(disability .. land)"
        )
    return out


def check_update_kinds(values: Iterable[str]) -> list[str]:
    return _distinct_known(
        values, UPDATE_KINDS, "update kind", f" (one of {', '.join(UPDATE_KINDS)})"
    )


def denied_dimensions(requested: Iterable[str], granted: Iterable[str]) -> list[str]:
    """Requested dimensions an agreement does not cover (unlocked ones are always covered)."""
    allowed = UNLOCKED | set(granted)
    return [name for name in requested if name not in allowed]


# What every beneficiary list carries of a household and its members, whatever dimensions
# are selected: band, village, gender, relationship, marital status and age.
LIST_BASE = frozenset(
    {"poverty_level", "area_location", "gender", "relationship", "marital_status", "age_bracket"}
)


def readable_dimensions(categories: Iterable[str], granted: Iterable[str]) -> frozenset[str]:
    """The dimensions whose values for one household or one member an agreement lets its
    partner read: a beneficiary list (category iv or v) carries :data:`LIST_BASE`, and
    category v adds the unlocked dimensions and those the agreement grants. Aggregates
    (i, ii, vii) and score look-ups (iii) give no member's or household's values."""
    cats = set(categories)
    if not cats & {"iv", "v"}:
        return frozenset()
    if "v" not in cats:
        return LIST_BASE
    return LIST_BASE | UNLOCKED | frozenset(granted)
