"""The Secretary suspends and revokes an agreement over the staff API
(``POST /v1/staff/agreements/{id}/suspend`` and ``…/revoke``): the partner is cut off on its
very next call, the request behind the agreement follows, every change is audited, another
role is refused (403) whatever the agreement's state, a wrong state is 409 naming it, and a
refused call changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
from conftest import fresh_database, make_settings, open_client
from partner_helpers import bearer, create_partner, get_token
from request_helpers import act, form, staff_by_role

STAFF = "/v1/staff/agreements"
PARTNER_CALL = "/v1/partner/beneficiaries?limit=2"


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A registry of its own: agreements here are suspended and revoked."""
    with fresh_database(households=60, seed=41) as url:
        yield url


@pytest.fixture(scope="module")
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        database_url,
        token_limits="10000/minute",
        partner_default_limits="100000/minute",
        request_form_limits="10000/minute",
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def staff(client: httpx.AsyncClient, database_url: str) -> dict[str, dict[str, str]]:
    return await staff_by_role(client, database_url, "Oversight")


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def signed_agreement(
    client: httpx.AsyncClient, staff: dict[str, dict[str, str]]
) -> dict[str, str]:
    """A request taken through the workflow to a signed agreement: its reference, the
    agreement, and the partner's credentials."""
    organization = {**form()["organization"], "name": f"Overseen {uuid.uuid4().hex[:8]}"}
    made = await client.post(
        "/v1/requests", json=form(categories=["iv"], dimensions=[], organization=organization)
    )
    assert made.status_code == 201, made.text
    reference = made.json()["reference"]
    steps = (
        ("officer", "start_review", {}),
        ("officer", "review", {"category": "iv", "clearance_level": "restricted"}),
        ("officer", "record_interview", {"outcome": "passed", "notes": "ok"}),
        ("committee", "recommend", {"recommendation": "approve", "notes": "ok"}),
        ("secretary", "approve", {"reasons": "ok"}),
        ("officer", "sign", {}),
    )
    answer: dict[str, str] = {}
    for role, action, body in steps:
        done = await act(client, staff[role], reference, action, body)
        assert done.status_code == 200, done.text
        answer = done.json()
    return {
        "reference": reference,
        "agreement_id": answer["agreement_id"],
        "client_id": answer["client_id"],
        "client_secret": answer["client_secret"],
    }


async def state_of(db: asyncpg.Connection, agreement_id: str) -> tuple[str, str | None]:
    row = await db.fetchrow(
        """SELECT a.status, r.status AS request_status FROM agreements a
             LEFT JOIN data_requests r ON r.agreement_id = a.id WHERE a.id = $1""",
        uuid.UUID(agreement_id),
    )
    assert row is not None
    return row["status"], row["request_status"]


async def audited(db: asyncpg.Connection, action: str, agreement_id: str) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE endpoint = $1 AND filters->>'agreement' = $2",
        f"POST /v1/staff/agreements/{{id}}/{action}",
        agreement_id,
    )
    return count


