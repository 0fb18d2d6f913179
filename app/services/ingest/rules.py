"""Quality checks for records sent back by partners: pure functions, no database.

Every check returns reasons a partner can act on ("date_of_death 2020-01-01 is before the
member's date of birth"), never a bare "invalid". A reason repeats what the partner sent
and names the rule; it never repeats the registry's own values (a member's date of birth or
age), which the partner may not read. Checks that need the registry (matching, CNIC
uniqueness, versions) live in ``ingest.apply`` and use these for the per-field rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.schemas.updates import UPDATE_KINDS, UpdateRecord
from app.services.pmt.features import age_on

_RECORD = TypeAdapter[Any](UpdateRecord)

# Set by the registry, never by a partner (docs/api.md: derived fields can't be set).
DERIVED = ("pmt_score", "poverty_band", "pmt_version", "version", "id", "created_at", "updated_at")
DERIVED_NESTED = (*DERIVED, "household_id", "member_id", "family_id")
MIN_MOTHER_GAP_YEARS = 12
MIN_MARRIED_AGE = 14
MIN_HEAD_AGE = 14
EVER_MARRIED = ("married", "divorced", "separated", "widowed")
CHILD_RELATIONSHIPS = (
    "son",
    "daughter",
    "grandson",
    "granddaughter",
    "brother",
    "sister",
    "other_relative",
    "non_relative",
)
_PHONE = re.compile(r"(?:\+92|0)(3[0-9]{9})", re.ASCII)


_DERIVED = frozenset(DERIVED)
_DERIVED_NESTED = frozenset(DERIVED_NESTED)
_NESTED = ("member", "household", "indicators")


def _has_derived(raw: Mapping[str, Any]) -> bool:
    """A cheap pre-check of :func:`derived_fields` (most records set none). Records come
    from JSON, so objects are dicts (``isinstance`` against ``dict``, not the slower ABC)."""
    if not _DERIVED.isdisjoint(raw):
        return True
    for key in _NESTED:
        nested = raw.get(key)
        if isinstance(nested, dict):
            if not _DERIVED_NESTED.isdisjoint(nested):
                return True
            members = nested.get("members")
            if isinstance(members, list):
                for m in members:
                    if isinstance(m, dict) and not _DERIVED_NESTED.isdisjoint(m):
                        return True
    return False


def derived_fields(raw: Mapping[str, Any]) -> list[str]:
    """Reasons for every derived field the record (or its nested objects) tries to set."""
    if not _has_derived(raw):
        return []
    found = [f"'{k}' is derived by the registry and cannot be set" for k in DERIVED if k in raw]
    for key in ("member", "household", "indicators"):
        nested = raw.get(key)
        if isinstance(nested, Mapping):
            found += [
                f"'{key}.{k}' is derived by the registry and cannot be set"
                for k in DERIVED_NESTED
                if k in nested
            ]
            for i, m in enumerate(nested.get("members") or []):
                if isinstance(m, Mapping):
                    found += [
                        f"'{key}.members[{i}].{k}' is derived by the registry and cannot be set"
                        for k in DERIVED_NESTED
                        if k in m
                    ]
    return found


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "record"


def parse_record(raw: object) -> tuple[Any, list[str]]:
    """Schema and types: the typed record, or the reasons it is not one."""
    if not isinstance(raw, dict):
        return None, ["a record must be a JSON object"]
    derived = derived_fields(raw)
    if derived:
        return None, derived
    kind = raw.get("kind")
    if kind not in UPDATE_KINDS:
        return None, [f"unknown kind {kind!r}; expected one of {', '.join(UPDATE_KINDS)}"]
    try:
        return _RECORD.validate_python(raw), []
    except ValidationError as exc:
        reasons = []
        for err in exc.errors(include_url=False):
            # Drop the discriminator step ("member_birth") from the location.
            loc = tuple(p for p in err["loc"] if p != kind)
            msg = str(err["msg"]).removeprefix("Value error, ")
            reasons.append(f"{_loc(loc)}: {msg}")
        return None, reasons


def normalize_phone(value: str) -> str | None:
    """+92 3xx xxxxxxx or 03xx xxxxxxx (spaces/dashes allowed) -> +923xxxxxxxxx; else None."""
    match = _PHONE.fullmatch(re.sub(r"[\s-]", "", value))
    return f"+92{match.group(1)}" if match else None


def phone_reasons(value: str) -> tuple[str | None, list[str]]:
    phone = normalize_phone(value)
    if phone is None:
        return None, [
            f"phone {value!r} is not a Pakistani mobile number (+923xxxxxxxxx or 03xxxxxxxxx)"
        ]
    return phone, []


def not_future(label: str, value: date, today: date) -> list[str]:
    return [f"{label} {value.isoformat()} is in the future"] if value > today else []


def death_reasons(born: date, died: date, today: date) -> list[str]:
    """``born`` is the registry's: the reason says the rule, not the date."""
    reasons = not_future("date_of_death", died, today)
    if died < born:
        reasons.append(f"date_of_death {died.isoformat()} is before the member's date of birth")
    return reasons


