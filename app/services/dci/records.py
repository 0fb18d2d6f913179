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
