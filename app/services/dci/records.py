"""A household of the beneficiary list as the spdci ``Group`` with its ``Member``\\s.

The input is the very document ``/v1/partner/beneficiaries`` answers for the same agreement
(``app.services.sharing.beneficiaries_sql.household_document``): its base fields and the
dimensions the agreement lets the partner read. This module only renames and nests; it adds
no value the document does not hold, and drops none: a field without a place in the spdci
objects goes to the object's ``additional_attributes`` under its NSER name.

- household: ``group_identifier`` (``HOUSEHOLD_ID``), ``poverty_score`` (the PMT score,
  ``poverty_score_type: PMT``), ``poverty_band``, ``address`` (an ``Address`` object: the
  address line and the province/division/district/tehsil/union council codes),
  ``group_size`` (living members), ``member_list``;
- member: ``member_identifier`` (``MEMBER_ID``), ``demographic_info`` (a ``Person``:
  ``identifier`` (``CNIC``), ``name`` (``full_name``: NSER does not split names), ``sex``),
  ``relationship_head`` (``self`` for the head), ``marital_status``, and with their
  dimensions ``is_disabled``/``disability_info``, ``employment_status``,
  ``education_level``; the age in years (never the birth date) as an additional attribute.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.services.sharing.beneficiaries_sql import (
    AGE,
    HOUSEHOLD_DIMENSIONS,
    MEMBER_DIMENSIONS,
    Filters,
    member_selection,
)

CONTEXT = "https://schema.spdci.org/extensions/social/v1"
_HOUSEHOLD_BASE = (
    "household_id",
    "address",
    "province",
    "division",
    "district",
    "tehsil",
    "union_council",
    "pmt_score",
    "poverty_band",
    "members",
)
_MEMBER_BASE = (
    "member_id",
    "cnic",
    "name",
    "gender",
    "relationship",
    "marital_status",
    "disability",
    "employment",
    "education",
)


def _identifier(kind: str, value: object) -> dict[str, Any]:
    return {"@type": "Identifier", "identifier_type": kind, "identifier_value": value}


def _extra(doc: dict[str, Any], base: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"attribute_name": name, "attribute_value": value}
        for name, value in doc.items()
        if name not in base
    ]


def member(doc: dict[str, Any]) -> dict[str, Any]:
    cnic = doc["cnic"]
    person: dict[str, Any] = {
        "@type": "Person",
        "identifier": [_identifier("CNIC", cnic)] if cnic else [],
        "name": {"@type": "Name", "full_name": doc["name"]},
        "sex": doc["gender"],
    }
    out: dict[str, Any] = {
        "@type": "Member",
        "member_identifier": [_identifier("MEMBER_ID", doc["member_id"])],
        "demographic_info": person,
        "relationship_head": "self" if doc["relationship"] == "head" else doc["relationship"],
        "marital_status": doc["marital_status"],
    }
    if "disability" in doc:
        disabilities = doc["disability"] or []
        out["is_disabled"] = bool(disabilities)
        out["disability_info"] = [{"disability_type": d} for d in disabilities]
    if "employment" in doc:
        out["employment_status"] = doc["employment"]
    if "education" in doc:
        out["education_level"] = doc["education"]
    out["additional_attributes"] = _extra(doc, _MEMBER_BASE)
    return out


def group(doc: dict[str, Any]) -> dict[str, Any]:
    members = [member(m) for m in doc["members"]]
    return {
        "@context": {"@vocab": CONTEXT},
        "@type": "Group",
        "group_identifier": [_identifier("HOUSEHOLD_ID", doc["household_id"])],
        "group_type": "Household",
        "group_size": len(members),
        "poverty_score": doc["pmt_score"],
        "poverty_score_type": "PMT",
        "poverty_band": doc["poverty_band"],
        "address": {
            "@type": "Address",
            "address_line1": doc["address"],
            "country_code": "PK",
            "region_code": doc["province"],
            "sub_region_code": doc["district"],
            "division_code": doc["division"],
            "tehsil_code": doc["tehsil"],
            "union_council_code": doc["union_council"],
        },
        "member_list": members,
        "additional_attributes": _extra(doc, _HOUSEHOLD_BASE),
    }


# -- the same records built by PostgreSQL ------------------------------------------------
#
# A page of records is JSON text written by PostgreSQL and sent as it is. It is spelled
# out below as the Python structure :func:`group` returns, whose values are SQL
# expressions where the registry supplies them, and rendered as one string concatenation:
# the constant JSON between the values is written once here, and PostgreSQL only escapes
# each value (``to_json``), which costs a third of building each object and list with
# ``json_build_object``.


class _Sql:
    """An SQL expression yielding JSON text, never NULL, in a structure to render."""

    def __init__(self, sql: str) -> None:
        self.sql = sql


def _value(sql: str) -> _Sql:
    """Any SQL value as JSON (``null`` for NULL)."""
    return _Sql(f"coalesce(to_json({sql})::text, 'null')")


def _text_parts(obj: object, out: list[str | _Sql]) -> None:
    if isinstance(obj, _Sql):
        out.append(obj)
    elif isinstance(obj, dict):
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            out.append(("," if i else "") + orjson.dumps(key).decode() + ":")
            _text_parts(value, out)
        out.append("}")
    elif isinstance(obj, list):
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            _text_parts(value, out)
        out.append("]")
    else:
        out.append(orjson.dumps(obj).decode())


def _render(obj: object) -> str:
    """SQL for the JSON text of ``obj``: constants as literals, :class:`_Sql` as given."""
    parts: list[str | _Sql] = []
    _text_parts(obj, parts)
    sql: list[str] = []
    constant = ""
    for part in parts:
        if isinstance(part, _Sql):
            if constant:
                sql.append("'" + constant.replace("'", "''") + "'")
                constant = ""
            sql.append(part.sql)
        else:
            constant += part
    if constant:
        sql.append("'" + constant.replace("'", "''") + "'")
    return "(" + " || ".join(sql) + ")"


def _identifier_sql(kind: str, value: str) -> dict[str, Any]:
    return _identifier(kind, _value(value))


def _extra_sql(fields: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"attribute_name": name, "attribute_value": _value(sql)} for name, sql in fields]


def member_sql(f: Filters) -> str:
    """The JSON text :func:`member` makes of living member ``m``'s document in
    ``household_document(f)``, built by PostgreSQL."""
    dims = [d for d in f.dimensions if d in MEMBER_DIMENSIONS]
    extra = f.restriction
    cnic = _render([_identifier_sql("CNIC", "m.cnic")])
    person = {
        "@type": "Person",
        "identifier": _Sql(f"CASE WHEN m.cnic <> '' THEN {cnic} ELSE '[]' END"),
        "name": {"@type": "Name", "full_name": _value("m.name")},
        "sex": _value("m.gender"),
    }
    out: dict[str, Any] = {
        "@type": "Member",
        "member_identifier": [_identifier_sql("MEMBER_ID", "m.id::text")],
        "demographic_info": person,
        "relationship_head": _value(
            "CASE WHEN m.relationship = 'head' THEN 'self' ELSE m.relationship END"
        ),
        "marital_status": _value("m.marital_status"),
    }
    if "disability" in dims:
        kind = _render({"disability_type": _value("d.kind")})
        out["is_disabled"] = _value("coalesce(cardinality(m.disabilities), 0) > 0")
        out["disability_info"] = _Sql(
            f"coalesce((SELECT '[' || string_agg({kind}, ',' ORDER BY d.n) || ']' "
            "FROM unnest(m.disabilities) WITH ORDINALITY AS d(kind, n)), '[]')"
        )
    if "employment" in dims:
        out["employment_status"] = _value("m.employment")
    if "education" in dims:
        out["education_level"] = _value("m.education")
    additional = [("age", AGE)]
    additional += [(d, MEMBER_DIMENSIONS[d]) for d in dims if d not in _MEMBER_BASE]
    additional += list(extra.member_fields if extra else ())
    out["additional_attributes"] = _extra_sql(additional)
    return _render(out)


def members_sql(f: Filters) -> str:
    """A lateral subquery of household ``h``'s listed members: ``ms.list``, the JSON text
    of their :func:`member_sql` records in id order, and ``ms.n``, how many."""
    return (
        f"LATERAL (SELECT coalesce('[' || string_agg({member_sql(f)}, ',' ORDER BY m.id) "
        "|| ']', '[]') AS list, count(*) AS n FROM members m "
        f"WHERE m.household_id = h.id AND {member_selection(f.member_type)}) ms"
    )


def group_sql(f: Filters) -> str:
    """The JSON text :func:`group` makes of household ``h``'s ``household_document(f)``,
    key for key, its members from :func:`members_sql` (joined as ``ms``), built by
    PostgreSQL so that a page of records is never parsed and built again in Python
    (``tests/dci`` hold the two to each other and to the beneficiary list)."""
    extra = f.restriction
    additional = [(d, HOUSEHOLD_DIMENSIONS[d]) for d in f.dimensions if d in HOUSEHOLD_DIMENSIONS]
    additional += list(extra.household_fields if extra else ())
    return _render(
        {
            "@context": {"@vocab": CONTEXT},
            "@type": "Group",
            "group_identifier": [_identifier_sql("HOUSEHOLD_ID", "h.id::text")],
            "group_type": "Household",
            "group_size": _value("ms.n"),
            "poverty_score": _value("h.pmt_score::float8"),
            "poverty_score_type": "PMT",
            "poverty_band": _value("h.poverty_band"),
            "address": {
                "@type": "Address",
                "address_line1": _value("h.address"),
                "country_code": "PK",
                "region_code": _value("h.province_code"),
                "sub_region_code": _value("h.district_code"),
                "division_code": _value("h.division_code"),
                "tehsil_code": _value("h.tehsil_code"),
                "union_council_code": _value("h.union_council_code"),
            },
            "member_list": _Sql("ms.list"),
            "additional_attributes": _extra_sql(additional),
        }
    )
