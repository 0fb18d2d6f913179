"""Every route that returns personal data writes an audit row for the call.

The routes are read from the application itself (API and website, in the OpenAPI document
or not), so a route added later fails this test until it is classified here: either it
returns personal data (names, CNICs, dates of birth, phones, disabilities, a household's
score or indicators, pseudonymous records) and is called below, or it is in one of the two
reviewed lists with the reason it needs no audit row of its own.

Each call carries its own ``X-Request-ID``; the audit row must carry that id and the
caller's client id (the row is committed before the answer is sent, so it is there when
the answer arrives).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import fresh_database, make_settings, open_client
from fastapi.routing import iter_route_contexts
from partner_helpers import bearer, create_partner, create_staff, get_token
from request_helpers import form

from app.main import create_app

Route = tuple[str, str]

# Reviewed: these routes return no personal data.
NO_PERSONAL_DATA: dict[Route, str] = {
    ("GET", "/openapi.json"): "the API's description",
    ("GET", "/healthz"): "liveness",
    ("GET", "/readyz"): "readiness: the database and schema version",
    ("GET", "/metrics"): "Prometheus counters per route, no parameter values",
    ("GET", "/docs"): "the API documentation page",
    ("GET", "/docs/oauth2-redirect"): "the documentation's OAuth helper page",
    ("GET", "/docs/static/{name}"): "the documentation's scripts and styles",
    ("POST", "/v1/auth/token"): "a token for the caller's own credentials",
    ("POST", "/dci/registry/sync/txn/status"): "the statuses, counts and subscription codes "
    "of the caller's own DCI search, subscribe and unsubscribe transactions, never records "
    "nor filters",
    ("POST", "/dci/registry/subscribe"): "an ACK and a subscription stored; the records reach "
    "the subscriber in notify callbacks, each audited by the notifier (tests/dci)",
    ("POST", "/dci/registry/unsubscribe"): "an ACK; the caller's own subscriptions ended",
    ("POST", "/dci/registry/search"): "an acknowledgement; the records go by callback, each "
    "page audited when the worker runs the search (tests/dci/test_async_dci.py)",
    ("POST", "/dci/registry/txn/status"): "an acknowledgement; the callback carries statuses "
    "and counts, never records",
    ("GET", "/.well-known/jwks.json"): "public verification keys",
    ("GET", "/v1/public/geography"): "geography units and their names",
    ("GET", "/v1/public/summaries"): "public counts under disclosure control",
    ("GET", "/v1/public/maps/{measure}"): "public hexagon counts under disclosure control",
    ("GET", "/v1/partner/summaries"): "counts under disclosure control (audited all the same, "
    "tests/products)",
    ("POST", "/v1/partner/analysis"): "cross-tabulations under disclosure control (audited "
    "all the same, tests/products)",
    ("GET", "/v1/partner/analysis/{analysis_id}"): "a stored analysis, as published "
    "(audited all the same, tests/products)",
    ("POST", "/v1/staff/analysis"): "the M&E team's cross-tabulations under the same "
    "disclosure control (audited all the same, tests/products)",
    ("GET", "/v1/staff/analysis/{analysis_id}"): "a stored staff analysis, as published "
    "(audited all the same, tests/products)",
    ("GET", "/v1/partner/maps/{measure}"): "hexagon counts under disclosure control (audited "
    "all the same, tests/products)",
    ("GET", "/v1/partner/programmes"): "the rules of the programmes the agreement names",
    ("GET", "/v1/partner/programmes/{programme_id}"): "one programme's rule",
    ("POST", "/v1/partner/updates"): "the receipt of the partner's own batch: its id and "
    "status (the matching is audited when the batch is processed, tests/ingest)",
    ("POST", "/v1/requests"): "the applicant's own form; the answer is its reference and "
    "status link",
    ("GET", "/v1/requests/{reference}"): "the applicant's own request by its token: status "
    "and dates",
    ("POST", "/v1/requests/{reference}/withdraw"): "the applicant's withdrawal (audited)",
    ("GET", "/v1/staff/requests"): "references, statuses and organization names; no "
    "contact details",
    ("GET", "/v1/staff/my-work"): "what waits on the caller: references, statuses, "
    "organization names, grievance reasons and due dates; no CNIC, phone, contact or household",
    ("GET", "/v1/staff/requests/{request_id}/quote"): "the price (audited all the same)",
    ("POST", "/v1/staff/requests/{request_id}/actions/{action}"): "a workflow step: the new "
    "status (at signature, the new partner's credentials); audited as a staff action",
    ("POST", "/v1/staff/agreements/{agreement_id}/spot-checks"): "an agreement's oversight; "
    "audited as a staff action",
    ("POST", "/v1/staff/agreements/{agreement_id}/resume"): "an agreement's status; audited "
    "as a staff action",
    ("POST", "/v1/staff/agreements/{agreement_id}/suspend"): "an agreement's status; audited "
    "as a staff action",
    ("POST", "/v1/staff/agreements/{agreement_id}/revoke"): "an agreement's status; audited "
    "as a staff action",
    ("GET", "/v1/staff/obligations"): "what organizations owe, and when",
    ("PUT", "/v1/staff/agreements/{agreement_id}/dci"): "an agreement's DCI callback base "
    "URL and public key (audited as a staff action, tests/dci)",
    ("GET", "/v1/staff/agreements/{agreement_id}/dci"): "an agreement's DCI callback base "
    "URL and public key",
    ("GET", "/v1/staff/dci/deliveries"): "callbacks' URLs, states, attempts and errors, never "
    "their payloads (audited as a staff action, tests/dci)",
    ("POST", "/v1/staff/dci/deliveries/{callback_id}/retry"): "a dead callback made due "
    "again (audited as a staff action)",
    ("POST", "/v1/staff/obligations/{obligation_id}/met"): "an obligation met; audited as a "
    "staff action",
    ("GET", "/v1/staff/reports/{name}"): "counts per organization, category, kind and reason "
    "(audited all the same, tests/monitoring)",
    ("GET", "/v1/staff/programmes"): "programmes and their rules",
    ("POST", "/v1/staff/programmes"): "a new programme (audited as a staff action)",
    ("GET", "/v1/staff/programmes/{programme_id}"): "a programme, its rule versions, the "
    "agreements naming it",
    ("POST", "/v1/staff/programmes/{programme_id}/versions"): "a new rule version (audited)",
    ("POST", "/v1/staff/programmes/{programme_id}/close"): "a programme's status (audited)",
    ("POST", "/v1/staff/programmes/{programme_id}/reopen"): "a programme's status (audited)",
    ("PUT", "/v1/staff/programmes/{programme_id}/agreements/{agreement_id}"): "naming a "
    "programme in an agreement (audited)",
    ("DELETE", "/v1/staff/programmes/{programme_id}/agreements/{agreement_id}"): "un-naming "
    "it (audited)",
    ("POST", "/v1/staff/simulations"): "a queued simulation's id (audited as a staff action)",
    ("GET", "/v1/staff/simulations/{simulation_id}"): "counts and costs by province, district "
    "and band",
    ("POST", "/v1/public/grievances"): "a filing: its reference and status link, the same "
    "whether or not the CNIC is registered (audited, actor public)",
    ("GET", "/static/{path}"): "the website's stylesheet, scripts and fonts",
    ("GET", "/"): "the website's home page",
    ("GET", "/apply"): "the request form page",
    ("POST", "/apply"): "the applicant's own form, sent",
    ("GET", "/apply/sent/{reference}"): "the applicant's confirmation page",
    ("GET", "/apply/status/{reference}"): "the applicant's own request by its token",
    ("POST", "/apply/status/{reference}/withdraw"): "the applicant's withdrawal (audited)",
    ("GET", "/check"): "the look-up form",
    ("GET", "/statistics"): "public counts under disclosure control",
    ("GET", "/map"): "the public map page",
    ("GET", "/grievance"): "the grievance form",
    ("POST", "/grievance"): "a filing through the same service as the API's (audited, actor "
    "public): a redirect to its confirmation, the same whether or not the CNIC is registered",
    ("GET", "/grievance/sent/{reference}"): "the filer's confirmation: reference and status link",
    # The staff console: staff accounts, not the registry's people; every sign-in, failure,
    # enrolment, step-up, sign-out and administrator's change is audited (tests/staff).
    ("GET", "/staff/static/{path}"): "the console's script and stylesheet",
    ("GET", "/staff/sign-in"): "the sign-in page",
    ("GET", "/staff/enrol"): "the enrolment page (the link's token stays in the fragment)",
    ("GET", "/staff/step-up"): "the step-up page of the signed-in member",
    ("GET", "/staff/"): "My work: the member's queues (references, states, organization "
    "names; no person, as GET /v1/staff/my-work)",
    ("GET", "/staff/requests"): "references, states and organization names",
    ("GET", "/staff/requests/{request_id}"): "the request with its contacts: the staff API's "
    "staff_view, which writes the audit row as the member (tests/staff/test_console_requests)",
    ("POST", "/staff/requests/{request_id}/actions/{action}"): "a workflow step (audited as a "
    "staff action); the page after it is the audited staff_view",
    ("GET", "/staff/agreements/{agreement_id}"): "an agreement's scope, clients, call counts "
    "and spot checks; the organization's name and type only",
    ("POST", "/staff/agreements/{agreement_id}/{action}"): "a spot check, or an agreement "
    "suspended, revoked or resumed (audited)",
    ("POST", "/staff/sign-in/options"): "WebAuthn options: a challenge",
    ("POST", "/staff/sign-in/verify"): "a session for a verified passkey (audited)",
    ("POST", "/staff/enrol/options"): "WebAuthn options for the link's member (audited when "
    "answered)",
    ("POST", "/staff/enrol/verify"): "a new passkey registered (audited)",
    ("POST", "/staff/step-up/options"): "WebAuthn options: the member's own passkeys",
    ("POST", "/staff/step-up/verify"): "the session verified again (audited)",
    ("POST", "/staff/sign-out"): "the session ended (audited)",
    ("GET", "/staff/admin/staff"): "staff members, their roles and state (administrators)",
    ("GET", "/staff/admin/staff/new"): "the form to add a staff member",
    ("POST", "/staff/admin/staff/new"): "a new staff member's link and credentials (audited)",
    ("GET", "/staff/admin/staff/{staff_id}"): "one staff member's account (administrators)",
    ("POST", "/staff/admin/staff/{staff_id}/roles"): "a member's roles (audited)",
    ("POST", "/staff/admin/staff/{staff_id}/{switch}"): "a member disabled or enabled, or "
    "their API credentials turned off or on (audited)",
    ("POST", "/staff/admin/staff/{staff_id}/enrol-link"): "a fresh enrolment link (audited)",
    ("POST", "/staff/admin/staff/{staff_id}/passkeys/{passkey_id}/remove"): "a passkey "
    "removed (audited)",
    # The console's grievance pages call the staff API's own services with the member as
    # the caller, so they write the API's audit rows (tests/staff/test_console_grievances.py).
    ("GET", "/staff/grievances"): "grievance references and statuses (audited as the API's list)",
    ("GET", "/staff/grievances/{grievance_id}"): "a grievance and its household's score "
    "explanation (both audited as the API's reads)",
    ("POST", "/staff/grievances/{grievance_id}/actions/{grievance_action}"): "a workflow step "
    "(audited as the API's action)",
    ("POST", "/staff/grievances/{grievance_id}/resurvey"): "a re-survey batch queued (audited "
    "as the API's)",
    ("GET", "/staff/programmes"): "programmes and their rules",
    ("GET", "/staff/programmes/new"): "the form of a new programme",
    ("POST", "/staff/programmes/new"): "a new programme (audited as a staff action)",
    ("GET", "/staff/programmes/{programme_id}"): "a programme and its rule versions",
    ("GET", "/staff/programmes/{programme_id}/versions/new"): "the rule editor",
    ("POST", "/staff/programmes/{programme_id}/versions/new"): "a rule version, or its "
    "preview's counts by province (both audited)",
    ("POST", "/staff/programmes/{programme_id}/close"): "a programme's status (audited)",
    ("POST", "/staff/programmes/{programme_id}/reopen"): "a programme's status (audited)",
    ("GET", "/staff/simulations"): "the simulation form and recent simulations",
    ("POST", "/staff/simulations"): "a queued simulation (audited as a staff action)",
    ("GET", "/staff/simulations/{simulation_id}"): "counts and costs by province and band",
    # The console's reports, audit log and analyses (tests/staff/test_console_*): each read
    # is audited through the same service as the API's, or is itself an audit action.
    ("GET", "/staff/reports"): "the list of reports",
    ("GET", "/staff/reports/{name}"): "counts per organization, category, kind and reason "
    "(audited all the same, as the API's read of the report)",
    ("GET", "/staff/reports/{name}/csv"): "the same counts as CSV (audited all the same)",
    ("GET", "/staff/audit"): "audit entries of a partner, agreement, household or staff "
    "member: ids, endpoints and counts, no registry data (each search audited)",
    ("POST", "/staff/audit/verify"): "whether the audit chain is intact (audited)",
    ("GET", "/staff/analyses"): "the form to ask an analysis",
    ("POST", "/staff/analyses"): "the M&E team's cross-tabulation under disclosure control "
    "(audited all the same, tests/staff/test_console_analyses.py)",
    ("GET", "/staff/analyses/{analysis_id}"): "a stored staff analysis as published "
    "(audited all the same)",
}

# Reviewed: these answer the public with a person's own data by design and are not audited
# per call; they are counted per client IP (NSER_PUBLIC_LOOKUP_LIMITS, proof of work on
# /check) instead. Protocol: anyone may check a CNIC's poverty level.
PUBLIC_BY_DESIGN: dict[Route, str] = {
    ("GET", "/v1/public/scores/{cnic}"): "a CNIC's poverty band and score, CNIC masked",
    ("POST", "/check"): "the same look-up as a page",
    ("GET", "/v1/public/grievances/{grievance_reference}"): "the filer's own grievance by its "
    "token: status, dates, outcome, CNIC masked",
    ("GET", "/grievance/status/{reference}"): "the same, as a page",
}


@dataclass
class World:
    """Everything the calls need: a partner and an officer, and things to read."""

    c: httpx.AsyncClient
    db: asyncpg.Connection
    partner: dict[str, str]
    partner_auth: dict[str, str]
    officer: dict[str, str]
    officer_auth: dict[str, str]
    household: int
    cnic: str
    programme: str
    request_ref: str
    grievance_ref: str
    batch: str


Call = Callable[[World, dict[str, str]], Awaitable[httpx.Response]]


def _partner(
    method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> tuple[str, Call]:
    async def call(w: World, extra: dict[str, str]) -> httpx.Response:
        sent = {**w.partner_auth, **(headers or {}), **extra}
        return await w.c.request(method, path.format(w=w), headers=sent, **kwargs)

    return "partner", call


def _staff(method: str, path: str, **kwargs: Any) -> tuple[str, Call]:
    async def call(w: World, extra: dict[str, str]) -> httpx.Response:
        sent = {**w.officer_auth, **extra}
        return await w.c.request(method, path.format(w=w), headers=sent, **kwargs)

    return "staff", call


NDJSON = {"Accept": "application/x-ndjson"}
# Every route that returns personal data, and a call that makes it answer.
PERSONAL_DATA: dict[Route, tuple[str, Call]] = {
    ("GET", "/v1/partner/scores/{cnic}"): _partner("GET", "/v1/partner/scores/{w.cnic}"),
    ("GET", "/v1/partner/beneficiaries"): _partner("GET", "/v1/partner/beneficiaries?limit=3"),
    ("POST", "/dci/registry/sync/search"): _partner(
        "POST",
        "/dci/registry/sync/search",
        json={
            "header": {
                "message_id": "audit-walk",
                "message_ts": "2026-12-11T09:00:00Z",
                "action": "search",
                "sender_id": "audit-walk",
                "total_count": 1,
            },
            "message": {
                "transaction_id": "audit-walk",
                "search_request": [
                    {
                        "reference_id": "r-1",
                        "timestamp": "2026-12-11T09:00:00Z",
                        "search_criteria": {
                            "query_type": "predicate",
                            "query": [
                                {
                                    "expression1": {
                                        "attribute_name": "poverty_score",
                                        "operator": "le",
                                        "attribute_value": 100,
                                    }
                                }
                            ],
                            "pagination": {"page_size": 3},
                        },
                    }
                ],
            },
        },
    ),
    ("GET", "/v1/partner/programmes/{programme_id}/eligibility/{cnic}"): _partner(
        "GET", "/v1/partner/programmes/{w.programme}/eligibility/{w.cnic}"
    ),
    ("GET", "/v1/partner/programmes/{programme_id}/beneficiaries"): _partner(
        "GET", "/v1/partner/programmes/{w.programme}/beneficiaries", headers=NDJSON
    ),
    ("GET", "/v1/partner/extracts/anonymized"): _partner(
        "GET", "/v1/partner/extracts/anonymized", headers=NDJSON
    ),
    ("GET", "/v1/partner/geo"): _partner("GET", "/v1/partner/geo", headers=NDJSON),
    # Outcomes name the households and members each record matched (within the scope).
    ("GET", "/v1/partner/updates/{batch_id}"): _partner("GET", "/v1/partner/updates/{w.batch}"),
    ("GET", "/v1/partner/households/{household_id}/score-explanation"): _partner(
        "GET", "/v1/partner/households/{w.household}/score-explanation"
    ),
    ("GET", "/v1/households/{household_id}/history"): _staff(
        "GET", "/v1/households/{w.household}/history"
    ),
    ("GET", "/v1/staff/households/{household_id}/score-explanation"): _staff(
        "GET", "/v1/staff/households/{w.household}/score-explanation"
    ),
    ("GET", "/v1/staff/requests/{request_id}"): _staff("GET", "/v1/staff/requests/{w.request_ref}"),
    ("GET", "/v1/staff/grievances"): _staff("GET", "/v1/staff/grievances"),
    ("GET", "/v1/staff/grievances/{grievance_id}"): _staff(
        "GET", "/v1/staff/grievances/{w.grievance_ref}"
    ),
    ("POST", "/v1/staff/grievances/{grievance_id}/actions/{grievance_action}"): _staff(
        "POST", "/v1/staff/grievances/{w.grievance_ref}/actions/triage", json={}
    ),
    ("POST", "/v1/staff/grievances/{grievance_id}/resurvey"): _staff(
        "POST", "/v1/staff/grievances/{w.grievance_ref}/resurvey", json={"indicators": {}}
    ),
}
# Steps a call needs first (the re-survey is ordered after the triage).
BEFORE: dict[Route, Call] = {
    ("POST", "/v1/staff/grievances/{grievance_id}/resurvey"): _staff(
        "POST", "/v1/staff/grievances/{w.grievance_ref}/actions/order_resurvey", json={}
    )[1],
}


def app_routes() -> set[Route]:
    """Every (method, path) the application answers, HEAD aside."""
    app = create_app(make_settings("postgresql://unused@127.0.0.1:1/unused"))
    out: set[Route] = set()
    for context in iter_route_contexts(app.routes):
        methods = set(getattr(context, "methods", None) or {"GET"}) - {"HEAD"}
        out |= {(method, context.path_format) for method in methods}
    return out


def test_every_route_is_classified_once() -> None:
    classified = [*PERSONAL_DATA, *NO_PERSONAL_DATA, *PUBLIC_BY_DESIGN]
    assert len(classified) == len(set(classified)), "a route is in two lists"
    routes = app_routes()
    unclassified = sorted(routes - set(classified))
    assert not unclassified, (
        f"classify each new route: {unclassified} (PERSONAL_DATA with a call, or a reviewed "
        "reason in NO_PERSONAL_DATA)"
    )
    assert not set(classified) - routes, "a classified route no longer exists"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_database(households=300, seed=11) as u:
        yield u


@pytest.fixture(scope="module")
async def world(url: str) -> AsyncIterator[World]:
    settings = make_settings(url, token_limits="10000/minute", in_process_workers=0)
    async for c in open_client(settings):
        db = await asyncpg.connect(url)
        try:
            partner = create_partner(
                url,
                name="Audit walk",
                categories="iii,iv,v,vi,viii",
                dimensions="education,room_count",
                update_kinds="phone_change",
            )
            officer = create_staff(url, "Audit walk officer", "officer")
            officer_auth = bearer(
                await get_token(c, officer["client_id"], officer["client_secret"])
            )
            member = await db.fetchrow(
                """SELECT m.cnic, m.household_id FROM members m JOIN households h
                     ON h.id = m.household_id
                    WHERE m.cnic IS NOT NULL AND m.deceased_on IS NULL
                      AND h.pmt_score IS NOT NULL ORDER BY m.id LIMIT 1"""
            )
            programme = {
                "code": "audit-walk",
                "name": "Audit walk transfer",
                "organization_id": partner["organization_id"],
                "rule": {"cut_off": 100},
            }
            made = await c.post("/v1/staff/programmes", json=programme, headers=officer_auth)
            assert made.status_code == 201, made.text
            named = await c.put(
                f"/v1/staff/programmes/audit-walk/agreements/{partner['agreement_id']}",
                headers=officer_auth,
            )
            assert named.status_code == 204, named.text
            submitted = await c.post("/v1/requests", json=form())
            assert submitted.status_code == 201, submitted.text
            filed = await c.post(
                "/v1/public/grievances",
                json={
                    "cnic": member["cnic"],
                    "reason": "wrong_assets",
                    "contact_phone": "03001234567",
                },
            )
            assert filed.status_code == 201, filed.text
            partner_auth = bearer(
                await get_token(c, partner["client_id"], partner["client_secret"])
            )
            batch = await c.post(
                "/v1/partner/updates",
                json={
                    "dry_run": True,
                    "records": [
                        {
                            "ref": "walk",
                            "kind": "phone_change",
                            "household_id": member["household_id"],
                            "phone": "03001234567",
                        }
                    ],
                },
                headers={**partner_auth, "Idempotency-Key": uuid.uuid4().hex},
            )
            assert batch.status_code == 202, batch.text
            yield World(
                c=c,
                db=db,
                partner=partner,
                partner_auth=partner_auth,
                officer=officer,
                officer_auth=officer_auth,
                household=member["household_id"],
                cnic=member["cnic"],
                programme="audit-walk",
                request_ref=submitted.json()["reference"],
                grievance_ref=filed.json()["reference"],
                batch=batch.json()["batch_id"],
            )
        finally:
            await db.close()


@pytest.mark.parametrize("route", sorted(PERSONAL_DATA), ids=" ".join)
async def test_each_read_of_personal_data_writes_its_audit_row(world: World, route: Route) -> None:
    if route in BEFORE:
        assert (await BEFORE[route](world, {})).status_code == 200
    kind, call = PERSONAL_DATA[route]
    request_id = f"audit-walk-{uuid.uuid4().hex}"
    response = await call(world, {"X-Request-ID": request_id})
    assert 200 <= response.status_code < 300, (route, response.status_code, response.text)
    assert response.content, "the call answered nothing to audit"
    client_id = (world.partner if kind == "partner" else world.officer)["client_id"]
    rows = await world.db.fetch(
        "SELECT actor_type, client_id FROM audit_log WHERE request_id = $1", request_id
    )
    assert [(r["actor_type"], r["client_id"]) for r in rows] == [(kind, client_id)], (
        f"{' '.join(route)} answered without an audit row for the call"
    )
