"""The M&E team's analyses in the console over HTTP: only role ``me``; a question asked on
the form is the API's (same table, same audit), its withheld cells marked; a question the
differencing control refuses is a 409 page that says why; an invalid one, the form again.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from partner_helpers import bearer, get_token
from staff_helpers import Browser, browser, csrf, staff_db
from test_console_reports import tables_of
from test_staff_admin import signed_in

from app.services.products import analysis

__all__ = ["browser", "staff_db"]  # the fixtures


async def ask(client: Any, **fields: str | list[str]) -> Any:
    token = await csrf(client, "/staff/analyses")
    return await client.post("/staff/analyses", data={"csrf_token": token, **fields})


async def test_only_the_me_team_asks(seeded_url: str, browser: Browser) -> None:
    for role in ("officer", "committee", "secretary", "admin"):
        _, client = await signed_in(seeded_url, browser, role)
        refused = await client.get("/staff/analyses")
        assert refused.status_code == 403, role
        assert "Analyses are asked by the monitoring and evaluation team" in refused.text
        token = await csrf(client, "/staff/")
        posted = await client.post(
            "/staff/analyses", data={"csrf_token": token, "rows": "province"}
        )
        assert posted.status_code == 403
        assert 'href="/staff/analyses' not in (await client.get("/staff/")).text


async def test_an_analysis_is_asked_and_shown_with_its_withheld_cells(
    seeded_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    member, client = await signed_in(seeded_url, browser, "me")
    form = await client.get("/staff/analyses?lang=ur")
    assert form.status_code == 200
    assert 'value="union_council"' in form.text
    assert 'value="education"' not in form.text  # a locked dimension not granted

    asked = await ask(client, rows="tehsil", columns="gender", measures=["households", "members"])
    assert asked.status_code == 303, asked.text[:500]
    where = asked.headers["location"]
    assert where.startswith("/staff/analyses/")
    shown = await client.get(where.split("?")[0], params={"lang": "en"})
    assert shown.status_code == 200
    # The same stored analysis through the API, as published.
    api = browser()
    token = await get_token(api, member.staff_id, member.client_secret)
    analysis_id = where.split("/")[-1].split("?")[0]
    published = (await api.get(f"/v1/staff/analysis/{analysis_id}", headers=bearer(token))).json()
    withheld = sum(
        1
        for cell in [*published["cells"], *published["margins"]]
        for measure in ("households", "members")
        if cell[measure] is None
    )
    assert published["disclosure"]["suppressed_cells"] > 0
    assert shown.text.count('data-withheld="true"') == withheld
    rows = tables_of(shown.text)["analysis-table"][1:]
    assert len(rows) == len(published["cells"]) + len(published["margins"])
    first = published["cells"][0]
    assert rows[0][:2] == [first["tehsil"], first["gender"]]
    total = published["margins"][-1]
    assert rows[-1][0] == "All"
    assert rows[-1][2].replace(",", "") == str(total["households"])

    endpoints = [
        r["endpoint"]
        for r in await staff_db.fetch(
            "SELECT endpoint FROM audit_log WHERE client_id = $1 ORDER BY id", member.staff_id
        )
    ]
    assert analysis.STAFF_ENDPOINT in endpoints
    assert endpoints.count(analysis.STAFF_READ_ENDPOINT) == 2  # the page, then the API


async def test_refusals_are_pages_that_say_why(
    seeded_url: str, browser: Browser, db: asyncpg.Connection
) -> None:
    _, client = await signed_in(seeded_url, browser, "me")
    invalid = await ask(client, measures="households")  # no rows
    assert invalid.status_code == 422
    assert "The analysis could not be asked:" in invalid.text
    assert 'value="households" checked' in invalid.text  # the form keeps what was chosen
    cut = await ask(client, rows="province", measures="share_below")
    assert cut.status_code == 422
    assert "cut_off" in cut.text
    forged = await ask(client, rows="education")
    assert forged.status_code == 403
    assert "not granted" in forged.text

    # Two populations a few households apart: the second question is refused (409).
    row = await db.fetchrow(
        """WITH d AS (SELECT district_code FROM households GROUP BY 1
                      ORDER BY count(*) DESC LIMIT 1 OFFSET 2),
                s AS (SELECT DISTINCT h.pmt_score FROM households h JOIN d USING (district_code)
                       WHERE h.pmt_score IS NOT NULL)
           SELECT (SELECT district_code FROM d) AS district,
                  (min(pmt_score) FILTER (WHERE pmt_score > 30) + 0.005)::float8 AS low
             FROM s"""
    )
    assert row is not None
    district, low = row["district"], row["low"]
    higher = await db.fetchval(
        """SELECT max(pmt_score)::float8 FROM (SELECT pmt_score FROM households
            WHERE district_code = $1 AND pmt_score > $2 ORDER BY pmt_score LIMIT 2) s""",
        district,
        low,
    )
    first = await ask(client, rows="poverty_band", district=district, score_max=str(low))
    assert first.status_code == 303, first.text[:800]
    near = await ask(client, rows="poverty_band", district=district, score_max=str(higher + 0.005))
    assert near.status_code == 409, near.text[:800]
    assert "This analysis was refused" in near.text
    assert "earlier query" in near.text
