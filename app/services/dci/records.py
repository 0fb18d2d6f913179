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


def _sql_identifier(kind: str, value: str) -> str:
    return (
        f"json_build_object('@type', 'Identifier', 'identifier_type', '{kind}', "
        f"'identifier_value', {value})"
    )


def _sql_extra(fields: list[tuple[str, str]]) -> str:
    return (
        "json_build_array("
        + ", ".join(
            f"json_build_object('attribute_name', '{n}', 'attribute_value', {v})" for n, v in fields
        )
        + ")"
    )


def member_sql(f: Filters) -> str:
    """:func:`member` of a living member ``m`` as SQL: what :func:`member` makes of the
    member's document in ``household_document(f)``, built by PostgreSQL."""
    dims = [d for d in f.dimensions if d in MEMBER_DIMENSIONS]
    extra = f.restriction
    fields = [
        "'@type', 'Member'",
        f"'member_identifier', json_build_array({_sql_identifier('MEMBER_ID', 'm.id::text')})",
        "'demographic_info', json_build_object('@type', 'Person', 'identifier', "
        f"CASE WHEN m.cnic <> '' THEN json_build_array({_sql_identifier('CNIC', 'm.cnic')}) "
        "ELSE '[]'::json END, 'name', json_build_object('@type', 'Name', 'full_name', m.name), "
        "'sex', m.gender)",
        "'relationship_head', CASE WHEN m.relationship = 'head' THEN 'self' "
        "ELSE m.relationship END",
        "'marital_status', m.marital_status",
    ]
    if "disability" in dims:
        fields += [
            "'is_disabled', coalesce(cardinality(m.disabilities), 0) > 0",
            "'disability_info', coalesce((SELECT json_agg(json_build_object("
            "'disability_type', d.kind) ORDER BY d.n) FROM unnest(m.disabilities) "
            "WITH ORDINALITY AS d(kind, n)), '[]'::json)",
        ]
    if "employment" in dims:
        fields.append("'employment_status', m.employment")
    if "education" in dims:
        fields.append("'education_level', m.education")
    additional = [("age", AGE)]
    additional += [(d, MEMBER_DIMENSIONS[d]) for d in dims if d not in _MEMBER_BASE]
    additional += list(extra.member_fields if extra else ())
    fields.append(f"'additional_attributes', {_sql_extra(additional)}")
    return f"json_build_object({', '.join(fields)})"


def members_sql(f: Filters) -> str:
    """A lateral subquery of household ``h``'s listed members: ``ms.list``, their
    :func:`member_sql` records in id order (NULL for none), and ``ms.n``, how many."""
    return (
        f"LATERAL (SELECT json_agg({member_sql(f)} ORDER BY m.id) AS list, count(*) AS n "
        f"FROM members m WHERE m.household_id = h.id AND {member_selection(f.member_type)}) ms"
    )


def group_sql(f: Filters) -> str:
    """:func:`group` of household ``h`` as SQL, its members from :func:`members_sql`
    (joined as ``ms``): the record :func:`group` makes of ``household_document(f)``, key for
    key, built by PostgreSQL so that a page of records is never parsed and built again in
    Python (``tests/dci`` hold the two to each other and to the beneficiary list)."""
    extra = f.restriction
    additional = [(d, HOUSEHOLD_DIMENSIONS[d]) for d in f.dimensions if d in HOUSEHOLD_DIMENSIONS]
    additional += list(extra.household_fields if extra else ())
    return (
        "json_build_object("
        f"'@context', json_build_object('@vocab', '{CONTEXT}'), '@type', 'Group', "
        f"'group_identifier', json_build_array({_sql_identifier('HOUSEHOLD_ID', 'h.id::text')}), "
        "'group_type', 'Household', 'group_size', ms.n, "
        "'poverty_score', h.pmt_score::float8, 'poverty_score_type', 'PMT', "
        "'poverty_band', h.poverty_band, "
        "'address', json_build_object('@type', 'Address', 'address_line1', h.address, "
        "'country_code', 'PK', 'region_code', h.province_code, "
        "'sub_region_code', h.district_code, 'division_code', h.division_code, "
        "'tehsil_code', h.tehsil_code, 'union_council_code', h.union_council_code), "
        "'member_list', coalesce(ms.list, '[]'::json), "
        f"'additional_attributes', {_sql_extra(additional)})"
    )