def mother_reasons(mother_born: date, child_born: date) -> list[str]:
    """``mother_born`` is the registry's: the reason says the rule, not her age."""
    if age_on(mother_born, child_born) < MIN_MOTHER_GAP_YEARS:
        return [
            f"the mother named is not at least {MIN_MOTHER_GAP_YEARS} years older than a "
            f"child born on {child_born.isoformat()}"
        ]
    return []


def person_reasons(
    *,
    relationship: str,
    marital_status: str,
    born: date,
    today: date,
    who: str = "member",
    registry_birth: bool = False,
) -> list[str]:
    """Relationship consistent with age and marital status. ``registry_birth``: ``born``
    is the registry's, not the sender's, so no reason may give the date or the age."""
    age = age_on(born, today)
    reasons = [] if registry_birth else not_future(f"{who} date_of_birth", born, today)
    aged = f"{who} of the age recorded" if registry_birth else f"{who} aged {age}"
    if age > 125 and not registry_birth:
        reasons.append(f"{who} date_of_birth {born.isoformat()} gives an age of {age}")
    if marital_status in EVER_MARRIED and age < MIN_MARRIED_AGE:
        reasons.append(f"{aged} cannot be {marital_status} (minimum {MIN_MARRIED_AGE})")
    if relationship in ("spouse", "son_in_law", "daughter_in_law") and marital_status not in (
        EVER_MARRIED
    ):
        reasons.append(f"{who} with relationship {relationship} cannot be {marital_status}")
    if relationship == "head" and age < MIN_HEAD_AGE:
        reasons.append(f"{aged} cannot be head (minimum {MIN_HEAD_AGE})")
    return reasons


@dataclass(frozen=True)
class GeoUnit:
    code: str
    level: str
    parent: str | None


class Geography:
    """The geo_units table in memory (tens of thousands of rows at most)."""

    def __init__(self, units: Mapping[str, GeoUnit]) -> None:
        self.units = units
        self.first_village: dict[str, str] = {}
        for unit in sorted(units.values(), key=lambda u: u.code):
            if unit.level == "village" and unit.parent:
                self.first_village.setdefault(unit.parent, unit.code)

    def _check(self, code: str, level: str) -> str | None:
        unit = self.units.get(code)
        if unit is None:
            return f"unknown {level} code {code!r}"
        if unit.level != level:
            return f"code {code!r} is a {unit.level}, not a {level}"
        return None

    def resolve(
        self,
        *,
        district: str,
        tehsil: str,
        union_council: str,
        village: str | None,
        division: str | None = None,
        province: str | None = None,
    ) -> tuple[dict[str, str], list[str]]:
        """Codes valid and nested (village in UC in tehsil in district ...), all levels filled."""
        given = [
            (v, lvl)
            for v, lvl in (
                (province, "province"),
                (division, "division"),
                (district, "district"),
                (tehsil, "tehsil"),
                (union_council, "union_council"),
                (village, "village"),
            )
            if v is not None
        ]
        reasons = [r for v, lvl in given if (r := self._check(v, lvl))]
        if reasons:
            return {}, reasons
        if village is None:
            # Partners name the union council; the household needs a village inside it.
            village = self.first_village.get(union_council)
            if village is None:
                return {}, [f"union council {union_council!r} has no villages"]
        chain = {"village": village}
        for child, level in (
            ("village", "union_council"),
            ("union_council", "tehsil"),
            ("tehsil", "district"),
            ("district", "division"),
            ("division", "province"),
        ):
            chain[level] = self.units[chain[child]].parent or ""
        for v, lvl in given:
            if chain[lvl] != v:
                child_level = {
                    "province": "division",
                    "division": "district",
                    "district": "tehsil",
                    "tehsil": "union_council",
                    "union_council": "village",
                }.get(lvl)
                return {}, [
                    f"{child_level} {chain[child_level]!r} is not inside {lvl} {v!r}"
                    if child_level
                    else f"{lvl} {v!r} does not match"
                ]
        return chain, []
