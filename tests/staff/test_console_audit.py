"""The console's audit page over HTTP: only M&E and staff administrators; a search names
someone and a range of at most 31 days, runs on an index, pages with a keyset cursor and is
itself audited; the verification shows the last checkpoint and verifies the new rows.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape

import asyncpg
from conftest import run_cli
from staff_helpers import Browser, browser, csrf, staff_db
from test_console_reports import tables_of
from test_staff_admin import signed_in

from app.services.audit import search, trail

__all__ = ["browser", "staff_db"]  # the fixtures

NEXT = re.compile(r'href="(/staff/audit\?[^"]*after=[^"]*)" rel="next"')


@dataclass(frozen=True)
class Partner:
    """A caller as the audit trail records a partner's access."""

    client_id: str
    agreement_id: uuid.UUID
    organization_id: uuid.UUID
    kind: str = "partner"


async def test_who_may_search_the_audit_log(database_url: str, browser: Browser) -> None:
    for role in ("officer", "committee", "secretary"):
        _, client = await signed_in(database_url, browser, role)
        refused = await client.get("/staff/audit")
        assert refused.status_code == 403, role
        assert "The audit log is searched by the monitoring and evaluation team" in refused.text
        token = await csrf(client, "/staff/")
        posted = await client.post("/staff/audit/verify", data={"csrf_token": token})
        assert posted.status_code == 403
        assert 'href="/staff/audit' not in (await client.get("/staff/")).text
    for role in ("me", "admin"):
        _, client = await signed_in(database_url, browser, role)
        shown = await client.get("/staff/audit?lang=ur")
        assert shown.status_code == 200, role
        assert 'aria-current="page"' in shown.text


async def test_a_search_is_bounded_paged_indexed_and_audited(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    partner = Partner("partner-audit-test", uuid.uuid4(), uuid.uuid4())
    household = uuid.uuid4()
    for i in range(62):
        await trail.append(
            staff_db,
            trail.AuditRecord.of(
                partner,
                endpoint="GET /v1/partner/scores/{cnic}",
                filters={"household_id": str(household), "n": str(i)},
                dimensions=[],
                households=1,
                members=0,
            ),
        )
    me, client = await signed_in(database_url, browser, "me")

    # Nothing named: the form and the verification only, no search, nothing audited.
    before = await staff_db.fetchval(
        "SELECT count(*) FROM audit_log WHERE client_id = $1", me.staff_id
    )
    empty = await client.get("/staff/audit")
    assert empty.status_code == 200
    assert 'id="audit-results"' not in empty.text
    after = await staff_db.fetchval(
        "SELECT count(*) FROM audit_log WHERE client_id = $1", me.staff_id
    )
    assert after == before

    # A range longer than 31 days, or the wrong way round, is refused.
    today = datetime.now(UTC).date()
    too_long = await client.get(
        "/staff/audit",
        params={
            "agreement": str(partner.agreement_id),
            "from": str(today - timedelta(days=31)),
            "to": str(today),
        },
    )
    assert too_long.status_code == 422
    assert "Search at most 31 days at a time." in too_long.text
    wrong = await client.get("/staff/audit", params={"agreement": "not-an-id"})
    assert wrong.status_code == 422
    assert (await client.get("/staff/audit", params={"staff": "x"})).status_code == 422

    # Each key pages 50 at a time, newest first, then the rest from the cursor.
    for key, value in (
        ("agreement", partner.agreement_id),
        ("partner", partner.organization_id),
        ("household", household),
    ):
        first = await client.get("/staff/audit", params={key: str(value)})
        assert first.status_code == 200, first.text[:300]
        rows = tables_of(first.text)["audit-results"][1:]
        assert len(rows) == search.PAGE
        assert "n=61" in rows[0][3]  # newest first
        link = NEXT.search(first.text)
        assert link, key
        second = await client.get(unescape(link.group(1)))
        rest = tables_of(second.text)["audit-results"][1:]
        assert len(rest) == 12
        assert "n=0" in rest[-1][3]
        assert not NEXT.search(second.text)
        assert "Newest entries" in second.text

    # The searches were audited: who searched, for whom, over which days, which page.
    audited = await staff_db.fetch(
        "SELECT filters FROM audit_log WHERE client_id = $1 AND endpoint = $2 ORDER BY id",
        me.staff_id,
        search.ENDPOINT,
    )
    assert len(audited) == 6
    assert f'"searched_agreement_id": "{partner.agreement_id}"' in audited[0]["filters"]
    assert '"after"' in audited[1]["filters"]
    assert f'"from": "{today - timedelta(days=6)}"' in audited[0]["filters"]

    # A staff member's own actions are found by their staff id (here: those searches).
    mine = await client.get("/staff/audit", params={"staff": me.staff_id})
    assert "GET /staff/audit" in mine.text

    # Every key's page is read from its index (never the whole log).
    async with staff_db.transaction():
        await staff_db.execute("SET LOCAL enable_seqscan = off")
        for query, index in (
            (
                search.Query(today, today, agreement_id=partner.agreement_id),
                "ix_audit_log_agreement_at",
            ),
            (
                search.Query(today, today, organization_id=partner.organization_id),
                "ix_audit_log_organization_at",
            ),
            (search.Query(today, today, household_id=household), "ix_audit_log_household_at"),
            (search.Query(today, today, staff_id=me.staff_id), "ix_audit_log_client_at"),
        ):
            sql, args = search.sql_of(query, search.Cursor(datetime.now(UTC), 2**40))
            plan = "\n".join(r[0] for r in await staff_db.fetch(f"EXPLAIN {sql}", *args))
            assert index in plan, plan
            assert "Seq Scan" not in plan


async def test_the_verification(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    admin, client = await signed_in(database_url, browser, "admin")
    if not await staff_db.fetchval("SELECT count(*) FROM audit_checkpoints"):
        never = await client.get("/staff/audit")
        assert "The audit log has never been verified." in never.text
        token = await csrf(client, "/staff/audit")
        refused = await client.post("/staff/audit/verify", data={"csrf_token": token})
        assert refused.status_code == 409
        assert "Run `nser audit verify` on the server first" in refused.text
    run_cli(["audit", "verify"], database_url)
    shown = await client.get("/staff/audit")
    assert "Verifies with the audit key" in shown.text
    token = await csrf(client, "/staff/audit")
    verified = await client.post("/staff/audit/verify", data={"csrf_token": token})
    assert verified.status_code == 200, verified.text[:500]
    assert "The audit log is intact" in verified.text
    assert (
        await staff_db.fetchval(
            "SELECT count(*) FROM audit_log WHERE client_id = $1 AND endpoint = $2",
            admin.staff_id,
            search.VERIFY_ENDPOINT,
        )
        == 1
    )
    # Without the form's CSRF field nothing runs.
    assert (await client.post("/staff/audit/verify", data={"x": "1"})).status_code == 403
