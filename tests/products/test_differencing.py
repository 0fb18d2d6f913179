"""Differencing: two tables whose populations differ by one household must not give it away.

The attack: within a district, two ``score_max`` values bracket one household's PMT score,
so the same table asked with each differs by exactly that household; subtracting the
published cells would give its poverty band (and, through a mean, its score). The second
query is refused (409) whichever product asks it, and whenever it is asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import make_settings, open_client
from partner_helpers import bearer, create_partner, get_token

SUMMARIES = "/v1/partner/summaries"
MAPS = "/v1/partner/maps/households"
ANALYSIS = "/v1/partner/analysis"
THRESHOLD = 10


@pytest.fixture(scope="module")
async def pclient(seeded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        seeded_url, token_limits="10000/minute", partner_default_limits="100000/minute"
    )
    async for c in open_client(settings):
        yield c


@pytest.fixture(scope="module")
async def target(db: asyncpg.Connection) -> asyncpg.Record:
    """A household of the biggest district whose score no other household there has, and
    the next lower score in the district: ``score_max`` just above each (``score``,
    ``lower``) selects the same households but that one."""
    row = await db.fetchrow(
        """WITH d AS (SELECT district_code FROM households GROUP BY 1
                      ORDER BY count(*) DESC LIMIT 1),
                s AS (SELECT h.id, h.pmt_score, h.poverty_band, h.district_code,
                             count(*) OVER (PARTITION BY h.pmt_score) AS same,
                             lag(h.pmt_score) OVER (ORDER BY h.pmt_score) AS lower
                        FROM households h JOIN d USING (district_code)
                       WHERE h.pmt_score IS NOT NULL)
           SELECT district_code, id, poverty_band,
                  -- Half-way to the next score: a float that is no score's binary neighbour.
                  (pmt_score + 0.005)::float8 AS score, (lower + 0.005)::float8 AS lower
             FROM s WHERE same = 1 AND lower IS NOT NULL
            ORDER BY abs(pmt_score - 30), id LIMIT 1"""
    )
    assert row is not None
    below = await db.fetchval(
        "SELECT count(*) FROM households WHERE district_code = $1 AND pmt_score <= $2",
        row["district_code"],
        row["lower"],
    )
    upto = await db.fetchval(
        "SELECT count(*) FROM households WHERE district_code = $1 AND pmt_score <= $2",
        row["district_code"],
        row["score"],
    )
    assert upto == below + 1  # the two filters differ by exactly the one household
    assert below >= 5 * THRESHOLD
    return row


async def _partner(c: httpx.AsyncClient, url: str) -> dict[str, str]:
    p = create_partner(url, categories="i,ii,vii")
    return bearer(await get_token(c, p["client_id"], p["client_secret"]))


def _summary_params(t: asyncpg.Record, score_max: float) -> dict[str, Any]:
    return {"group_by": "poverty_band", "district": t["district_code"], "score_max": score_max}


def _analysis_body(t: asyncpg.Record, score_max: float) -> dict[str, Any]:
    return {
        "rows": ["poverty_band"],
        "measures": ["households", "members", "mean_pmt_score"],
        "filters": {"district": [t["district_code"]], "score_max": score_max},
    }


def _refused_after(r: httpx.Response, query_id: int) -> None:
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    detail = r.json()["detail"]
    assert detail.startswith(
        f"differs from your earlier query {query_id} by fewer than {THRESHOLD} households"
    ), detail
    assert "rows" not in r.json()


async def test_summaries_second_query_refused(
    pclient: httpx.AsyncClient, seeded_url: str, db: asyncpg.Connection, target: asyncpg.Record
) -> None:
    auth = await _partner(pclient, seeded_url)
    first = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["lower"]), headers=auth
    )
    assert first.status_code == 200, first.text
    answer = first.json()
    query_id = answer["query_id"]
    cell = next(c for c in answer["rows"] if c["poverty_band"] == target["poverty_band"])
    true = await db.fetchval(
        """SELECT count(*) FROM households WHERE district_code = $1 AND pmt_score <= $2
              AND poverty_band = $3""",
        target["district_code"],
        target["lower"],
        target["poverty_band"],
    )
    assert cell["households"] in (None, (2 * true + 5) // 10 * 5)

    second = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["score"]), headers=auth
    )
    _refused_after(second, query_id)
    # The same question again is answered, identically (nothing new is learnt).
    again = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["lower"]), headers=auth
    )
    assert again.status_code == 200
    assert again.json()["rows"] == answer["rows"]
    assert again.json()["margins"] == answer["margins"]
    # A population that differs by the threshold or more is answered; the one-household
    # difference stays refused after it.
    whole = await pclient.get(
        SUMMARIES,
        params={"group_by": "poverty_band", "district": target["district_code"]},
        headers=auth,
    )
    assert whole.status_code == 200, whole.text
    third = await pclient.get(
        SUMMARIES,
        params={**_summary_params(target, target["score"]), "group_by": "gender"},
        headers=auth,
    )
    _refused_after(third, again.json()["query_id"])  # nor does another grouping
    logged = await db.fetch(
        """SELECT filters->>'score_max' AS score_max FROM aggregate_queries
            WHERE agreement_id = (SELECT agreement_id FROM aggregate_queries WHERE id = $1)
            ORDER BY id""",
        query_id,
    )
    # Refused queries are neither answered nor logged.
    assert [row["score_max"] for row in logged] == [
        str(target["lower"]),
        str(target["lower"]),
        None,
    ]


async def test_analysis_second_query_refused(
    pclient: httpx.AsyncClient, seeded_url: str, target: asyncpg.Record
) -> None:
    auth = await _partner(pclient, seeded_url)
    first = await pclient.post(ANALYSIS, json=_analysis_body(target, target["lower"]), headers=auth)
    assert first.status_code == 201, first.text
    answer = first.json()
    assert any(c["households"] is not None for c in answer["cells"])
    second = await pclient.post(
        ANALYSIS, json=_analysis_body(target, target["score"]), headers=auth
    )
    _refused_after(second, answer["query_id"])
    # The first analysis is still there, unchanged.
    stored = await pclient.get(f"{ANALYSIS}/{answer['analysis_id']}", headers=auth)
    assert stored.json() == answer


async def test_across_products(
    pclient: httpx.AsyncClient, seeded_url: str, target: asyncpg.Record
) -> None:
    auth = await _partner(pclient, seeded_url)
    first = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["lower"]), headers=auth
    )
    assert first.status_code == 200
    second = await pclient.post(
        ANALYSIS, json=_analysis_body(target, target["score"]), headers=auth
    )
    _refused_after(second, first.json()["query_id"])


async def test_concurrent_queries_cannot_both_pass(
    pclient: httpx.AsyncClient, seeded_url: str, target: asyncpg.Record
) -> None:
    auth = await _partner(pclient, seeded_url)
    answers = await asyncio.gather(
        pclient.get(SUMMARIES, params=_summary_params(target, target["lower"]), headers=auth),
        pclient.get(SUMMARIES, params=_summary_params(target, target["score"]), headers=auth),
    )
    assert sorted(r.status_code for r in answers) == [200, 409]


async def test_each_agreement_has_its_own_log(
    pclient: httpx.AsyncClient, seeded_url: str, target: asyncpg.Record
) -> None:
    one, two = await _partner(pclient, seeded_url), await _partner(pclient, seeded_url)
    a = await pclient.get(SUMMARIES, params=_summary_params(target, target["lower"]), headers=one)
    b = await pclient.get(SUMMARIES, params=_summary_params(target, target["score"]), headers=two)
    assert a.status_code == b.status_code == 200


async def test_smaller_population_second_is_refused_too(
    pclient: httpx.AsyncClient, seeded_url: str, target: asyncpg.Record
) -> None:
    auth = await _partner(pclient, seeded_url)
    first = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["score"]), headers=auth
    )
    assert first.status_code == 200, first.text
    second = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["lower"]), headers=auth
    )
    _refused_after(second, first.json()["query_id"])


async def test_maps_are_under_the_same_control(
    pclient: httpx.AsyncClient, seeded_url: str, target: asyncpg.Record
) -> None:
    """Two hexagon maps bracketing one household's score would subtract like two tables."""
    auth = await _partner(pclient, seeded_url)
    params = {"district": target["district_code"], "resolution": 7}
    first = await pclient.get(MAPS, params={**params, "score_max": target["lower"]}, headers=auth)
    assert first.status_code == 200, first.text
    second = await pclient.get(MAPS, params={**params, "score_max": target["score"]}, headers=auth)
    assert second.status_code == 409, second.text
    assert "differs from your earlier query" in second.json()["detail"]
    summary = await pclient.get(
        SUMMARIES, params=_summary_params(target, target["score"]), headers=auth
    )
    assert summary.status_code == 409  # nor through another product
