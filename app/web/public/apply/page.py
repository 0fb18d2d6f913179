"""The website's data request form ↔ the API's :class:`RequestForm`: one set of rules. Pure.

The page's fields are flat (``organization_name``, ``period_start``...); :data:`FIELDS`
maps each one onto its place in ``RequestForm`` (Annex I, §4.1.3 a-j). Everything the
browser is told about a field — required, ``maxlength``, ``pattern``, the options of a
choice — is read from the model here (:func:`attributes`, :func:`choices`), and the server
validates with the same model (:func:`validate`), so the two sides cannot drift apart.
Each pydantic error is mapped back to the field it is about with a plain message (a
gettext msgid and its values; the router translates it).

The labels of the model's choices (organization types, storage, categories, dimensions,
gratis criteria, request states) are defined here, marked for the ``apply`` catalogue;
tests check that they cover exactly the model's choices. The price guide reads its numbers
from :mod:`app.services.requests.pricing` (Annexes II-III); none is written here.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from annotated_types import MaxLen
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from app.schemas.requests import RequestForm
from app.services.requests import machine, pricing
from app.services.sharing import rules as sharing
from app.web.i18n import N_
from app.web.security import CSRF_FIELD

# The page's field names, in the order of the form, and where each goes in RequestForm.
FIELDS: Mapping[str, tuple[str, ...]] = {
    "organization_name": ("organization", "name"),
    "organization_type": ("organization", "type"),
    "contact_name": ("organization", "contact_name"),
    "email": ("organization", "email"),
    "phone": ("organization", "phone"),
    "address": ("organization", "address"),
    "purpose": ("purpose",),
    "extent_of_use": ("extent_of_use",),
    "period_start": ("period", "start"),
    "period_end": ("period", "end"),
    "storage": ("storage",),
    "categories": ("categories",),
    "dimensions": ("dimensions",),
    "geography": ("geography",),
    "own_surveys": ("own_surveys",),
    "methodology": ("methodology",),
    "security_measures": ("security_measures",),
    "gratis_criterion": ("gratis_criterion",),
    "gratis_justification": ("gratis_justification",),
}
LIST_FIELDS = frozenset({"categories", "dimensions", "geography"})
# The id of each field's element on the page (a group's first choice for checkboxes and
# radios), so the error summary can link to it.
GROUP_FIELDS = frozenset({"storage", "categories", "dimensions", "gratis_criterion"})


def field_id(name: str, choice: str | None = None) -> str:
    if choice is not None:
        return f"f-{name}-{choice}"
    return f"f-{name}"


def anchor(name: str) -> str:
    """Where the error summary's link for ``name`` points: the field, or a group's first choice."""
    if name == "gratis_criterion":
        return field_id(name, "none")
    if name in GROUP_FIELDS:
        return field_id(name, choices(name)[0])
    return field_id(name)


# -- what the model says about each field ----------------------------------------------


def _info(path: tuple[str, ...]) -> tuple[FieldInfo, bool]:
    """The leaf's FieldInfo, and whether it and every model above it are required."""
    model: type[BaseModel] = RequestForm
    required = True
    info: FieldInfo | None = None
    for step in path:
        info = model.model_fields[step]
        required = required and info.is_required()
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    assert info is not None
    return info, required


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> X, ``list[X]`` -> X, ``Annotated[X, ...]`` -> X."""
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            annotation = args[0]
        elif origin is list:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            annotation = rest[0]
        else:
            return annotation


def choices(name: str) -> tuple[str, ...]:
    """The values a choice field accepts: the model's ``Literal``; for dimensions the names
    the service accepts (``sharing.DIMENSIONS``, checked by ``store.check_form``)."""
    if name == "dimensions":
        return tuple(sharing.DIMENSIONS)
    info, _ = _info(FIELDS[name])
    inner = _unwrap(info.annotation)
    if typing.get_origin(inner) is typing.Literal:
        return tuple(str(v) for v in typing.get_args(inner))
    raise KeyError(f"{name} is not a choice field")


def html_pattern(regex: str) -> str:
    """A pydantic (Python) pattern as an HTML ``pattern``: anchors dropped (HTML anchors it),
    a literal ``-`` at the end of a class escaped (required by the ``v`` flag)."""
    body = regex.removeprefix("^").removesuffix("$")
    return re.sub(r"(?<!\\)-\]", r"\\-]", body)


def max_length(name: str) -> int | None:
    info, _ = _info(FIELDS[name])
    for item in info.metadata:
        if isinstance(item, MaxLen):
            return int(item.max_length)
    return None


def attributes(name: str) -> dict[str, Any]:
    """The HTML validation attributes of a field, read from ``RequestForm``."""
    info, required = _info(FIELDS[name])
    out: dict[str, Any] = {}
    if name in LIST_FIELDS:
        return out  # checkboxes cannot say "at least one" in HTML; the server does
    if required:
        out["required"] = True
    if info.annotation is str:
        limit = max_length(name)
        if limit is not None:
            out["maxlength"] = limit
        for item in info.metadata:
            pattern = getattr(item, "pattern", None)
            if isinstance(pattern, str):
                out["pattern"] = html_pattern(pattern)
    return out


def max_fields() -> int:
    """The most fields a well-formed submission can have (lists at their model maximum)."""
    total = 1 + len(FIELDS) - len(LIST_FIELDS)  # + csrf_token
    for name in LIST_FIELDS:
        total += max_length(name) or 0
    return total


# -- reading a submission ----------------------------------------------------------------


class UnknownField(ValueError):
    """A field the form does not have, or a single-valued field sent twice."""


@dataclass
class Submission:
    """What was typed, normalized (see :func:`_clean`), to re-fill the form."""

    values: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    csrf: str | None = None

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def chosen(self, name: str) -> list[str]:
        return self.lists.get(name, [])


def _clean(text: str) -> str:
    """Trimmed, tabs as spaces, each line's trailing spaces dropped: a textarea's line breaks
    are kept (the form's free-text fields take paragraphs: ``PARAGRAPHS`` in the model)."""
    lines = [line.replace("\t", " ").rstrip() for line in text.splitlines()]
    return "\n".join(lines).strip()


def read_fields(pairs: Iterable[tuple[str, str]]) -> Submission:
    """The submission from the body's (name, value) pairs; UnknownField fails it closed."""
    sub = Submission()
    seen: set[str] = set()
    for name, raw in pairs:
        if name == CSRF_FIELD:
            if sub.csrf is not None:
                raise UnknownField(name)
            sub.csrf = raw
            continue
        if name not in FIELDS:
            raise UnknownField(name)
        value = _clean(raw)
        if name in LIST_FIELDS:
            if value and value not in sub.lists.setdefault(name, []):
                sub.lists[name].append(value)
            continue
        if name in seen:
            raise UnknownField(name)
        seen.add(name)
        if value:
            sub.values[name] = value
    return sub


def to_document(sub: Submission) -> dict[str, Any]:
    """The JSON document ``POST /v1/requests`` would take; empty fields are left out."""
    doc: dict[str, Any] = {}
    for name, path in FIELDS.items():
        value: Any
        if name in LIST_FIELDS:
            value = list(sub.chosen(name))
        elif name in sub.values:
            value = sub.values[name]
        else:
            continue
        target = doc
        for step in path[:-1]:
            target = target.setdefault(step, {})
        target[path[-1]] = value
    return doc


# -- errors, mapped to fields --------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """A message (a gettext msgid, translated where shown) and its ``%(name)s`` values."""

    message: str
    values: Mapping[str, Any] = field(default_factory=dict)


REQUIRED: Mapping[str, str] = {
    "organization_name": N_("Enter the name of your organization."),
    "organization_type": N_("Choose the type of your organization."),
    "contact_name": N_("Enter the name of the contact person."),
    "email": N_("Enter an email address."),
    "phone": N_("Enter a phone number."),
    "address": N_("Enter the postal address of your organization."),
    "purpose": N_("Describe why you need the data."),
    "extent_of_use": N_("Say who will use the data and who will have access to it."),
    "period_start": N_("Enter the date from which you would use the data."),
    "period_end": N_("Enter the date until which you would use the data."),
    "storage": N_("Choose how the data would be stored."),
    "categories": N_("Choose at least one category of data."),
    "methodology": N_("Describe how you will work with the data."),
    "security_measures": N_("Describe how you will keep the data safe."),
    "gratis_criterion": N_("Choose the criterion your free-of-cost request rests on."),
    "gratis_justification": N_("Explain why your organization meets the criterion you chose."),
}
FORMAT: Mapping[str, str] = {
    "email": N_("Enter an email address in the form name@example.org."),
    "phone": N_(
        "Enter a phone number in digits, spaces or dashes, which may start with +, for"
        " example +92 51 9246001."
    ),
    "dimensions": N_("Choose dimensions from the list."),
    "geography": N_("Choose areas from the list."),
}
TOO_LONG_TEXT = N_("Use at most %(max)s characters.")
TOO_MANY = N_("Choose at most %(max)s.")
CHOOSE_LISTED = N_("Choose one of the options shown.")
BAD_DATE = N_("Enter a real date, for example 2027-01-31.")
END_BEFORE_START = N_("The end date must be after the start date.")
TOO_LONG_PERIOD = N_("A request can cover at most five years.")
BAD_PERIOD = N_("Check the dates of the period.")
NOT_VALID = N_("This is not valid; please check it.")
CONTROL_CHARACTERS = N_("Remove the special (control) characters from this text.")
JUSTIFICATION_WITHOUT_CRITERION = N_(
    "Choose a criterion for a free-of-cost request, or leave the explanation empty."
)


def _field_of(loc: tuple[int | str, ...]) -> str | None:
    for name, path in FIELDS.items():
        if tuple(loc[: len(path)]) == path:
            return name
    return None


def _error(name: str, kind: str, ctx: Mapping[str, Any], message: str) -> FieldError:
    if kind in ("missing", "string_too_short") or (kind == "too_short" and name in REQUIRED):
        return FieldError(REQUIRED.get(name, NOT_VALID))
    if kind == "string_too_long":
        return FieldError(TOO_LONG_TEXT, {"max": ctx.get("max_length")})
    if kind == "too_long":
        return FieldError(TOO_MANY, {"max": ctx.get("max_length")})
    if kind == "string_pattern_mismatch":
        return FieldError(FORMAT.get(name, NOT_VALID))
    if kind in ("literal_error", "enum"):
        return FieldError(FORMAT.get(name, CHOOSE_LISTED))
    if kind.startswith("date"):
        return FieldError(BAD_DATE)
    if "control characters" in message:
        return FieldError(CONTROL_CHARACTERS)
    return FieldError(NOT_VALID)


def errors_from(exc: ValidationError, sub: Submission) -> dict[str, FieldError]:
    """Each field's first error, in the order of the form."""
    found: dict[str, FieldError] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = str(err["type"])
        ctx = err.get("ctx") or {}
        message = str(err.get("msg", ""))
        if loc == ("period",):  # Period's own check: the order and length of the period
            name = "period_end"
            if "after" in message:
                problem = FieldError(END_BEFORE_START)
            elif "five years" in message:
                problem = FieldError(TOO_LONG_PERIOD)
            else:
                problem = FieldError(BAD_PERIOD)
        elif loc == ():  # RequestForm's own check: a gratis claim and its explanation go together
            if sub.value("gratis_criterion"):
                name, problem = "gratis_justification", FieldError(REQUIRED["gratis_justification"])
            else:
                name, problem = "gratis_criterion", FieldError(JUSTIFICATION_WITHOUT_CRITERION)
        else:
            located = _field_of(loc)
            if located is None:
                continue
            name, problem = located, _error(located, kind, ctx, message)
        found.setdefault(name, problem)
    return {name: found[name] for name in FIELDS if name in found}


def service_errors(errors: Iterable[Mapping[str, Any]]) -> dict[str, FieldError]:
    """The service's own checks (``store.check_form``: unknown dimensions, unknown codes)."""
    found: dict[str, FieldError] = {}
    for err in errors:
        name = str(err.get("field", ""))
        if name in FIELDS:
            found.setdefault(name, FieldError(FORMAT.get(name, NOT_VALID)))
    return found


def validate(sub: Submission) -> tuple[RequestForm | None, dict[str, FieldError]]:
    """The form as the API would take it, or the errors by field (the same model decides)."""
    try:
        return RequestForm.model_validate(to_document(sub)), {}
    except ValidationError as exc:
        return None, errors_from(exc, sub)


# -- labels of the model's choices -----------------------------------------------------------

ORGANIZATION_TYPES: Mapping[str, str] = {
    "government": N_("Government (federal, provincial, regional or local)"),
    "semi_autonomous": N_("Semi-autonomous government agency"),
    "academic": N_("Academic or research institution"),
    "local_ngo": N_("Local NGO"),
    "donor": N_("Donor"),
    "private": N_("Business or private sector"),
}
STORAGE: Mapping[str, str] = {
    "hard_copy": N_("Hard copy (printed on paper)"),
    "soft_copy": N_("Soft copy (computer files)"),
    "vpn": N_("Internet access through a virtual private network (VPN)"),
}


@dataclass(frozen=True)
class Described:
    number: str
    name: str
    details: str


# §4.2.4 "Information sharing categorization", in plain words.
CATEGORIES: Mapping[str, Described] = {
    "i": Described(
        "i",
        N_("Information summaries"),
        N_(
            "Tables of counts — households, people, poverty bands — by area. District level"
            " and above is public; finer areas are for partners."
        ),
    ),
    "ii": Described(
        "ii",
        N_("Custom analysis"),
        N_(
            "An analysis across several dimensions, areas and variables that the registry"
            " runs for you on its data."
        ),
    ),
    "iii": Described(
        "iii",
        N_("Poverty score against a CNIC"),
        N_(
            "The poverty score of the household of a person you name by CNIC, for example"
            " through an automated connection (API) for a programme you run."
        ),
    ),
    "iv": Described(
        "iv",
        N_("Beneficiary lists"),
        N_("Lists of households: their members, address, poverty level and region."),
    ),
    "v": Described(
        "v",
        N_("Beneficiary lists with selected dimensions"),
        N_(
            "The same lists with the extra dimensions you choose below (for example"
            " education or land), within limits the registry sets."
        ),
    ),
    "vi": Described(
        "vi",
        N_("Anonymized data for analysis"),
        N_(
            "Records without names or CNICs: coded identifiers, ages in brackets and places no"
            " finer than a district or tehsil, for research."
        ),
    ),
    "vii": Described(
        "vii",
        N_("Information maps"),
        N_("Maps of poverty and of the dimensions you choose, public or for your use only."),
    ),
    "viii": Described(
        "viii",
        N_("Geo-tagged information with dimensions"),
        N_("Where households are located, with the dimensions you choose."),
    ),
}

# §4.2.1 "Dimensions available for data provision & analysis", by their API names.
DIMENSIONS: Mapping[str, Described] = {
    "poverty_level": Described("i", N_("Poverty level"), N_("The poverty score")),
    "area_location": Described(
        "ii",
        N_("Area location"),
        N_("Province, division, district, tehsil, union council, village"),
    ),
    "household_composition": Described(
        "iii", N_("Household composition"), N_("Head, parents, adults and children")
    ),
    "gender": Described("iv", N_("Gender"), N_("Male or female")),
    "relationship": Described(
        "v", N_("Relationships"), N_("Relationship to the head: wife, son...")
    ),
    "age_bracket": Described("vi", N_("Age brackets"), N_("Ages in groups")),
    "marital_status": Described("vii", N_("Marital status"), N_("Married, single...")),
    "disability": Described(
        "viii", N_("Disability"), N_("Hearing, visual, speech, mental, limbs, none")
    ),
    "employment": Described("ix", N_("Employment status"), N_("Work of the members")),
    "education": Described("x", N_("Education status"), N_("Education level")),
    "room_count": Described("xi", N_("Room count"), N_("Rooms of the dwelling")),
    "toilet_type": Described("xii", N_("Toilet type"), N_("The household's toilet")),
    "electrical_equipment": Described(
        "xiii",
        N_("Electrical equipment"),
        N_("Refrigerator, air conditioner, television, washing machine..."),
    ),
    "gas_equipment": Described("xiv", N_("Gas equipment"), N_("Geyser, heater")),
    "kitchen_assets": Described("xv", N_("Kitchen assets"), N_("Cooking stove, cooking range")),
    "livestock": Described("xvi", N_("Livestock"), N_("Cows, goats, buffaloes, bullocks, sheep")),
    "land": Described("xvii", N_("Land"), N_("Land held, in muraba, acres, kanal or marla")),
}
LOCKED_DIMENSIONS = sharing.LOCKED
PRICED_DIMENSIONS = frozenset(pricing.PRICED_DIMENSIONS)

# §4.2.1 "Gratis data sharing request", criteria a-d, in plain words.
GRATIS: Mapping[str, str] = {
    "a": N_(
        "A research organization, or a consultant or student writing research or a"
        " dissertation, who will share the findings with full rights of use to NSER/BISP"
        " (not research paid for by a commercial or donor organization)."
    ),
    "b": N_("An organization working with BISP, or for the benefit of BISP's beneficiaries."),
    "c": N_(
        "A non-profit organization working for BISP's beneficiaries or the marginalized"
        " part of society."
    ),
    "d": N_(
        "A government organization working for BISP's beneficiaries or the marginalized"
        " part of society."
    ),
}

# The request's states (app.services.requests.machine), in plain words.
STATES: Mapping[str, tuple[str, str]] = {
    "submitted": (
        N_("Submitted"),
        N_("Your request has arrived. The NSER Management Unit will start to review it."),
    ),
    "under_review": (
        N_("Under review"),
        N_(
            "The NSER Management Unit is checking your form and deciding the category,"
            " scope and conditions."
        ),
    ),
    "reviewed": (
        N_("Reviewed"),
        N_(
            "The review is done. You will be invited to an interview about the conditions"
            " and your security measures."
        ),
    ),
    "interviewed": (
        N_("Interviewed"),
        N_("The interview has taken place. The Data Sharing Committee will consider your request."),
    ),
    "recommended": (
        N_("Recommended"),
        N_("The Data Sharing Committee recommends approval. The Secretary BISP decides next."),
    ),
    "not_recommended": (
        N_("Not recommended"),
        N_(
            "The Data Sharing Committee does not recommend approval. The Secretary BISP makes"
            " the final decision."
        ),
    ),
    "approved": (
        N_("Approved"),
        N_("The Secretary BISP has approved your request. The agreement will be signed next."),
    ),
    "rejected": (
        N_("Rejected"),
        N_("Your request was not approved. You may apply again with a new form."),
    ),
    "active": (
        N_("Agreement signed"),
        N_("The agreement is signed; the data is provided under its terms."),
    ),
    "suspended": (
        N_("Suspended"),
        N_(
            "Access under the agreement is suspended after a compliance check. The NSER"
            " Management Unit will contact you."
        ),
    ),
    "revoked": (N_("Revoked"), N_("The agreement was ended after a compliance check.")),
    "expired": (N_("Expired"), N_("The period of the agreement has ended.")),
    "withdrawn": (N_("Withdrawn"), N_("The request was withdrawn.")),
}
WITHDRAWABLE = frozenset(str(state) for state in machine.PRE_APPROVAL)


def state_label(status: str) -> tuple[str, str]:
    """A state's name and explanation (msgids); an unknown state is shown as it is."""
    return STATES.get(status, (status, ""))


# -- the price guide (Annexes II-III), from pricing's own constants -------------------------------


@dataclass(frozen=True)
class Rate:
    organization_type: str
    label: str
    per_household: Decimal  # A
    per_dimension: Decimal  # E = DIMENSION_SHARE * A


def rates() -> list[Rate]:
    return [
        Rate(kind, ORGANIZATION_TYPES[kind], a, (a * pricing.DIMENSION_SHARE).normalize())
        for kind, a in pricing.RATE_PER_HOUSEHOLD.items()
    ]


def decimals(value: Decimal | int | None) -> int:
    """How many decimal places ``value`` needs (0.45 -> 2, 3 -> 0)."""
    if not isinstance(value, Decimal):
        return 0
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


# The worked example on the page: inputs only; the amounts come from pricing.quote().
EXAMPLE_TYPE = "academic"
EXAMPLE_CATEGORY = "v"
EXAMPLE_HOUSEHOLDS = 10_000
EXAMPLE_DIMENSIONS = tuple(pricing.PRICED_DIMENSIONS[:2])


def example_quote() -> pricing.Quote:
    return pricing.quote(
        organization_type=EXAMPLE_TYPE,
        category=EXAMPLE_CATEGORY,
        households=EXAMPLE_HOUSEHOLDS,
        dimensions=EXAMPLE_DIMENSIONS,
    )


def formula_categories() -> list[str]:
    return [c for c in sharing.CATEGORIES if c in pricing.FORMULA_CATEGORIES]


def case_by_case_categories() -> list[str]:
    return [c for c in sharing.CATEGORIES if c in pricing.CASE_BY_CASE_CATEGORIES]
