"""``null`` for an optional request-body field means "not given", everywhere.

Clients generated from ``/openapi.json`` send ``null`` for every optional field left unset.
The walk below goes over the OpenAPI document itself, so a body or field added later is
checked without a line here: every optional property of every JSON request body admits
``null``. The HTTP tests then show that ``null`` is read exactly as the field left out
(the same stored form, the same grievance, the same update outcomes), that a required
field is still never satisfied by ``null``, and that an unknown field is still refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from conftest import make_settings, open_client
from partner_helpers import bearer, create_staff, get_token
from request_helpers import form
from updates_helpers import headers, updates_partner, wait_done

# The one body that is not JSON: the token form, where a field is text or absent and
# cannot be null (application/x-www-form-urlencoded has no null).
FORM_BODIES = {("post", "/v1/auth/token"): "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
async def nclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url,
        token_limits="10000/minute",
        request_form_limits="10000/minute",
        grievance_limits="10000/minute",
    )
    async for c in open_client(settings):
        yield c


# --- the OpenAPI document -------------------------------------------------------------


class Walk:
    """Every object schema reachable from the request bodies, its ``$ref``s resolved."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.seen_refs: set[str] = set()
        self.optional: list[str] = []  # every optional property met, as "where.name"
        self.not_nullable: list[str] = []

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.document
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def admits_null(self, schema: dict[str, Any]) -> bool:
        schema = self.resolve(schema)
        kind = schema.get("type")
        if kind == "null" or (isinstance(kind, list) and "null" in kind):
            return True
        if None in schema.get("enum", ()) or ("const" in schema and schema["const"] is None):
            return True
        if any(self.admits_null(s) for key in ("anyOf", "oneOf") for s in schema.get(key, ())):
            return True
        branches = schema.get("allOf", ())
        return bool(branches) and all(self.admits_null(s) for s in branches)

    def visit(self, schema: dict[str, Any], where: str) -> None:
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref in self.seen_refs:
                return
            self.seen_refs.add(ref)
            where = ref.rsplit("/", 1)[-1]
        schema = self.resolve(schema)
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            if name not in required:
                self.optional.append(f"{where}.{name}")
                if not self.admits_null(prop):
                    self.not_nullable.append(f"{where}.{name}")
            self.visit(prop, f"{where}.{name}")
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for branch in schema.get(key, ()):
                self.visit(branch, where)
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                self.visit(schema[key], f"{where}[]")


async def test_every_optional_field_of_every_request_body_admits_null(
    nclient: httpx.AsyncClient,
) -> None:
    r = await nclient.get("/openapi.json")
    assert r.status_code == 200
    document = r.json()
    walk = Walk(document)
    bodies = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody")
            if body is None:
                continue
            for media, content in body["content"].items():
                if FORM_BODIES.get((method, path)) == media:
                    continue
                assert media == "application/json", (method, path, media)
                bodies += 1
                walk.visit(content["schema"], f"{method.upper()} {path}")
    assert bodies >= 15
    assert "RequestForm.gratis_justification" in walk.optional
    assert "Indicators.rooms" in walk.optional  # nested, through ResurveyIn
    assert len(walk.optional) >= 50
    assert walk.not_nullable == []


# --- the request form ------------------------------------------------------------------

OPTIONAL_FORM_FIELDS = ("dimensions", "geography", "own_surveys")
GRATIS = ("gratis_criterion", "gratis_justification")


async def _stored_form(db: asyncpg.Connection, request_id: str) -> dict[str, Any]:
    stored = await db.fetchval("SELECT form FROM data_requests WHERE id = $1::uuid", request_id)
    loaded: dict[str, Any] = orjson.loads(stored)
    return loaded