async def test_the_secretary_suspends_and_the_partner_is_refused_at_once(
    client: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection
) -> None:
    signed = await signed_agreement(client, staff)
    aid = signed["agreement_id"]
    token = await get_token(client, signed["client_id"], signed["client_secret"])
    assert (await client.get(PARTNER_CALL, headers=bearer(token))).status_code == 200

    suspended = await client.post(
        f"{STAFF}/{aid}/suspend",
        json={"reasons": "Complaint under review"},
        headers=staff["secretary"],
    )
    assert suspended.status_code == 200, suspended.text
    assert suspended.json() == {"agreement_id": aid, "agreement_status": "suspended"}
    # The same, unexpired token is refused on the very next call, and no new one is issued.
    cut = await client.get(PARTNER_CALL, headers=bearer(token))
    assert cut.status_code == 403
    assert cut.headers["content-type"].startswith("application/problem+json")
    assert "suspended" in cut.json()["detail"]
    refused = await client.post(
        "/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": signed["client_id"],
            "client_secret": signed["client_secret"],
        },
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert await state_of(db, aid) == ("suspended", "suspended")
    assert await db.fetchval(
        "SELECT status_reason FROM agreements WHERE id = $1", uuid.UUID(aid)
    ) == ("Complaint under review")
    assert await audited(db, "suspend", aid) == 1
    # The request's timeline names the Secretary's step and its reasons.
    view = (
        await client.get(f"/v1/staff/requests/{signed['reference']}", headers=staff["me"])
    ).json()
    last = view["timeline"][-1]
    assert (last["action"], last["roles"], last["status"]) == (
        "suspend",
        ["secretary"],
        "suspended",
    )
    # No spot check was recorded: this is the Secretary's own decision.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM spot_checks WHERE agreement_id = $1", uuid.UUID(aid)
        )
        == 0
    )

    # Suspending again is a wrong state: 409 naming it, and nothing more is written.
    again = await client.post(
        f"{STAFF}/{aid}/suspend", json={"reasons": "again"}, headers=staff["secretary"]
    )
    assert again.status_code == 409
    assert again.json()["state"] == "suspended"
    assert await audited(db, "suspend", aid) == 1

    # Resume serves the partner again; then revoke cuts it for good.
    resumed = await client.post(
        f"{STAFF}/{aid}/resume", json={"reasons": "Cleared"}, headers=staff["secretary"]
    )
    assert resumed.status_code == 200, resumed.text
    assert (await client.get(PARTNER_CALL, headers=bearer(token))).status_code == 200
    revoked = await client.post(
        f"{STAFF}/{aid}/revoke", json={"reasons": "Repeated breach"}, headers=staff["secretary"]
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["agreement_status"] == "revoked"
    assert (await client.get(PARTNER_CALL, headers=bearer(token))).status_code == 403
    assert await state_of(db, aid) == ("revoked", "revoked")
    assert await audited(db, "revoke", aid) == 1
    for action in ("revoke", "suspend", "resume"):  # final: every action is a wrong state
        late = await client.post(
            f"{STAFF}/{aid}/{action}", json={"reasons": "x"}, headers=staff["secretary"]
        )
        assert late.status_code == 409, (action, late.text)
        assert late.json()["state"] == "revoked"
    assert await state_of(db, aid) == ("revoked", "revoked")


async def test_the_secretary_revokes_a_suspended_agreement_and_one_without_a_request(
    client: httpx.AsyncClient,
    staff: dict[str, dict[str, str]],
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    # Suspended by the M&E team's spot check, revoked by the Secretary.
    signed = await signed_agreement(client, staff)
    aid = signed["agreement_id"]
    check = await client.post(
        f"{STAFF}/{aid}/spot-checks",
        json={"outcome": "failed", "findings": "Copies on a laptop", "action": "suspend"},
        headers=staff["me"],
    )
    assert check.status_code == 201, check.text
    revoked = await client.post(
        f"{STAFF}/{aid}/revoke", json={"reasons": "Not remedied"}, headers=staff["secretary"]
    )
    assert revoked.status_code == 200, revoked.text
    assert await state_of(db, aid) == ("revoked", "revoked")

    # An agreement made with `nser partners create` has no request: only the agreement moves.
    partner = create_partner(database_url, name=f"Direct {uuid.uuid4().hex[:6]}")
    token = await get_token(client, partner["client_id"], partner["client_secret"])
    pid = partner["agreement_id"]
    assert (await client.get(PARTNER_CALL, headers=bearer(token))).status_code == 200
    done = await client.post(
        f"{STAFF}/{pid}/suspend", json={"reasons": "Audit pending"}, headers=staff["secretary"]
    )
    assert done.status_code == 200, done.text
    assert await state_of(db, pid) == ("suspended", None)
    assert (await client.get(PARTNER_CALL, headers=bearer(token))).status_code == 403


async def test_other_roles_are_refused_before_any_state_check(
    client: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection
) -> None:
    signed = await signed_agreement(client, staff)
    aid = signed["agreement_id"]
    gone = str(uuid.uuid4())
    for role in ("officer", "committee", "me", "admin"):
        for action in ("suspend", "revoke"):
            for target in (aid, gone):  # an active agreement, and none at all: both 403
                refused = await client.post(
                    f"{STAFF}/{target}/{action}", json={"reasons": "no"}, headers=staff[role]
                )
                assert refused.status_code == 403, (role, action, refused.text)
                assert "state" not in refused.json()
    me_refused = await client.post(
        f"{STAFF}/{aid}/suspend", json={"reasons": "no"}, headers=staff["me"]
    )
    assert "spot check" in me_refused.json()["detail"]  # where the M&E team suspends
    assert await state_of(db, aid) == ("active", "active")
    assert await audited(db, "suspend", aid) == 0
    assert await audited(db, "revoke", aid) == 0
    # Revoked: another role is still 403, not the state's 409.
    revoked = await client.post(
        f"{STAFF}/{aid}/revoke", json={"reasons": "Breach"}, headers=staff["secretary"]
    )
    assert revoked.status_code == 200
    for action in ("suspend", "revoke"):
        refused = await client.post(
            f"{STAFF}/{aid}/{action}", json={"reasons": "no"}, headers=staff["me"]
        )
        assert refused.status_code == 403
    # No token at all.
    assert (await client.post(f"{STAFF}/{aid}/suspend", json={"reasons": "x"})).status_code == 401


async def test_bad_bodies_and_ids(
    client: httpx.AsyncClient, staff: dict[str, dict[str, str]], db: asyncpg.Connection
) -> None:
    signed = await signed_agreement(client, staff)
    aid = signed["agreement_id"]
    secretary = staff["secretary"]
    for body in ({}, {"reasons": ""}, {"reasons": "x" * 4001}, {"reasons": "x", "action": "y"}):
        for action in ("suspend", "revoke"):
            bad = await client.post(f"{STAFF}/{aid}/{action}", json=body, headers=secretary)
            assert bad.status_code == 422, (body, action, bad.text)
    raw = await client.post(
        f"{STAFF}/{aid}/suspend",
        content=b"not json",
        headers={**secretary, "content-type": "application/json"},
    )
    assert 400 <= raw.status_code < 500
    huge = await client.post(
        f"{STAFF}/{aid}/suspend",
        content=b'{"reasons": "' + b"x" * (65 * 1024) + b'"}',
        headers={**secretary, "content-type": "application/json"},
    )
    assert huge.status_code == 413
    assert (
        await client.post(f"{STAFF}/not-an-id/suspend", json={"reasons": "x"}, headers=secretary)
    ).status_code == 422
    missing = await client.post(
        f"{STAFF}/{uuid.uuid4()}/revoke", json={"reasons": "x"}, headers=secretary
    )
    assert missing.status_code == 404
    assert await state_of(db, aid) == ("active", "active")  # nothing changed


async def test_openapi_lists_every_status(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for action in ("suspend", "revoke"):
        operation = paths[f"{STAFF}/{{agreement_id}}/{action}"]["post"]
        assert {"200", "401", "403", "404", "409", "413", "422"} <= set(operation["responses"])
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("In")
