"""Staff access to personal data: scopes come from roles only, admin reads no personal data,
and every staff read of personal data is audited and counted against one budget.

(Every route, partner and staff, is walked for its audit row in
tests/service/test_personal_data_audit.py.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from conftest import make_settings, open_client, run_cli
from partner_helpers import bearer, get_token

from app.auth import secrets
from app.auth.scopes import ROLE_SCOPES, Scope

HISTORY = "/v1/households/{}/history"
EXPLANATION = "/v1/staff/households/{}/score-explanation"


@pytest.fixture(scope="module")
async def sclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(seeded_url, token_limits="10000/minute")
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def household(db: asyncpg.Connection) -> int:
    hid: int = await db.fetchval("SELECT id FROM households ORDER BY id LIMIT 1")
    return hid


async def _insert_staff(
    db: asyncpg.Connection, roles: list[str], scopes: list[str]
) -> dict[str, str]:
    """A staff client row as an earlier release (or a hand edit) may have left it."""
    client_id, secret = secrets.new_client_id("staff"), secrets.new_client_secret()
    await db.execute(
        """INSERT INTO api_clients (client_id, kind, agreement_id, secret_hash, name, scopes,
               roles)
           VALUES ($1, 'staff', NULL, $2, 'Earlier staff client', $3, $4)""",
        client_id,
        secrets.hash_secret(secret),
        scopes,
        roles,
    )
    return {"client_id": client_id, "client_secret": secret}


def _form(made: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": made["client_id"],
        "client_secret": made["client_secret"],
        **extra,
    }


def _staff(url: str, *roles: str) -> dict[str, str]:
    args = ["staff", "create", "--name", "Access test", *[f"--role={r}" for r in roles], "--json"]
    made: dict[str, str] = json.loads(run_cli(args, url).stdout)
    return made


async def test_a_staff_client_with_no_role_holds_no_scope(
    sclient: httpx.AsyncClient, db: asyncpg.Connection, seeded_url: str, household: int
) -> None:
    # No role: no token, whatever scopes the row carries.
    roleless = await _insert_staff(db, [], ["staff:read", "grievances:read"])
    refused = await sclient.post("/v1/auth/token", data=_form(roleless))
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "unauthorized_client"
    assert "role" in refused.json()["error_description"]
    asked = await sclient.post("/v1/auth/token", data=_form(roleless, scope="staff:read"))
    assert asked.status_code == 400

    # Stored scopes never add to the roles': an officer's token carries the officer's.
    officer = await _insert_staff(db, ["officer"], ["staff:read", "simulations:run"])
    token = await sclient.post("/v1/auth/token", data=_form(officer))
    assert token.status_code == 200, token.text
    assert set(token.json()["scope"].split()) == set(ROLE_SCOPES["officer"])
    beyond = await sclient.post("/v1/auth/token", data=_form(officer, scope="simulations:run"))
    assert beyond.status_code == 400
    assert beyond.json()["error"] == "invalid_scope"

    # A role taken away takes every scope with it, even from a token already issued.
    auth = bearer(token.json()["access_token"])
    assert (await sclient.get(HISTORY.format(household), headers=auth)).status_code == 200
    await db.execute(
        "UPDATE api_clients SET roles = '{}' WHERE client_id = $1", officer["client_id"]
    )
    denied = await sclient.get(HISTORY.format(household), headers=auth)
    assert denied.status_code == 403, denied.text

    # The operator cannot create one.
    made = run_cli(["staff", "create", "--name", "Nobody", "--json"], seeded_url, check=False)
    assert made.returncode != 0
    assert "role" in made.stderr + made.stdout
    scoped = ["staff", "create", "--name", "Nobody", "--scopes", "staff:read", "--json"]
    assert run_cli(scoped, seeded_url, check=False).returncode != 0


async def test_admin_reads_no_personal_data(
    sclient: httpx.AsyncClient, seeded_url: str, household: int
) -> None:
    """Separation of duties: the staff administrator manages programmes and reads requests
    and reports, but household histories and score explanations are not theirs."""
    assert Scope.STAFF_READ not in ROLE_SCOPES["admin"]
    admin = _staff(seeded_url, "admin")
    token = await sclient.post("/v1/auth/token", data=_form(admin))
    assert token.status_code == 200
    assert "staff:read" not in token.json()["scope"].split()
    auth = bearer(token.json()["access_token"])
    for path in (HISTORY, EXPLANATION):
        response = await sclient.get(path.format(household), headers=auth)
        assert response.status_code == 403, (path, response.text)
    asked = await sclient.post("/v1/auth/token", data=_form(admin, scope="staff:read"))
    assert asked.json()["error"] == "invalid_scope"
    assert (await sclient.get("/v1/staff/requests", headers=auth)).status_code == 200
    # Officers and M&E still read them.
    for role in ("officer", "me"):
        made = _staff(seeded_url, role)
        who = bearer(await get_token(sclient, made["client_id"], made["client_secret"]))
        assert (await sclient.get(HISTORY.format(household), headers=who)).status_code == 200


async def test_a_history_read_is_audited(
    sclient: httpx.AsyncClient, db: asyncpg.Connection, seeded_url: str, household: int
) -> None:
    made = _staff(seeded_url, "officer")
    auth = bearer(await get_token(sclient, made["client_id"], made["client_secret"]))
    request_id = f"history-{uuid.uuid4().hex}"
    response = await sclient.get(
        HISTORY.format(household), headers={**auth, "X-Request-ID": request_id}
    )
    assert response.status_code == 200
    members = await db.fetchval(
        "SELECT count(*) FROM members WHERE household_id = $1 AND deceased_on IS NULL", household
    )
    row = await db.fetchrow("SELECT * FROM audit_log WHERE request_id = $1", request_id)
    assert row is not None, "the history was sent without its audit row"
    assert (row["actor_type"], row["client_id"], row["endpoint"]) == (
        "staff",
        made["client_id"],
        "GET /v1/households/{household_id}/history",
    )
    assert (row["households"], row["members"]) == (1, members)
    assert row["filters"] == f'{{"household_id": "{household}"}}'
    # A household that does not exist: refused, and the attempt recorded.
    missing = f"history-{uuid.uuid4().hex}"
    response = await sclient.get(HISTORY.format(10**12), headers={**auth, "X-Request-ID": missing})
    assert response.status_code == 404
    row = await db.fetchrow("SELECT households FROM audit_log WHERE request_id = $1", missing)
    assert row is not None
    assert row["households"] == 0


async def test_staff_reads_of_personal_data_share_one_budget_per_client(
    seeded_url: str, household: int
) -> None:
    settings = make_settings(seeded_url, staff_read_limits="3/minute")
    async for c in open_client(settings):
        one, two = _staff(seeded_url, "officer"), _staff(seeded_url, "officer")
        first = bearer(await get_token(c, one["client_id"], one["client_secret"]))
        second = bearer(await get_token(c, two["client_id"], two["client_secret"]))
        for path in (HISTORY, EXPLANATION, HISTORY):
            assert (await c.get(path.format(household), headers=first)).status_code == 200
        for path in (EXPLANATION, HISTORY):
            spent = await c.get(path.format(household), headers=first)
            assert spent.status_code == 429, spent.text
            assert spent.headers["content-type"].startswith("application/problem+json")
            assert int(spent.headers["retry-after"]) >= 1
        # Another staff member has a budget of their own; reads of no personal data are free.
        assert (await c.get(HISTORY.format(household), headers=second)).status_code == 200
        assert (await c.get("/v1/staff/requests", headers=first)).status_code == 200
