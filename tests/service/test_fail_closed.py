"""Inputs fail closed, and /openapi.json lists every status and content type the service sends.

The walk below goes over the OpenAPI document itself, so an operation added later is
checked without a line here: an unknown query parameter is a 422 problem+json naming it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from conftest import make_settings, open_client, run_cli
from partner_helpers import bearer, create_partner, create_staff, get_token

PROBLEM = "application/problem+json"
UPDATE_KINDS = "member_birth,member_death,member_update,address_change,phone_change"


@pytest.fixture(scope="module")
async def sclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url,
        token_limits="10000/minute",
        partner_default_limits="100000/minute",
        staff_read_limits="100000/minute",
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def tokens(sclient: httpx.AsyncClient, seeded_url: str) -> dict[str, str]:
    partner = create_partner(
        seeded_url,
        name="Every Category",
        categories="i,ii,iii,iv,v,vi,vii,viii",
        dimensions="education,room_count",
        update_kinds=UPDATE_KINDS,
    )
    staff = create_staff(seeded_url)
    return {
        "partner": await get_token(sclient, partner["client_id"], partner["client_secret"]),
        "staff": await get_token(sclient, staff["client_id"], staff["client_secret"]),
    }


@pytest.fixture(scope="module")
async def samples(db: asyncpg.Connection) -> dict[str, str]:
    row = await db.fetchrow(
        "SELECT m.cnic, m.household_id FROM members m WHERE m.cnic IS NOT NULL LIMIT 1"
    )
    assert row is not None
    return {
        "cnic": row["cnic"],
        "household_id": str(row["household_id"]),
        "batch_id": str(uuid.uuid4()),
        "reference": "DSR-2026-000001",
        "request_id": "DSR-2026-000001",
        "agreement_id": str(uuid.uuid4()),
        "obligation_id": str(uuid.uuid4()),
        "action": "start_review",
        "measure": "households",
        "analysis_id": str(uuid.uuid4()),
        "simulation_id": str(uuid.uuid4()),
        "programme_id": "cash-transfer",
        "name": "requests",
        "grievance_reference": "GRV-2026-000001",
        "grievance_id": "GRV-2026-000001",
        "grievance_action": "triage",
        "callback_id": "1",
    }


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def test_every_operation_refuses_an_unknown_query_parameter(
    sclient: httpx.AsyncClient, tokens: dict[str, str], samples: dict[str, str]
) -> None:
    document = (await sclient.get("/openapi.json")).json()
    checked = 0
    for path, item in document["paths"].items():
        url = re.sub(r"\{(\w+)\}", lambda m: samples[m.group(1)], path)
        for method, operation in item.items():
            staff = path.startswith(("/v1/households", "/v1/staff"))
            token = tokens["staff" if staff else "partner"]
            headers = bearer(token) if operation.get("security") else {}
            response = await sclient.request(
                method.upper(), url, params={"distric": "PK604"}, headers=headers
            )
            body = _assert_problem(response, 422)
            assert "distric" in body["detail"], (method, path, body)
            assert [e["field"] for e in body["errors"]] == ["distric"]
            checked += 1
    assert checked >= 12


async def test_a_misspelt_filter_is_refused_not_ignored(
    sclient: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    url = "/v1/partner/beneficiaries"
    good = await sclient.get(url, params={"district": "PK604"}, headers=bearer(tokens["partner"]))
    assert good.status_code == 200, good.text
    bad = await sclient.get(url, params={"distric": "PK604"}, headers=bearer(tokens["partner"]))
    body = _assert_problem(bad, 422)
    assert body["errors"][0]["loc"] == ["query", "distric"]
    assert body["errors"][0]["message"] == "unknown query parameter 'distric'"


async def test_the_public_lookup_refuses_parameters_too(sclient: httpx.AsyncClient) -> None:
    # The look-up is answered ahead of FastAPI's routing; a query string is not.
    response = await sclient.get("/v1/public/scores/35202-1234567-3?verbose=1")
    assert "verbose" in _assert_problem(response, 422)["detail"]


@pytest.mark.parametrize("path", ["/v1/partner/beneficiaries", "/v1/partner/extracts/anonymized"])
@pytest.mark.parametrize(
    "query", ["union_council=%00P", "district=PK6%0A04", "tehsil=P%7F", "province=PK6;DROP"]
)
async def test_geography_codes_are_shaped_before_any_query(
    sclient: httpx.AsyncClient, tokens: dict[str, str], path: str, query: str
) -> None:
    response = await sclient.get(f"{path}?{query}", headers=bearer(tokens["partner"]))
    _assert_problem(response, 422)


async def test_control_characters_are_refused_in_every_query_and_path_value(
    sclient: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    for url in (
        "/v1/partner/beneficiaries?cursor=a%00b",
        "/v1/partner/beneficiaries?dimensions=education%00",
        "/v1/public/geography?level=district&q=la%00",
        "/v1/partner/scores/35202%001234567",
        "/docs/static/a%00b",
    ):
        response = await sclient.get(url, headers=bearer(tokens["partner"]))
        body = _assert_problem(response, 422)
        assert "control characters" in orjson.dumps(body).decode(), (url, body)


async def test_the_token_form_refuses_unknown_repeated_and_control_fields(
    sclient: httpx.AsyncClient, seeded_url: str
) -> None:
    p = create_partner(seeded_url, name="Form Checks")
    base = {"grant_type": "client_credentials", "client_id": p["client_id"]}
    base["client_secret"] = p["client_secret"]
    for form, field in (
        ({**base, "scopes": "scores:read"}, "scopes"),
        ({**base, "client_id": p["client_id"] + "\x00"}, "client_id"),
        (f"{'&'.join(f'{k}={v}' for k, v in base.items())}&scope=a&scope=b", "scope"),
    ):
        if isinstance(form, str):
            headers = {"content-type": "application/x-www-form-urlencoded"}
            response = await sclient.post("/v1/auth/token", content=form, headers=headers)
        else:
            response = await sclient.post("/v1/auth/token", data=form)
        body = _assert_problem(response, 422)
        assert body["error"] == "invalid_request"  # what OAuth client libraries read
        assert [e["field"] for e in body["errors"]] == [field]
    assert (await sclient.post("/v1/auth/token", data=base)).status_code == 200


async def test_update_batches_refuse_control_characters_and_change_nothing(
    sclient: httpx.AsyncClient, tokens: dict[str, str], db: asyncpg.Connection
) -> None:
    before = await db.fetchval("SELECT count(*) FROM update_batches")
    headers = {**bearer(tokens["partner"]), "Idempotency-Key": str(uuid.uuid4())}
    record = {"kind": "phone_change", "ref": "r\u0000", "household_id": 1, "phone": "0300 1234567"}
    body = orjson.dumps({"records": [record, {**record, "ref": "fine", "x\u0007": 1}]})
    response = await sclient.post("/v1/partner/updates", content=body, headers=headers)
    problem = _assert_problem(response, 422)
    assert [e["field"] for e in problem["errors"]] == ["records[0].ref", "records[1].x?"]
    # An escaped backslash followed by "n" is text, not a control character.
    fine = orjson.dumps({"dry_run": True, "records": [{**record, "ref": "a\\n"}]})
    response = await sclient.post(
        "/v1/partner/updates",
        content=fine,
        headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 202, response.text
    key = await sclient.post(
        "/v1/partner/updates", content=fine, headers={**headers, "Idempotency-Key": "k\x7f"}
    )
    _assert_problem(key, 400)
    assert await db.fetchval("SELECT count(*) FROM update_batches") == before + 1


async def test_openapi_declares_problem_json_for_every_error(sclient: httpx.AsyncClient) -> None:
    document = (await sclient.get("/openapi.json")).json()
    assert "Problem" in document["components"]["schemas"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "422" in responses, (method, path)
            if operation.get("security"):
                assert {"401", "403"} <= set(responses), (method, path)
            for status, response in responses.items():
                if status[0] not in "45":
                    continue
                content = response["content"]
                if path == "/v1/auth/token" and status in ("400", "401"):
                    assert set(content) == {"application/json"}  # RFC 6749 §5.2
                    continue
                if path.startswith("/dci/") and status not in ("422", "429"):
                    # The DCI standard's own error bodies (app/routers/dci.py).
                    assert set(content) == {"application/json"}, (method, path, status)
                    continue
                assert set(content) == {PROBLEM}, (method, path, status)
                ref = content[PROBLEM]["schema"]["$ref"]
                assert ref == "#/components/schemas/Problem", (method, path, status)


@pytest.mark.parametrize(
    ("body", "has_control"),
    [
        (rb'{"a": "x\u0000"}', True),
        (rb'{"a": "x\n"}', True),
        (rb'{"a": "\u001F"}', True),
        (rb'{"a": "\u007f"}', True),
        (rb'{"a\t": 1}', True),
        (rb'{"a": "x\\\n"}', True),  # an escaped backslash, then a newline
        (rb'{"a": "x\\n"}', False),  # an escaped backslash, then "n"
        (rb'{"a": "\\u0000"}', False),
        (rb'{"a": "\u0020 \"quoted\" \/"}', False),
        (b'{"a": "plain"}', False),
    ],
)
def test_escaped_control_characters_are_found_by_their_escapes(
    body: bytes, has_control: bool
) -> None:
    from app.services.ingest.store import _control_locations, _has_escaped_control

    assert _has_escaped_control(body) is has_control
    # The byte scan agrees with a walk of the decoded document.
    assert bool(_control_locations(orjson.loads(body))) is has_control


@pytest.fixture(scope="module")
async def every_role(sclient: httpx.AsyncClient, seeded_url: str) -> str:
    """A staff token holding every role: no request stops at a 403 before its checks."""
    roles = ["officer", "committee", "secretary", "me", "admin"]
    args = ["staff", "create", "--name", "Every role", *[f"--role={r}" for r in roles]]
    every = json.loads(run_cli([*args, "--json"], seeded_url).stdout)
    return await get_token(sclient, every["client_id"], every["client_secret"])


async def test_malformed_uuids_in_paths_are_refused_before_the_database(
    sclient: httpx.AsyncClient,
    tokens: dict[str, str],
    samples: dict[str, str],
    every_role: str,
) -> None:
    # 36 characters of hex digits and dashes, but not a UUID: PostgreSQL would refuse it
    # as a uuid, which must surface as a 4xx, never a 500 (schemathesis found one). The
    # staff caller holds every role, so no request stops at a 403 before the database.
    tokens = {**tokens, "staff": every_role}
    not_a_uuid = "Bf6b99D0A21Fa1c-0cAC-6203--400cf3EA7"
    # And a well-formed id of nothing: 404, never a 500 from reading a missing row.
    for path in ("requests", "requests/{}/quote", "grievances"):
        url = "/v1/staff/" + (
            path.format(uuid.UUID(int=0)) if "{}" in path else f"{path}/{uuid.UUID(int=0)}"
        )
        missing = await sclient.get(url, headers=bearer(tokens["staff"]))
        assert missing.status_code == 404, (url, missing.text)
    document = (await sclient.get("/openapi.json")).json()
    checked = 0
    for path, item in document["paths"].items():
        for name in re.findall(r"\{(\w+_id)\}", path):
            url = re.sub(
                r"\{(\w+)\}", lambda m, n=name: not_a_uuid if m[1] == n else samples[m[1]], path
            )
            for method, operation in item.items():
                staff = path.startswith(("/v1/households", "/v1/staff"))
                headers = bearer(tokens["staff" if staff else "partner"])
                body = {} if method in ("post", "put") else None
                response = await sclient.request(
                    method.upper(),
                    url,
                    headers=headers if operation.get("security") else {},
                    json=body,
                )
                assert response.status_code < 500, (method, path, response.text)
                checked += 1
    assert checked >= 10


async def test_dates_must_be_written_as_dates(sclient: httpx.AsyncClient, every_role: str) -> None:
    # Pydantic alone reads 0 or "0.5" as seconds since 1970; a registry date is written.
    for url in (
        "/v1/staff/requests?before=0.5",
        "/v1/staff/grievances?before=0",
        "/v1/staff/reports/requests?to=0",
        "/v1/staff/reports/requests?from=20260101",
    ):
        response = await sclient.get(url, headers=bearer(every_role))
        body = _assert_problem(response, 422)
        assert "ISO 8601" in body["detail"], (url, body)
    fine = await sclient.get("/v1/staff/reports/requests?to=2026-01-01", headers=bearer(every_role))
    assert fine.status_code == 200, fine.text