async def test_a_request_form_with_every_optional_field_null_is_the_form_without_them(
    nclient: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    nulls = form(**dict.fromkeys((*OPTIONAL_FORM_FIELDS, *GRATIS)))
    left_out = {k: v for k, v in form().items() if k not in OPTIONAL_FORM_FIELDS}
    with_null = await nclient.post("/v1/requests", json=nulls)
    assert with_null.status_code == 201, with_null.text
    without = await nclient.post("/v1/requests", json=left_out)
    assert without.status_code == 201, without.text
    stored = await _stored_form(db, with_null.json()["request_id"])
    assert stored == await _stored_form(db, without.json()["request_id"])
    assert stored["gratis_criterion"] is None
    assert stored["gratis_justification"] == ""
    assert stored["dimensions"] == []
    assert stored["geography"] == []

    # The one field that was already nullable is read the same way: null, not "null".
    only_justification = await nclient.post("/v1/requests", json=form(gratis_justification=None))
    assert only_justification.status_code == 201, only_justification.text


async def test_null_does_not_satisfy_a_required_field_nor_excuse_an_unknown_one(
    nclient: httpx.AsyncClient,
) -> None:
    missing = await nclient.post("/v1/requests", json=form(purpose=None))
    assert missing.status_code == 422
    assert [e["loc"] for e in missing.json()["errors"]] == [["body", "purpose"]]
    nested = form()
    nested["organization"] = {**nested["organization"], "phone": None}
    assert (await nclient.post("/v1/requests", json=nested)).status_code == 422
    unknown = await nclient.post("/v1/requests", json=form(gratis_justifcation=None))
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["type"] == "extra_forbidden"
    # A null item in a list is no "not given": the list holds text.
    assert (await nclient.post("/v1/requests", json=form(categories=[None]))).status_code == 422


# --- grievances: the public form and a staff action ------------------------------------


async def test_a_grievance_and_a_staff_action_with_nulls_are_those_without(
    nclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection
) -> None:
    cnics = [
        r["cnic"]
        for r in await db.fetch(
            """SELECT m.cnic FROM members m
                WHERE m.cnic IS NOT NULL AND m.deceased_on IS NULL
                ORDER BY m.id DESC LIMIT 2"""
        )
    ]
    officer = create_staff(seeded_url, "Nulls officer", "officer")
    staff = bearer(await get_token(nclient, officer["client_id"], officer["client_secret"]))
    bodies = [
        ({"reason": "wrong_assets", "details": None, "contact_phone": None}, {"notes": None}),
        ({"reason": "wrong_assets"}, {}),
    ]
    rows = []
    for cnic, (filing, triage) in zip(cnics, bodies, strict=True):
        filed = await nclient.post("/v1/public/grievances", json={"cnic": cnic, **filing})
        assert filed.status_code == 201, filed.text
        reference = filed.json()["reference"]
        acted = await nclient.post(
            f"/v1/staff/grievances/{reference}/actions/triage", json=triage, headers=staff
        )
        assert acted.status_code == 200, acted.text
        rows.append(
            await db.fetchrow(
                """SELECT g.reason, g.details, g.contact_phone, g.status, e.payload
                     FROM grievances g JOIN grievance_events e ON e.grievance_id = g.id
                    WHERE g.reference = $1 AND e.action = 'triage'""",
                reference,
            )
        )
    assert dict(rows[0]) == dict(rows[1])
    assert rows[0]["details"] == ""
    assert rows[0]["contact_phone"] is None


# --- update batches: the envelope and the records --------------------------------------


async def _post(
    c: httpx.AsyncClient, partner: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    r = await c.post("/v1/partner/updates", json=body, headers=headers(partner))
    assert r.status_code == 202, r.text
    return await wait_done(c, partner, r.json()["batch_id"])


def _records(nulls: bool, cnic: str, household_id: int) -> list[dict[str, Any]]:
    """A birth, a member update and a survey; with ``nulls`` every optional field left
    unset is sent as null (nested objects included)."""

    def unset(**names: None) -> dict[str, None]:
        return names if nulls else {}

    born = (date.today() - timedelta(days=2)).isoformat()
    indicators = {"rooms": 3}
    if nulls:
        indicators |= {"cows": None, "goats": None, "toilet_type": None, "electrical": None}
    return [
        {
            "ref": "birth",
            "kind": "member_birth",
            "household_id": household_id,
            "member": {
                "name": "Zainab",
                "gender": "female",
                "date_of_birth": born,
                "relationship": "granddaughter",
                **unset(marital_status=None, cnic=None, education=None, disabilities=None),
            },
            **unset(cnic=None, expected_version=None, mother_cnic=None, mother_member_id=None),
        },
        {
            "ref": "update",
            "kind": "member_update",
            "cnic": cnic,
            "education": "postgraduate",
            **unset(household_id=None, member_id=None, marital_status=None, new_cnic=None),
        },
        {
            "ref": "survey",
            "kind": "household_survey",
            "household_id": household_id,
            "indicators": indicators,
            **unset(surveyed_on=None, expected_version=None, cnic=None),
        },
    ]


async def test_update_records_and_envelope_with_nulls_are_those_without(
    client: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection
) -> None:
    partner = await updates_partner(seeded_url, client, "Nulls Programme")
    row = await db.fetchrow(
        """SELECT m.cnic, m.household_id FROM members m
            WHERE m.cnic IS NOT NULL AND m.deceased_on IS NULL AND m.relationship <> 'head'
            ORDER BY m.id DESC LIMIT 1"""
    )
    assert row is not None
    runs = []
    for nulls in (True, False):
        done = await _post(
            client,
            partner,
            {"dry_run": True, "records": _records(nulls, row["cnic"], row["household_id"])},
        )
        runs.append([(r["ref"], r["outcome"], r["reasons"]) for r in done["results"]])
    assert runs[0] == runs[1]
    assert [outcome for _, outcome, _ in runs[0]] == ["applied"] * 3, runs[0]

    # dry_run: null is dry_run left out (false). The record is refused, so nothing changes.
    refused = {"ref": "refused", "kind": "no_such_kind"}
    statuses = [
        await _post(client, partner, {"dry_run": None, "records": [refused]}),
        await _post(client, partner, {"records": [refused]}),
    ]
    for status in statuses:
        assert status["dry_run"] is False
        assert [r["outcome"] for r in status["results"]] == ["rejected"]
    assert statuses[0]["results"] == statuses[1]["results"]
    # records is required: null is no batch. An unknown field is refused, null or not.
    for body in ({"records": None}, {"records": [refused], "dryrun": None}):
        r = await client.post("/v1/partner/updates", json=body, headers=headers(partner))
        assert r.status_code == 422, body


# --- the rule itself (pure) ------------------------------------------------------------


def test_null_keeps_its_own_meaning_where_it_is_a_value_distinct_from_the_default() -> None:
    """No request body has such a field today; the rule must not erase one added later
    (``null`` admitted by the type, a default other than ``None``: "clear" vs "keep")."""
    from pydantic import ValidationError

    from app.schemas.base import StrictModel

    class Body(StrictModel):
        needed: int
        text: str = "x"
        cleared: int | None = 5
        unset: int | None = None

    body = Body.model_validate({"needed": 1, "text": None, "cleared": None, "unset": None})
    assert (body.text, body.cleared, body.unset) == ("x", None, None)
    assert body.model_fields_set == {"needed", "cleared"}
    assert Body.model_validate({"needed": 1}).cleared == 5
    with pytest.raises(ValidationError):
        Body.model_validate({"needed": None})
    schema = Body.model_json_schema()["properties"]
    assert schema["text"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": "x",
        "title": "Text",
    }
