"""SQL fragments of the beneficiary lists: filters, member types, dimensions.

Every fragment here is package-owned text; request values only ever travel as parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

GEO_LEVELS = ("province", "division", "district", "tehsil", "union_council")
MEMBER_TYPES = ("children", "adults", "elderly", "ever_married_women", "disabled")
ADULT = "m.date_of_birth <= current_date - interval '18 years'"
MEMBER_TYPE_SQL = {
    "children": "m.date_of_birth > current_date - interval '18 years'",
    "adults": ADULT,
    "elderly": "m.date_of_birth <= current_date - interval '65 years'",
    # Protocol §3.1: the benefit recipient, as in the ``families`` view.
    "ever_married_women": (
        "(m.gender = 'female' AND m.marital_status IN ('married','divorced','separated',"
        f"'widowed') AND {ADULT})"
    ),
    "disabled": "coalesce(cardinality(m.disabilities), 0) > 0",
}
AGE = "date_part('year', age(current_date, m.date_of_birth))::int"
# The bracket of the age, computed once per member (a CASE would compute the age again in
# each test): bucket i of ``width_bucket`` holds the ages from the i-th lower bound up.
AGE_BRACKETS = ("0-4", "5-9", "10-14", "15-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_LOWER_BOUNDS = (5, 10, 15, 18, 25, 35, 45, 55, 65)
AGE_BRACKET = (
    "(ARRAY[" + ", ".join(f"'{b}'" for b in AGE_BRACKETS) + "])"
    f"[width_bucket({AGE}, ARRAY[{', '.join(map(str, _LOWER_BOUNDS))}]) + 1]"
)

# Dimensions carried by each member (beyond the base member fields).
MEMBER_DIMENSIONS = {
    "age_bracket": AGE_BRACKET,
    "disability": "to_json(m.disabilities)",
    "employment": "m.employment",
    "education": "m.education",
}
# Dimensions carried by the household.
HOUSEHOLD_DIMENSIONS = {
    "poverty_level": "h.poverty_band",
    "area_location": "json_build_object('village', h.village_code)",
    "household_composition": """(SELECT json_build_object('members', count(*),
        'children', count(*) FILTER (WHERE m.date_of_birth > current_date - interval '18 years'),
        'adults', count(*) FILTER (WHERE m.date_of_birth <= current_date - interval '18 years'),
        'elderly', count(*) FILTER (WHERE m.date_of_birth <= current_date - interval '65 years'))
        FROM members m WHERE m.household_id = h.id AND m.deceased_on IS NULL)""",
    "room_count": "h.rooms",
    "toilet_type": "h.toilet_type",
    "electrical_equipment": "to_json(h.electrical)",
    "gas_equipment": "to_json(h.gas)",
    "kitchen_assets": "to_json(h.kitchen)",
    "livestock": """json_build_object('cows', h.cows, 'goats', h.goats,
        'buffaloes', h.buffaloes, 'bullocks', h.bullocks, 'lambs', h.lambs)""",
    "land": """json_build_object('muraba', h.land_muraba::float8, 'acre', h.land_acre::float8,
        'kanal', h.land_kanal::float8, 'marla', h.land_marla::float8)""",
}
# gender, relationship and marital_status are base member fields already.


@dataclass(frozen=True)
class Restriction:
    """A household predicate a layer over the lists adds (a programme's eligibility rule):
    the list is then that layer's endpoint, audited as such, its documents carrying the
    extra fields. ``where`` gets the query's parameter binder and returns package-owned SQL
    over households ``h``; the fields are ``(name, SQL)`` over ``h`` or a member ``m``."""

    endpoint: str
    where: Callable[[Callable[[object], str]], str]
    audit: dict[str, object] = field(default_factory=dict)
    household_fields: tuple[tuple[str, str], ...] = ()
    member_fields: tuple[tuple[str, str], ...] = ()


@dataclass
class Filters:
    province: list[str] = field(default_factory=list)
    division: list[str] = field(default_factory=list)
    district: list[str] = field(default_factory=list)
    tehsil: list[str] = field(default_factory=list)
    union_council: list[str] = field(default_factory=list)
    score_min: float | None = None
    score_max: float | None = None
    poverty_band: list[str] = field(default_factory=list)
    member_type: list[str] = field(default_factory=list)
    dimensions: list[str] = field(default_factory=list)
    # Set by a layer over the lists (e.g. a programme's eligible list), never by a request.
    restriction: Restriction | None = field(default=None, init=False)
    # An as-of list (app.services.sharing.asof.prepare): the checked instant, its snapshot.
    as_of: datetime | None = field(default=None, init=False)
    snapshot: str | None = field(default=None, init=False)
    # With read replicas: the WAL position the list must be read at (its as-of instant was
    # final there, or its cursor's previous page was read there); app/replicas.py.
    read_after: int | None = field(default=None, init=False)

    def geo(self) -> dict[str, list[str]]:
        return {level: getattr(self, level) for level in GEO_LEVELS if getattr(self, level)}

    def as_audit(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.geo())
        out.update(
            score_min=self.score_min,
            score_max=self.score_max,
            poverty_band=self.poverty_band,
            member_type=self.member_type,
        )
        if self.restriction is not None:
            out.update(self.restriction.audit)
        if self.as_of is not None:
            out.update(as_of=self.as_of.isoformat(timespec="microseconds"), snapshot=self.snapshot)
        return out


class Query:
    """A WHERE clause over households ``h`` with its positional parameters."""

    def __init__(self) -> None:
        self.params: list[object] = []
        self.where: list[str] = []

    def param(self, value: object) -> str:
        self.params.append(value)
        return f"${len(self.params)}"


def member_condition(member_types: list[str]) -> str:
    return "(" + " OR ".join(MEMBER_TYPE_SQL[t] for t in member_types) + ")"


def member_selection(member_types: list[str]) -> str:
    """Which living members a household shows: all, or those of the types plus the head."""
    if not member_types:
        return "m.deceased_on IS NULL"
    return (
        f"m.deceased_on IS NULL AND (m.relationship = 'head' OR {member_condition(member_types)})"
    )


def household_where(q: Query, f: Filters, scope: tuple[str, ...], after_id: int | None) -> str:
    if scope:
        s = q.param(list(scope))
        q.where.append(
            "("
            + " OR ".join(
                f"h.{col} = ANY({s}::text[])"
                for col in (
                    "province_code",
                    "division_code",
                    "district_code",
                    "tehsil_code",
                    "union_council_code",
                    "village_code",
                )
            )
            + ")"
        )
    for level, codes in f.geo().items():
        q.where.append(f"h.{level}_code = ANY({q.param(codes)}::text[])")
    # As the decimal the caller wrote, not the nearest binary float (29.99 would otherwise
    # compare as 29.98999... and leave out a household scored exactly 29.99).
    if f.score_min is not None:
        q.where.append(f"h.pmt_score >= {q.param(Decimal(str(f.score_min)))}::numeric")
    if f.score_max is not None:
        q.where.append(f"h.pmt_score <= {q.param(Decimal(str(f.score_max)))}::numeric")
    if f.poverty_band:
        q.where.append(f"h.poverty_band = ANY({q.param(f.poverty_band)}::text[])")
    if f.member_type:
        q.where.append(
            "EXISTS (SELECT 1 FROM members m WHERE m.household_id = h.id "
            f"AND m.deceased_on IS NULL AND {member_condition(f.member_type)})"
        )
    if f.restriction is not None:
        q.where.append(f.restriction.where(q.param))
    if after_id is not None:
        q.where.append(f"h.id > {q.param(after_id)}::bigint")
    return " AND ".join(q.where) or "true"


def household_document(f: Filters) -> str:
    """A json_build_object of one household with its members (and granted dimensions)."""
    member_fields = [
        "'member_id', m.id::text",
        "'cnic', m.cnic",
        "'name', m.name",
        "'gender', m.gender",
        f"'age', {AGE}",
        "'relationship', m.relationship",
        "'marital_status', m.marital_status",
    ]
    member_fields += [
        f"'{d}', {MEMBER_DIMENSIONS[d]}" for d in f.dimensions if d in MEMBER_DIMENSIONS
    ]
    extra = f.restriction
    member_fields += [f"'{name}', {sql}" for name, sql in (extra.member_fields if extra else ())]
    fields = [
        "'household_id', h.id::text",
        "'address', h.address",
        "'province', h.province_code",
        "'division', h.division_code",
        "'district', h.district_code",
        "'tehsil', h.tehsil_code",
        "'union_council', h.union_council_code",
        "'pmt_score', h.pmt_score::float8",
        "'poverty_band', h.poverty_band",
        f"""'members', coalesce((SELECT json_agg(json_build_object({", ".join(member_fields)})
              ORDER BY m.id) FROM members m
              WHERE m.household_id = h.id AND {member_selection(f.member_type)}), '[]'::json)""",
    ]
    fields += [
        f"'{d}', {HOUSEHOLD_DIMENSIONS[d]}" for d in f.dimensions if d in HOUSEHOLD_DIMENSIONS
    ]
    fields += [f"'{name}', {sql}" for name, sql in (extra.household_fields if extra else ())]
    return f"json_build_object({', '.join(fields)})"


def member_count(f: Filters) -> str:
    return (
        "(SELECT count(*) FROM members m WHERE m.household_id = h.id AND "
        f"{member_selection(f.member_type)})"
    )
