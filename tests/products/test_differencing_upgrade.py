"""Upgrading keeps the differencing control's memory: the queries the previous release
logged (normalized filters only) get their populations' signatures during `nser db
upgrade`, so a query a household away from one of them is still refused afterwards."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
from conftest import create_database, drop_database, make_settings, open_client, run_cli
from partner_helpers import bearer, create_partner, get_token

THRESHOLD = 10


async def test_queries_logged_before_the_upgrade_still_refuse() -> None:
    url = await asyncio.to_thread(create_database)
    try:
        run_cli(["seed", "--households", "800", "--seed", "5"], url)
        # The partner is made by this release (its audit row needs this release's schema),
        # then the database goes back to the release before signatures.
        partner = create_partner(url, categories="i")
        run_cli(["db", "downgrade", "--revision", "0016"], url)
        conn = await asyncpg.connect(url)
        try:
            district = await conn.fetchval(
                "SELECT district_code FROM households GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
            )
            scores = [
                float(row["pmt_score"])
                for row in await conn.fetch(
                    """SELECT pmt_score FROM households WHERE district_code = $1
                         AND pmt_score IS NOT NULL ORDER BY 1""",
                    district,
                )
            ]
            # A household alone at its score, with at least 2 × THRESHOLD below it.
            k = next(
                i
                for i in range(2 * THRESHOLD, len(scores) - 1)
                if scores[i - 1] < scores[i] < scores[i + 1]
            )
            lower = (scores[k - 1] + scores[k]) / 2
            upper = (scores[k] + scores[k + 1]) / 2
            agreement = await conn.fetchval(
                "SELECT agreement_id FROM api_clients WHERE client_id = $1", partner["client_id"]
            )
            # What the previous release logged for a summary it answered.
            logged = await conn.fetchval(
                """INSERT INTO aggregate_queries (agreement_id, client_id, product, filters,
                                                  dims, households)
                   VALUES ($1, $2, 'summaries', $3::jsonb, '{poverty_band}', $4) RETURNING id""",
                agreement,
                partner["client_id"],
                orjson.dumps({"district": [district], "score_max": lower}).decode(),
                k,
            )
        finally:
            await conn.close()

        run_cli(["db", "upgrade"], url)

        async for c in open_client(make_settings(url)):
            auth = bearer(await get_token(c, partner["client_id"], partner["client_secret"]))
            params = {"group_by": "poverty_band", "district": district}
            near = await c.get(
                "/v1/partner/summaries", params={**params, "score_max": upper}, headers=auth
            )
            assert near.status_code == 409, near.text
            assert near.json()["detail"].startswith(
                f"differs from your earlier query {logged} by fewer than {THRESHOLD} households"
            )
            same = await c.get(
                "/v1/partner/summaries", params={**params, "score_max": lower}, headers=auth
            )
            assert same.status_code == 200, same.text
    finally:
        await asyncio.to_thread(drop_database, url)
